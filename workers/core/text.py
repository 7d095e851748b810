"""Small helpers for terminal rendering: aligned tables, ages, durations, megabytes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [
        ["-" if c in (None, "") else str(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines if rows else [*lines, "  (none)"]


def ago(timestamp: Any) -> str:
    try:
        seconds = time.time() - float(timestamp)
    except (TypeError, ValueError):
        return "never"
    return duration(seconds) + " ago"


def duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if abs(s) < 120:
        return f"{s:.0f}s"
    if abs(s) < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def mb(value: Any) -> str:
    try:
        return f"{float(value):.1f}MB"
    except (TypeError, ValueError):
        return "-"


def pairs(counts: dict[str, Any]) -> str:
    """``{"a": 1, "b": 2}`` → ``"a 1, b 2"`` (``"none"`` when empty)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
