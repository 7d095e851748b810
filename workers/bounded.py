"""Capped Redis primitives: every structure watchkeeper writes has a hard cap and an age.

The seeds leaked through exactly these structures kept in process memory (a dedup Set, a batch
buffer, a history file). Moving them to Redis only moves the leak unless each one is bounded
*in the same atomic step that grows it*, so:

* ``SeenSet`` — a sorted set per source, member = short hash of the item key, score = when it
  was last seen. One Lua call takes any number of keys, returns which are new, touches the ones
  already there (an item still present in its source is never the oldest, so never evicted and
  re-emitted — the seed's "trim to half" fix re-emitted), and trims to the exact cap.
* ``CappedStream`` — an output stream written with ``XADD MAXLEN ~ cap``.
* ``CappedList`` — newest-first list trimmed with ``LTRIM`` in the same transaction.

Each reports its size and cap for ``watchkeeper status``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

JSON_FIELDS = frozenset({"tags", "coordinates", "location", "fields", "extra", "data"})

_SEEN_BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local max_age = tonumber(ARGV[2])
if max_age > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - max_age))
end
local new = {}
"""

_SEEN_END = """
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
end
if max_age > 0 then
  redis.call('EXPIRE', KEYS[1], max_age)
end
"""

# KEYS: seen. ARGV: cap, max_age, hashes... → 0-based indices of the new hashes
_SEEN_ADD_NEW = _SEEN_BEGIN + """
for i = 3, #ARGV do
  if redis.call('ZADD', KEYS[1], now, ARGV[i]) == 1 then
    new[#new + 1] = i - 3
  end
end
""" + _SEEN_END + "return new"

# KEYS: seen, stream, counts hash (optional). ARGV: cap, max_age, stream cap,
# JSON [[hash, [field, value, ...]], ...], counts mode ("" none, "set" first chunk, "incr")
# → {0-based indices of the new items, their stream ids}
_SEEN_ADD_AND_APPEND = _SEEN_BEGIN + """
local items = cjson.decode(ARGV[4])
local ids = {}
for i = 1, #items do
  if redis.call('ZADD', KEYS[1], now, items[i][1]) == 1 then
    new[#new + 1] = i - 1
    ids[#ids + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
                               unpack(items[i][2]))
  end
end
if ARGV[5] == 'set' then
  redis.call('HSET', KEYS[3], 'last_new', #new, 'last_duplicate', #items - #new)
elseif ARGV[5] == 'incr' then
  redis.call('HINCRBY', KEYS[3], 'last_new', #new)
  redis.call('HINCRBY', KEYS[3], 'last_duplicate', #items - #new)
end
""" + _SEEN_END + "return {new, ids}"


