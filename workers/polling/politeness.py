"""Per-host politeness across every worker: at most WATCHKEEPER_HOST_CONCURRENCY requests at
once and WATCHKEEPER_HOST_DELAY between request starts, per host (see ``lua/host_acquire.lua``).

The host slots are keyed by the URL's host name and port only — never its user info — so a
credential in a source URL never becomes part of a key name.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.polling.errors import HostBusy
from workers.store.scripts import Script

_ACQUIRE = Script("workers.polling", "host_acquire")


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
    previous request to that host from any worker."""
    slots, next_key = host_keys(settings, host)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + slot_wait_s(settings)
    while True:
        wait_ms = int(
            _ACQUIRE(
                client,
                [slots, next_key],
                [
                    token,
                    settings.host_concurrency,
                    slot_lease_ms(settings),
                    int(settings.host_delay * 1000),
                ],
            )
        )
        if wait_ms <= 0:
            break
        if time.monotonic() + wait_ms / 1000 > deadline:
            raise HostBusy(
                f"host {host}: no request slot within {slot_wait_s(settings):g}s "
                f"(WATCHKEEPER_HOST_CONCURRENCY={settings.host_concurrency}, "
                f"WATCHKEEPER_HOST_DELAY={settings.host_delay:g})"
            )
        time.sleep(min(wait_ms, 1000) / 1000)
    try:
        yield
    finally:
        client.zrem(slots, token)
