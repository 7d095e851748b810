"""The stream contract as notifications read it: ``seq`` and ``schema`` in every entry.

Every writer stamps each entry with ``seq`` — one more than the stream's previous entry, from
the counter ``stream:{name}:seq`` incremented in the same atomic call as the XADD — and
``schema``, the version of the stream contract (``workers.store.streams.SCHEMA``). A reader that
remembers the last ``seq`` it read counts exactly how many entries the cap trimmed before it
read them: the gap. ``append`` writes through the runtime's writer (``CappedStream``), for the
streams this package writes and for tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.store.streams import SCHEMA, decode_fields, output_stream

__all__ = ["SCHEMA", "append", "as_int", "first_entry", "seq_key", "stream_key"]


def stream_key(settings: Settings, name: str) -> str:
    return keys.STREAM.key(settings, name)


def seq_key(settings: Settings, name: str) -> str:
    return keys.STREAM_SEQ.key(settings, name)


def append(
    client: redis.Redis,
    settings: Settings,
    name: str,
    entries: Iterable[Mapping[str, Any]],
    *,
    exact: bool = False,
    cap: int | None = None,
) -> list[str]:
    """Append stamped entries in one round trip; return their ids. Every writer trims exactly
    now (entry cap and byte budget, in the call that adds); ``exact`` is kept for callers."""
    stream = output_stream(client, settings, name)
    if cap is not None:
        stream.cap = cap
    return stream.add_many(entries)


def as_int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def first_entry(client: redis.Redis, key: str) -> tuple[str, dict[str, Any]] | None:
    """The oldest entry the stream still holds."""
    rows = cast(list[Any], client.xrange(key, count=1))
    return (str(rows[0][0]), decode_fields(rows[0][1])) if rows else None
