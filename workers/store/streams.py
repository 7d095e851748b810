"""Output streams (``alerts``, ``logs``, ``listings``, ``locations``), each capped.

``XADD MAXLEN ~ cap`` lets Redis trim whole radix-tree nodes, so a stream can exceed its cap by
at most one node (100 entries by default) — the price of O(1) trimming on every add. Field
values are strings: nested values (``JSON_FIELDS``) are stored as JSON and decoded on read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from workers.store.scripts import Script, execute
from workers.store.size import Size

JSON_FIELDS = frozenset({"tags", "coordinates", "location", "fields", "extra", "data"})
BULK_BATCH = 1000
"""Entries per script call when many are written at once."""
SCHEMA = "1"
"""The version of the stream contract (README "Streams") every entry carries in ``schema``."""

_ADD = Script("workers.store", "stream_add")


def encode_fields(entry: Mapping[str, Any]) -> dict[str, str]:
    """Stream fields are strings: None → "", nested values → JSON."""
    out: dict[str, str] = {}
    for name, value in entry.items():
        if value is None:
            out[name] = ""
        elif isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool | int | float) and name not in JSON_FIELDS:
            out[name] = str(value)
        else:
            out[name] = json.dumps(value, ensure_ascii=False, default=str)
    return out


def stream_row(entry: Mapping[str, Any]) -> list[str]:
    """An entry as the flat ``[field, value, ...]`` list XADD takes, encoded as
    ``encode_fields`` does (strings pass through untouched: the common, fast case)."""
    return [
        x
        for name, value in entry.items()
        for x in (name, value if type(value) is str else encode_fields({name: value})[name])
    ]


def decode_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of ``encode_fields`` for the fields documented as JSON."""
    out: dict[str, Any] = dict(fields)
    for name in JSON_FIELDS & out.keys():
        with contextlib.suppress(ValueError):
            out[name] = json.loads(out[name]) if out[name] else None
    return out


class CappedStream:
    """One output stream trimmed to about ``cap`` entries.

    Writers number entries through ``seq_key`` (``seq`` and ``schema`` fields), so a reader that
    fell behind a trim knows how many it missed; a read-only stream needs no ``seq_key``.
    """

    def __init__(self, client: redis.Redis, key: str, cap: int, seq_key: str = "") -> None:
        self.client, self.key, self.cap, self.seq_key = client, key, cap, seq_key

    def add(self, entry: Mapping[str, Any]) -> str:
        return self.add_many([entry])[0]

    def queue(self, pipe: Any, entries: Iterable[Mapping[str, Any]]) -> int:
        """Add the writes to a caller's pipeline (so entries and other state go in one round
        trip); return how many results (lists of ids) they produce."""
        rows = [stream_row(entry) for entry in entries]
        for start in range(0, len(rows), BULK_BATCH):
            _ADD.queue(
                pipe,
                [self.key, self.writable_seq_key()],
                [
                    self.cap,
                    json.dumps(rows[start : start + BULK_BATCH], ensure_ascii=False),
                    SCHEMA,
                ],
            )
        return (len(rows) + BULK_BATCH - 1) // BULK_BATCH

    def add_many(self, entries: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append entries in one round trip; return their ids."""
        pipe = self.client.pipeline(transaction=False)
        batches = self.queue(pipe, entries)
        return [str(i) for ids in execute(pipe)[:batches] for i in ids] if batches else []

    def writable_seq_key(self) -> str:
        if not self.seq_key:
            raise ValueError(f"stream {self.key}: written without its sequence counter")
        return self.seq_key

    def latest(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The newest ``count`` entries, oldest first."""
        rows = cast(list[Any], self.client.xrevrange(self.key, count=count))
        return [(str(i), decode_fields(f)) for i, f in reversed(rows)]

    def after(
        self, last_id: str, count: int = 100, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Entries after ``last_id`` (``"$"`` for only new ones), optionally blocking."""
        reply = cast(list[Any], self.client.xread({self.key: last_id}, count=count, block=block_ms))
        if not reply:
            return []
        return [(str(i), decode_fields(f)) for i, f in reply[0][1]]

    def __len__(self) -> int:
        return int(self.client.xlen(self.key))

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)
