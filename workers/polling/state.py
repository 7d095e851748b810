"""Per-source state in Redis (``wk:src:{name}``): validators, next due time, error streak.

All of it lives in Redis so any worker, or ``watchkeeper poll``, sees the same picture and a
worker can die at any moment. Backoff after errors doubles with jitter up to a cap, and a
server's Retry-After wins (still capped: a source is never stopped for good).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.polling.freshness import bounds
from workers.polling.locks import lock_ms
from workers.polling.politeness import hold_claimed, host_keys, in_poll, slot_args
from workers.store.scripts import Script

_CLAIM = Script("workers.polling", "claim", include=("host_slot",))
_SAVE = Script("workers.polling", "state_save")

JITTER = (0.75, 1.0)
"""Backoff is multiplied by a random factor in this range: never below 3/4 of the doubling, so
the delay still grows with every error while workers that failed together spread out."""


@dataclass
class SourceState:
    """The stored state of one source (all fields optional; a new source has none)."""

    etag: str = ""
    last_modified: str = ""
    next_check: float = 0.0
    errors: int = 0
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, client: redis.Redis, settings: Settings, name: str) -> SourceState:
        return cls.from_raw(client.hgetall(keys.SOURCE_STATE.key(settings, name)))  # type: ignore[arg-type]

    @classmethod
    def from_raw(cls, raw: dict[str, str]) -> SourceState:
        return cls(
            etag=raw.get("etag", ""),
            last_modified=raw.get("last_modified", ""),
            next_check=as_float(raw.get("next_check")),
            errors=int(as_float(raw.get("errors"))),
            raw=raw,
        )

    @property
    def paused(self) -> bool:
        """Paused from the dashboard (``paused`` = "1"): scheduled polls skip the source."""
        return self.raw.get("paused") == "1"

    def due(self, now: float) -> bool:
        return now >= self.next_check


def as_float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def entry_name(kind: str, name: str) -> str:
    """A source's schedule entry: ``feed:bbc`` (its kind, its name)."""
    return f"{kind}:{name}"


def state_ttl(settings: Settings, source: Source) -> int:
    """Long enough to outlive any backoff and several of the longest waits the source's own
    word may set (``interval_max``); removed sources age out."""
    longest = bounds(settings, source)[1]
    return int(max(settings.state_ttl, 2 * settings.backoff_max, 3 * longest))


def claim(
    client: redis.Redis,
    settings: Settings,
    name: str,
    host: str | None = None,
    scheduled: bool = True,
    queued: tuple[str, str] | None = None,
) -> tuple[str | None, SourceState, float]:
    """Try the source's lock and read its state in one round trip; also Redis's time now,
    which is the poll's start on the clock every worker shares. With ``host`` the same call
    takes the host's request slot for the poll's first request (inside ``poll_slots``) when
    the lock is taken and the poll will fetch (``scheduled``: not for a paused or not-due
    source). ``queued`` (marker key, task id): a scheduled poll's marker, cleared in the same
    step if it is still this task's."""
    token = uuid.uuid4().hex
    names = [keys.SOURCE_LOCK.key(settings, name), keys.SOURCE_STATE.key(settings, name)]
    args: list[Any] = [token, lock_ms(settings), "1" if scheduled else "0", "", "", "", ""]
    if host is not None and in_poll():  # outside a poll nothing would release the slot
        names += host_keys(settings, host)
        args[3:6] = slot_args(settings)
    if queued is not None:
        names.append(queued[0])
        args[6] = queued[1]
    locked, now, flat, slot = _CLAIM(client, names, args)
    if host is not None and int(slot) == 0:  # 0 only when the slot was asked for and taken
        hold_claimed(host, token)
    raw = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
    return (token if int(locked) else None), SourceState.from_raw(raw), float(now)


def queue_save(
    pipe: Any,
    settings: Settings,
    source: Source,
    values: dict[str, Any],
    due_in: float | None = None,
    now_fields: tuple[str, ...] = (),
) -> None:
    """Add the state write (and its TTL refresh) to a pipeline; ``due_in`` seconds from now on
    Redis's clock sets ``next_check`` (and the source's time in beat's due set),
    ``now_fields`` are set to that now."""
    if not values and due_in is None and not now_fields:
        return
    _SAVE.queue(
        pipe,
        [keys.SOURCE_STATE.key(settings, source.name), keys.BEAT_DUE.key(settings)],
        [
            state_ttl(settings, source),
            "" if due_in is None else repr(float(due_in)),
            json.dumps({k: "" if v is None else str(v) for k, v in values.items()}),
            json.dumps(list(now_fields)),
            entry_name(source.kind, source.name),
        ],
    )


def backoff_delay(
    settings: Settings,
    errors: int,
    retry_after: float | None = None,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds until the next try after ``errors`` consecutive errors."""
    if retry_after is not None:
        return min(settings.backoff_max, max(0.0, retry_after))
    exponent = min(max(errors, 1) - 1, 60)
    return min(settings.backoff_max, settings.backoff_base * 2.0**exponent * rng(*JITTER))
