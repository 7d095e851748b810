"""The TCP listener's counters, published to one Redis hash so ``status`` can show them.

Every connection, byte, line and discard is counted in process and published every second to
``wk:tcp:stats`` (a HASH whose TTL is refreshed while the listener runs, so a killed listener's
numbers vanish on their own). ``watchkeeper status`` reads that hash from any process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from workers.core import clock

DISCARD_REASONS = ("too_long", "invalid_utf8", "buffer_overflow", "incomplete")
REFUSE_REASONS = ("max_connections", "per_peer", "stopping")
"""Why a connection was closed at once: the total cap, the per-peer cap, or shutdown."""
STATS_INTERVAL_S = 1.0
RUNNING_TTL_S = 15
COUNTERS = (
    "open",
    "accepted",
    "closed",
    "refused",
    "bytes",
    "lines",
    "written",
    "entries",
    "idle_timeouts",
    "write_errors",
    "script_reloads",
    "resent_skipped",
    "pauses",
)


def now_ms() -> str:
    """The listener's timestamps carry milliseconds: many lines arrive within one second."""
    return clock.now_iso("milliseconds")


def _discards() -> dict[str, int]:
    return dict.fromkeys(DISCARD_REASONS, 0)


def _refusals() -> dict[str, int]:
    return dict.fromkeys(REFUSE_REASONS, 0)


@dataclass
class TcpStats:
    """Live counters of one listener process (plain ints: one event-loop thread writes them)."""

    listening: str = ""
    pid: int = field(default_factory=os.getpid)
    state: str = "starting"
    started_at: str = field(default_factory=now_ms)
    open: int = 0
    accepted: int = 0
    closed: int = 0
    refused: int = 0
    bytes: int = 0
    lines: int = 0
    written: int = 0
    entries: int = 0
    idle_timeouts: int = 0
    write_errors: int = 0
    script_reloads: int = 0
    resent_skipped: int = 0
    pauses: int = 0
    discarded: dict[str, int] = field(default_factory=_discards)
    refused_by: dict[str, int] = field(default_factory=_refusals)
    instance: str = ""
    last_write_error: str = ""
    last_write_error_at: str = ""
    queue_lines: int = 0
    queue_bytes: int = 0
    queue_cap_lines: int = 0
    queue_cap_bytes: int = 0
    paused: bool = False

    def as_fields(self) -> dict[str, str]:
        """The hash fields: strings, discards flattened as ``discarded_<reason>``."""
        out = {name: str(getattr(self, name)) for name in COUNTERS}
        out.update({f"discarded_{k}": str(v) for k, v in self.discarded.items()})
        out.update({f"refused_{k}": str(v) for k, v in self.refused_by.items()})
        out.update(
            instance=self.instance,
            listening=self.listening,
            pid=str(self.pid),
            state=self.state,
            started_at=self.started_at,
            updated_at=now_ms(),
            last_write_error=self.last_write_error,
            last_write_error_at=self.last_write_error_at,
            queue_lines=str(self.queue_lines),
            queue_bytes=str(self.queue_bytes),
            queue_cap_lines=str(self.queue_cap_lines),
            queue_cap_bytes=str(self.queue_cap_bytes),
            paused=str(int(self.paused)),
        )
        return out


async def publish(client: Any, key: str, stats: TcpStats, ttl: int) -> None:
    """Replace the hash with the current numbers and refresh its TTL (one round trip)."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping=stats.as_fields())
    pipe.expire(key, ttl)
    await pipe.execute()


def parse_fields(raw: dict[str, str]) -> dict[str, Any]:
    """The hash as ``status`` shows it: numbers as ints, discards grouped by reason."""

    def number(name: str) -> int:
        try:
            return int(raw.get(name) or 0)
        except ValueError:
            return 0

    out: dict[str, Any] = {name: number(name) for name in COUNTERS}
    out["discarded"] = {r: number(f"discarded_{r}") for r in DISCARD_REASONS}
    out["refused_by"] = {r: number(f"refused_{r}") for r in REFUSE_REASONS}
    out["queue"] = {
        "lines": number("queue_lines"),
        "bytes": number("queue_bytes"),
        "cap_lines": number("queue_cap_lines"),
        "cap_bytes": number("queue_cap_bytes"),
        "paused": bool(number("paused")),
    }
    for name in (
        "instance",
        "listening",
        "state",
        "started_at",
        "updated_at",
        "last_write_error",
        "last_write_error_at",
    ):
        out[name] = raw.get(name, "")
    out["pid"] = number("pid")
    return out
