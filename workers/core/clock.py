"""Wall-clock timestamps as watchkeeper writes them: ISO 8601, UTC; and Redis's own clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_iso(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec)


def iso(epoch: float, timespec: str = "milliseconds") -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec)


def redis_time(client: Any) -> float:
    """Redis's clock (``TIME``), in seconds: what a score written by a Lua script (which reads
    ``TIME``) is compared with — never this machine's clock, which may be off."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6
