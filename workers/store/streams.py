"""Output streams (``alerts``, ``logs``, ``listings``, ``locations``, ``changes``, ``health``),
each capped in entries and in bytes.

An entry cap alone lets whoever chooses the entry sizes choose the stream's memory (100,000
``logs`` entries of 100 KB are 10 GB), so every stream also has a byte budget, enforced in the
same script call that adds (``lua/lib/stream_budget.lua``): each entry's bytes (field names and
values) go to the stream's byte ledger, and the oldest entries are trimmed exactly until
both the cap and the budget hold — oldest first, so a reader's gap in ``seq`` is still exactly
what was trimmed. Field values are strings: nested values (``JSON_FIELDS``) are stored as JSON
and decoded on read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from workers.core import keys
from workers.core.settings import MAX_STREAM_BUDGET, Settings
from workers.store.scripts import Script, execute
from workers.store.size import Size

JSON_FIELDS = frozenset({"tags", "coordinates", "location", "fields", "extra", "data"})
BULK_BATCH = 1000
"""Entries per script call when many are written at once."""
SCHEMA = "1"
"""The version of the stream contract (docs/streams.md) every entry carries in ``schema``."""

_ADD = Script("workers.store", "stream_add", include=("stream_budget",))


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
    """One output stream trimmed to ``cap`` entries and ``budget`` bytes.

    Writers number entries through ``seq_key`` (``seq`` and ``schema`` fields), so a reader that
    fell behind a trim knows how many it missed; a read-only stream needs no ``seq_key``. The
    byte ledger is ``<key>:bytes`` (``keys.STREAM_BYTES``); ``output_stream`` builds a stream
    from the settings.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        cap: int,
        seq_key: str = "",
        budget: int = MAX_STREAM_BUDGET,
    ) -> None:
        self.client, self.key, self.cap, self.seq_key = client, key, cap, seq_key
        self.budget = budget
        self.ledger_key = f"{key}:bytes"

    def add(self, entry: Mapping[str, Any]) -> str:
        return self.add_many([entry])[0]

    def queue(self, pipe: Any, entries: Iterable[Mapping[str, Any]]) -> int:
        """Add the writes to a caller's pipeline (so entries and other state go in one round
        trip); return how many results (lists of ids) they produce."""
        rows = [stream_row(entry) for entry in entries]
        for start in range(0, len(rows), BULK_BATCH):
            _ADD.queue(
                pipe,
                self.writable_keys(),
                [
                    self.cap,
                    json.dumps(rows[start : start + BULK_BATCH], ensure_ascii=False),
                    SCHEMA,
                    self.budget,
                ],
            )
        return (len(rows) + BULK_BATCH - 1) // BULK_BATCH

    def add_many(self, entries: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append entries in one round trip; return their ids."""
        pipe = self.client.pipeline(transaction=False)
        batches = self.queue(pipe, entries)
        return [str(i) for ids in execute(pipe)[:batches] for i in ids] if batches else []

    def writable_keys(self) -> list[str]:
        """The keys a writing script takes: the stream, its ``seq`` counter, its byte ledger."""
        if not self.seq_key:
            raise ValueError(f"stream {self.key}: written without its sequence counter")
        return [self.key, self.seq_key, self.ledger_key]

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

    def bytes_held(self) -> int:
        """Bytes the stream holds, by its ledger."""
        return ledger_bytes(self.client, self.ledger_key)


def ledger_bytes(client: redis.Redis, ledger_key: str) -> int:
    """The bytes a stream holds, from its byte ledger's trailer (``lua/lib/stream_budget.lua``:
    the last 16 characters, decimal); 0 when it has none."""
    tail = cast(Any, client.getrange(ledger_key, -16, -1))
    text = tail.decode("ascii", "replace") if isinstance(tail, bytes) else str(tail)
    return int(text) if len(text) == 16 and text.isdigit() else 0


def output_stream(client: redis.Redis, settings: Settings, name: str) -> CappedStream:
    """The output stream ``name`` with its cap, budget and keys from ``settings``."""
    stream = CappedStream(
        client,
        keys.STREAM.key(settings, name),
        settings.stream_cap(name),
        keys.STREAM_SEQ.key(settings, name),
        settings.stream_budget(name),
    )
    stream.ledger_key = keys.STREAM_BYTES.key(settings, name)
    return stream
