"""Per-source dedup memory: a sorted set capped exactly and aged, one round trip per call.

A dedup set leaks unless it is bounded in the same atomic step that grows it. Member = a short
hash of the item key (bounded size whatever the key), score = when it was last seen. See
``lua/seen_add.lua``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.store.scripts import Script, execute
from workers.store.size import Size
from workers.store.streams import BULK_BATCH, SCHEMA, CappedStream, stream_row

_ADD = Script("workers.store", "seen_add", include=("stream_budget",))


def short_hash(key: str) -> str:
    """A 16-hex-digit digest: bounded member size whatever the item key's length."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Handoff:
    """A capped queue that new items are handed to in the same step that writes them (so an
    item written is never left behind by a worker dying between the two): ``queue`` ZSET and
    ``markers`` ZSET of stream ids, ``payloads`` HASH stream id → payload, ``cap`` on the queue
    (the evicted are returned; they keep their marker)."""

    queue: str
    markers: str
    payloads: str
    cap: int


@dataclass
class Added:
    """What a dedup-and-append wrote: ``(index into items, stream id)`` of each new item, and
    the ids the hand-off queue evicted to stay within its cap."""

    new: list[tuple[int, str]] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)


class SeenSet:
    def __init__(self, client: redis.Redis, key: str, cap: int, max_age: float = 0) -> None:
        self.client, self.key, self.cap, self.max_age = client, key, cap, max_age

    def add_new(self, keys: Sequence[str]) -> list[str]:
        """Record ``keys`` as seen; return those not seen before (in input order, once each)."""
        if not keys:
            return []
        items = json.dumps([[short_hash(k)] for k in keys])
        new, _, _ = _ADD(
            self.client,
            [self.key] * 8,
            [self.cap, int(self.max_age), 0, items, "", 0, "", SCHEMA, 0],
        )
        return [keys[int(i)] for i in new]

    def queue_add_and_append(
        self,
        pipe: Any,
        stream: CappedStream,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        counts_key: str | None = None,
        protect_since: float = 0.0,
        handoff: Handoff | None = None,
        payloads: Sequence[str | None] = (),
    ) -> int:
        """Queue on ``pipe`` the atomic dedup-and-write of ``(key, entry)`` items: each entry
        whose key is new is appended to ``stream`` in the same call that records the key, and
        handed to ``handoff`` with its payload (``payloads[i]``; None: not handed on). With
        ``counts_key``, the same calls store ``last_new`` and ``last_duplicate`` in that hash (a
        poll's state). Keys touched since ``protect_since`` (the poll's start, Redis time) are
        never trimmed. Returns how many pipeline results ``parse_add_and_append`` reads.
        """
        hand = handoff or Handoff(self.key, self.key, self.key, 0)
        stream_key, seq_key, ledger_key = stream.writable_keys()
        for start in range(0, len(items), BULK_BATCH):
            chunk = [
                [short_hash(key), stream_row(entry), *_payload(payloads, start + i)]
                for i, (key, entry) in enumerate(items[start : start + BULK_BATCH])
            ]
            mode = "" if counts_key is None else "set" if start == 0 else "incr"
            _ADD.queue(
                pipe,
                [
                    self.key,
                    stream_key,
                    seq_key,
                    counts_key or self.key,
                    hand.queue,
                    hand.markers,
                    hand.payloads,
                    ledger_key,
                ],
                [
                    self.cap,
                    int(self.max_age),
                    stream.cap,
                    json.dumps(chunk, ensure_ascii=False),
                    mode,
                    protect_since,
                    hand.cap if handoff else "",
                    SCHEMA,
                    stream.budget,
                ],
            )
        return (len(items) + BULK_BATCH - 1) // BULK_BATCH

    @staticmethod
    def parse_add_and_append(results: Sequence[Any]) -> Added:
        """What the queued calls wrote, from their results."""
        added = Added()
        for chunk, (indices, ids, evicted) in enumerate(results):
            added.new += [
                (chunk * BULK_BATCH + int(i), str(sid)) for i, sid in zip(indices, ids, strict=True)
            ]
            added.evicted += [str(e) for e in evicted]
        return added

    def add_new_and_append(
        self, stream: CappedStream, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[tuple[int, str]]:
        """Dedup and write in one atomic step per chunk; see ``queue_add_and_append``."""
        pipe = self.client.pipeline(transaction=False)
        calls = self.queue_add_and_append(pipe, stream, items)
        return self.parse_add_and_append(execute(pipe)[:calls]).new if calls else []

    def __len__(self) -> int:
        return int(self.client.zcard(self.key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.client.zscore(self.key, short_hash(key)) is not None

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)


def _payload(payloads: Sequence[str | None], index: int) -> list[str]:
    value = payloads[index] if index < len(payloads) else None
    return [value] if value is not None else []
