"""Newest-first lists of JSON records (session history, dead letters), trimmed on every push."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis

from workers.store.size import Size


class CappedList:
    def __init__(self, client: redis.Redis, key: str, cap: int, ttl: int | None = None) -> None:
        self.client, self.key, self.cap, self.ttl = client, key, cap, ttl

    def push(self, record: Mapping[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.queue_push(pipe, record)
        pipe.execute()

    def queue_push(self, pipe: Any, record: Mapping[str, Any]) -> None:
        """Add the push and its trim to a caller's pipeline."""
        pipe.lpush(self.key, json.dumps(record, default=str))
        pipe.ltrim(self.key, 0, self.cap - 1)
        if self.ttl:
            pipe.expire(self.key, self.ttl)

    def latest(self, count: int | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        end = -1 if count is None else count - 1
        rows = cast(list[str], self.client.lrange(self.key, 0, end))
        return [json.loads(r) for r in rows]

    def __len__(self) -> int:
        return int(self.client.llen(self.key))

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)
