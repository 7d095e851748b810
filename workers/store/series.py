"""Capped time series of JSON points (the dashboard's memory over time), one LIST each.

A process appends at most one point per interval (it keeps the clock itself: every series has
one writer), newest first; ``LTRIM`` keeps the newest ``cap`` points and the key expires
``ttl`` seconds after its last point, so the series of a process that is gone ages out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis


def queue_point(pipe: Any, key: str, point: Mapping[str, Any], cap: int, ttl: int) -> None:
    """Add one point's write (push, trim, TTL) to a pipeline, sync or asyncio alike."""
    pipe.lpush(key, json.dumps(point, separators=(",", ":"), default=str))
    pipe.ltrim(key, 0, cap - 1)
    pipe.expire(key, ttl)


def read_points(client: redis.Redis, key: str, since: float = 0.0) -> list[dict[str, Any]]:
    """The series oldest first, from ``since`` (a Unix time) on; unreadable points skipped."""
    out: list[dict[str, Any]] = []
    for raw in cast(list[str], client.lrange(key, 0, -1)):
        try:
            point = json.loads(raw)
        except ValueError:
            continue
        if isinstance(point, dict) and float(point.get("t", 0)) >= since:
            out.append(point)
    out.reverse()
    return out


class Every:
    """True once per ``interval`` seconds (first call included): a writer's own pace."""

    def __init__(self, interval: float) -> None:
        self.interval, self._next = interval, 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True
