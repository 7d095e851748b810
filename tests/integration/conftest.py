"""Notification receivers for the delivery tests: real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.notify_receivers import JsonReceiver, SmtpReceiver


@pytest.fixture
def hook() -> Iterator[JsonReceiver]:
    """A JSON webhook (Apprise ``json://``) that records what it accepts."""
    receiver = JsonReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def other() -> Iterator[JsonReceiver]:
    """A second webhook, for "one destination never holds up another"."""
    receiver = JsonReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A real SMTP server (aiosmtpd) for ``mailto://``."""
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., JsonReceiver]]:
    """Make more webhooks: ``receivers("trickle")`` is one answering every POST that way."""
    made: list[JsonReceiver] = []

    def make(action: str = "ok") -> JsonReceiver:
        receiver = JsonReceiver().start()
        receiver.behaviour = lambda n, payload: action
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()
