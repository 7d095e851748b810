"""Per-host politeness across every worker: at most WATCHKEEPER_HOST_CONCURRENCY requests at
once and WATCHKEEPER_HOST_DELAY between request starts, per host (see ``lua/host_acquire.lua``).

The host slots are keyed by the URL's host name and port only — never its user info — so a
credential in a source URL never becomes part of a key name.

Within a poll (``poll_slots``) slots cost no round trip of their own: the poll's claim takes
the first one in its script (``hold_claimed``), a later request to the same host releases the
poll's previous slot in the call that takes the next, and the poll's write releases what it
still holds (``queue_release_slots``). A slot is therefore held a few milliseconds longer —
while the poll parses and writes — which only ever makes a host see fewer requests at once.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.polling.errors import HostBusy
from workers.store.scripts import Script

_ACQUIRE = Script("workers.polling", "host_acquire", include=("host_slot",))


@dataclass
class HeldSlot:
    """A slot this poll holds: ``fresh`` when taken ahead by the claim and not yet used."""

    token: str
    fresh: bool


_HELD: ContextVar[dict[str, HeldSlot] | None] = ContextVar("wk_held_host_slots", default=None)


@contextlib.contextmanager
def poll_slots() -> Iterator[dict[str, HeldSlot]]:
    """The slots one poll holds, by host, from its claim to its write."""
    held: dict[str, HeldSlot] = {}
    reset = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(reset)


def slot_args(settings: Settings) -> list[int]:
    """The slot script's limit, lease and delay (ms) arguments."""
    return [settings.host_concurrency, slot_lease_ms(settings), int(settings.host_delay * 1000)]


def in_poll() -> bool:
    """Inside ``poll_slots``: a slot taken ahead is tracked and released by the poll."""
    return _HELD.get() is not None


def hold_claimed(host: str, token: str) -> None:
    """The poll's claim took ``host``'s slot under ``token``: its first request uses it."""
    held = _HELD.get()
    if held is not None:
        held[host] = HeldSlot(token, fresh=True)


def queue_release_slots(pipe: Any, settings: Settings) -> None:
    """Release, in the poll's write pipeline, every slot the poll still holds."""
    held = _HELD.get()
    if not held:
        return
    for host, slot in held.items():
        pipe.zrem(host_keys(settings, host)[0], slot.token)
    held.clear()


def host_keys(settings: Settings, host: str) -> tuple[str, str]:
    return keys.HOST_SLOTS.key(settings, host), keys.HOST_NEXT.key(settings, host)


def slot_lease_ms(settings: Settings) -> int:
    """Longest one request may take: connect, first byte, whole body, plus slack."""
    return int((settings.http_connect_timeout + 2 * settings.http_read_timeout + 5) * 1000)


def slot_wait_s(settings: Settings) -> float:
    """How long a poll waits for its host before giving up with ``HostBusy``."""
    return max(
        settings.http_connect_timeout + settings.http_read_timeout,
        2 * settings.host_delay * settings.host_concurrency,
    )


@contextlib.contextmanager
def host_slot(client: redis.Redis, settings: Settings, host: str) -> Iterator[None]:
    """Hold one of the host's request slots, started no sooner than ``host_delay`` after the
    previous request to that host from any worker. Within a poll (``poll_slots``) the slot is
    kept after the request and released with the poll's write or its next request here."""
    held = _HELD.get()
    mine = held.get(host) if held is not None else None
    if mine is not None and mine.fresh:
        mine.fresh = False  # taken by the claim: this request is its one use
        yield
        return
    slots, next_key = host_keys(settings, host)
    token = uuid.uuid4().hex
    previous = mine.token if mine is not None else ""
    deadline = time.monotonic() + slot_wait_s(settings)
    while True:
        wait_ms = int(_ACQUIRE(client, [slots, next_key], [token, *slot_args(settings), previous]))
        if held is not None and previous:
            held.pop(host, None)
            previous = ""
        if wait_ms <= 0:
            break
        if time.monotonic() + wait_ms / 1000 > deadline:
            raise HostBusy(
                f"host {host}: no request slot within {slot_wait_s(settings):g}s "
                f"(WATCHKEEPER_HOST_CONCURRENCY={settings.host_concurrency}, "
                f"WATCHKEEPER_HOST_DELAY={settings.host_delay:g})"
            )
        time.sleep(min(wait_ms, 1000) / 1000)
    if held is not None:
        held[host] = HeldSlot(token, fresh=False)
        yield
        return
    try:
        yield
    finally:
        client.zrem(slots, token)