def short_hash(key: str) -> str:
    """A 16-hex-digit digest: bounded member size whatever the item key's length."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Size:
    """What ``status`` shows for one bounded structure."""

    key: str
    size: int
    cap: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "cap": self.cap}


class SeenSet:
    """Per-source dedup memory, capped exactly and aged, one round trip per call."""

    def __init__(self, client: redis.Redis, key: str, cap: int, max_age: float = 0) -> None:
        self.client, self.key, self.cap, self.max_age = client, key, cap, max_age
        self._script = client.register_script(_SEEN_ADD_NEW)

    def add_new(self, keys: Sequence[str]) -> list[str]:
        """Record ``keys`` as seen; return those not seen before (in input order, once each)."""
        if not keys:
            return []
        hashes = [short_hash(k) for k in keys]
        indices = self._script(keys=[self.key], args=[self.cap, int(self.max_age), *hashes])
        return [keys[int(i)] for i in indices]

    def queue_add_and_append(self, pipe: Any, stream: CappedStream,
                             items: Sequence[tuple[str, Mapping[str, Any]]],
                             counts_key: str | None = None) -> int:
        """Queue on ``pipe`` the atomic dedup-and-write of ``(key, entry)`` items: each entry
        whose key is new is appended to ``stream`` in the same Lua call that records the key,
        so a worker dying mid-poll can neither lose an entry (key recorded, entry not written)
        nor write it twice. With ``counts_key``, the same calls store ``last_new`` and
        ``last_duplicate`` in that hash (a poll's state) without another round trip.
        Returns how many pipeline results ``parse_add_and_append`` reads.
        """
        for start in range(0, len(items), BULK_BATCH):
            chunk = [[short_hash(key), stream_row(entry)]
                     for key, entry in items[start:start + BULK_BATCH]]
            mode = "" if counts_key is None else "set" if start == 0 else "incr"
            pipe.eval(_SEEN_ADD_AND_APPEND, 3, self.key, stream.key, counts_key or self.key,
                      self.cap, int(self.max_age), stream.cap,
                      json.dumps(chunk, ensure_ascii=False), mode)
        return (len(items) + BULK_BATCH - 1) // BULK_BATCH

    @staticmethod
    def parse_add_and_append(results: Sequence[Any]) -> list[tuple[int, str]]:
        """``(index into items, stream id)`` for each new item, from the queued calls' results."""
        out = []
        for chunk, (indices, ids) in enumerate(results):
            out += [(chunk * BULK_BATCH + int(i), str(sid))
                    for i, sid in zip(indices, ids, strict=True)]
        return out

    def add_new_and_append(self, stream: CappedStream,
                           items: Sequence[tuple[str, Mapping[str, Any]]]
                           ) -> list[tuple[int, str]]:
        """Dedup and write in one atomic step per chunk; see ``queue_add_and_append``."""
        pipe = self.client.pipeline(transaction=False)
        calls = self.queue_add_and_append(pipe, stream, items)
        return self.parse_add_and_append(pipe.execute()[:calls]) if calls else []

    def __len__(self) -> int:
        return int(self.client.zcard(self.key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.client.zscore(self.key, short_hash(key)) is not None

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)


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
    return [x for name, value in entry.items() for x in (
        name, value if type(value) is str else encode_fields({name: value})[name])]


def decode_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of ``encode_fields`` for the fields documented as JSON."""
    out: dict[str, Any] = dict(fields)
    for name in JSON_FIELDS & out.keys():
        with contextlib.suppress(ValueError):
            out[name] = json.loads(out[name]) if out[name] else None
    return out


_XADD_MANY = """
local ids = {}
local rows = cjson.decode(ARGV[2])
for i = 1, #rows do
  ids[i] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(rows[i]))
end
return ids
"""

BULK_BATCH = 1000


class CappedStream:
    """An output stream (``alerts``, ``logs``, ``listings``) trimmed to about ``cap`` entries.

    ``MAXLEN ~`` lets Redis trim whole radix-tree nodes, so the length can exceed the cap by at
    most one node (100 entries by default) — the price of O(1) trimming on every add.

    Many entries are written by a Lua script that takes a whole batch as one JSON argument and
    XADDs inside Redis, ``BULK_BATCH`` entries per call: redis-py packs every argument of every
    command in Python (an XADD of a 10-field alert is ~25 arguments), which cost more than a
    third of a feed poll; one argument per batch is about 5x cheaper.
    """

    def __init__(self, client: redis.Redis, key: str, cap: int) -> None:
        self.client, self.key, self.cap = client, key, cap

    def add(self, entry: Mapping[str, Any]) -> str:
        return str(self.client.xadd(self.key, encode_fields(entry),  # type: ignore[arg-type]
                                    maxlen=self.cap, approximate=True))

    def queue(self, pipe: Any, entries: Iterable[Mapping[str, Any]]) -> int:
        """Add the writes to a caller's pipeline (so entries and other state go in one round
        trip); return how many results (lists of ids) they produce."""
        rows = [stream_row(entry) for entry in entries]
        for start in range(0, len(rows), BULK_BATCH):
            pipe.eval(_XADD_MANY, 1, self.key, self.cap,
                      json.dumps(rows[start:start + BULK_BATCH], ensure_ascii=False))
        return (len(rows) + BULK_BATCH - 1) // BULK_BATCH

    def add_many(self, entries: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append entries in one round trip; return their ids."""
        pipe = self.client.pipeline(transaction=False)
        batches = self.queue(pipe, entries)
        return [str(i) for ids in pipe.execute()[:batches] for i in ids] if batches else []

    def latest(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The newest ``count`` entries, oldest first."""
        rows = cast(list[Any], self.client.xrevrange(self.key, count=count))
        return [(str(i), decode_fields(f)) for i, f in reversed(rows)]

    def after(self, last_id: str, count: int = 100,
              block_ms: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Entries after ``last_id`` (``"$"`` for only new ones), optionally blocking."""
        reply = cast(list[Any], self.client.xread({self.key: last_id}, count=count,
                                                  block=block_ms))
        if not reply:
            return []
        return [(str(i), decode_fields(f)) for i, f in reply[0][1]]

    def __len__(self) -> int:
        return int(self.client.xlen(self.key))

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)


class CappedList:
    """Newest-first JSON records (session history, dead letters), trimmed on every push."""

    def __init__(self, client: redis.Redis, key: str, cap: int, ttl: int | None = None) -> None:
        self.client, self.key, self.cap, self.ttl = client, key, cap, ttl

    def push(self, record: Mapping[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(self.key, json.dumps(record, default=str))
        pipe.ltrim(self.key, 0, self.cap - 1)
        if self.ttl:
            pipe.expire(self.key, self.ttl)
        pipe.execute()

    def latest(self, count: int | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        end = -1 if count is None else count - 1
        rows = cast(list[str], self.client.lrange(self.key, 0, end))
        return [json.loads(r) for r in rows]

    def __len__(self) -> int:
        return int(self.client.llen(self.key))

    def size(self) -> Size:
        return Size(self.key, len(self), self.cap)
