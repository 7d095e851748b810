"""Wall-clock timestamps as watchkeeper writes them: ISO 8601, UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec)


def iso(epoch: float, timespec: str = "milliseconds") -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec)
