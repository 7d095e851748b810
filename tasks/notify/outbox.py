"""A sink's outbox: its consumer groups, the messages it owes, and what it decided per entry.

Each sink reads each of its streams through its own consumer group ``notify:<sink>``, so the
stream itself keeps the sink's position: items written while every worker was down are read
when one comes back, as long as the stream still holds them. A group is created on first use at
the end of the stream (``$``): a new sink does not replay the stream's history.

One read (``claim``) per run, under the sink's read lock: the pending entries of consumer
``new`` first (read by a run that died before recording its decisions), then new entries; each
is filtered, rendered and decided in Python, and ``lua/accept.lua`` records every decision
atomically — counting ``missed`` from gaps in ``seq``, moving queued entries to consumer
``outbox`` (still pending) and acknowledging the rest. A queued entry becomes an outbox record:
the rendered message plus, per destination, attempts, next time and last error; each
destination works through its own due set (``deliver.py``) and the entry is acknowledged when
none owes it any more. The outbox is capped: beyond ``WATCHKEEPER_NOTIFY_MAX_OUTBOX`` the oldest
messages are dead-lettered, so a destination down for days costs bounded memory.

In digest mode matching entries become lines of the digest being collected, acknowledged at
once; when the period is over the digest becomes one outbox message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from tasks.notify.config import Filters, Sink
from tasks.notify.filters import passes, searchable_text, source_of
from tasks.notify.send import TRUNCATED
from tasks.notify.streams import as_int, seq_key, stream_key
from tasks.notify.templates import context_for, default_template, render
from workers.core import keys
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.store import replicas
from workers.store.scripts import Script
from workers.store.streams import decode_fields

log = logging.getLogger(__name__)

DEST_FIELD = "dest:"
"""Sink state fields ``dest:<id>`` → ``{"raw", "label"}``: each destination as the delivery
process knows it, so a process without the secrets shows per-destination figures too."""
NEW, OUTBOX = "new", "outbox"
"""Consumers of a sink's group: entries just read, and entries whose message is in the outbox."""
DIGEST_LINE = 200
TITLE_MAX = 1000

_ENSURE = Script("tasks.notify", "group_ensure")
_ACCEPT = Script("tasks.notify", "accept")


def group_name(sink: str) -> str:
    return f"notify:{sink}"


@dataclass(frozen=True)
class SinkKeys:
    """Every Redis key of one sink (due sets and streams in the sink's order)."""

    state: str
    outbox: str
    queue: str
    dead: str
    log: str
    digest: str
    due: tuple[str, ...]
    streams: tuple[str, ...]
    group: str


def sink_keys(settings: Settings, sink: Sink) -> SinkKeys:
    n = sink.name
    return SinkKeys(
        state=keys.NOTIFY_STATE.key(settings, n),
        outbox=keys.NOTIFY_OUTBOX.key(settings, n),
        queue=keys.NOTIFY_QUEUE.key(settings, n),
        dead=keys.NOTIFY_DEAD.key(settings, n),
        log=keys.NOTIFY_LOG.key(settings, n),
        digest=keys.NOTIFY_DIGEST.key(settings, n),
        due=tuple(keys.NOTIFY_DUE.key(settings, n, d.id) for d in sink.destinations),
        streams=tuple(stream_key(settings, s) for s in sink.streams),
        group=group_name(n),
    )


def ensure_groups(rt: Runtime, sink: Sink, k: SinkKeys) -> dict[str, str]:
    """Create the sink's group on every stream that lacks it; returns what was done."""
    done = {}
    for stream, skey in zip(sink.streams, k.streams, strict=True):
        done[stream] = str(
            _ENSURE(
                rt.redis,
                [skey, seq_key(rt.settings, stream), k.state],
                [k.group, f"pos:{stream}"],
            )
        )
        if done[stream] == "recreated":
            log.warning("[notify] sink %r: group on %r was gone; re-created", sink.name, stream)
    return done


Entry = tuple[int, str, dict[str, Any]]
"""(stream index, entry id, decoded fields — empty when the stream trimmed a pending entry)."""


def read_entries(rt: Runtime, sink: Sink, k: SinkKeys, count: int) -> list[Entry]:
    """Pending entries of consumer ``new`` (a crashed run's), then new ones, in stream order."""
    try:
        return _read(rt.redis, k, count, rt.settings)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        ensure_groups(rt, sink, k)
        return _read(rt.redis, k, count, rt.settings)


def _read(
    client: redis.Redis, k: SinkKeys, count: int, settings: Settings | None = None
) -> list[Entry]:
    """With Sentinel, entries are returned only once a replica has them (``WAIT`` after the
    read): an entry a failover takes back is written again under a new id, and notifying the
    lost one as well would send it twice (``workers.store.replicas``)."""
    pipe = client.pipeline(transaction=False)
    pipe.xreadgroup(k.group, NEW, dict.fromkeys(k.streams, "0"), count=count)
    pipe.xreadgroup(k.group, NEW, dict.fromkeys(k.streams, ">"), count=count)
    waited = settings is not None and replicas.queue_wait(pipe, settings)
    replies = pipe.execute()
    if settings is not None:
        replies = replicas.split(replies, waited, settings, "notification entries read")
    index = {key: i for i, key in enumerate(k.streams)}
    entries: list[Entry] = []
    for reply in replies:
        for skey, rows in cast(list[Any], reply or []):
            for entry_id, fields in rows:
                entries.append((index[str(skey)], str(entry_id), decode_fields(fields or {})))
    return entries


@dataclass
class Decider:
    """Filters and renders entries for one sink."""

    sink: Sink
    filters: Filters
    source_tags: Mapping[str, tuple[str, ...]]
    max_chars: int

    def decide(self, stream: str, entry_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        seq = as_int(fields.get("seq"))
        decision: dict[str, Any] = {"id": entry_id, "seq": seq, "a": "skip", "m": 0}
        count = as_int(fields.get("count")) if "lines" in fields else None
        if seq is not None and count is not None and count > 1:
            decision["last"] = seq + count - 1  # a packed logs entry: one number per line
        if not fields:
            decision["a"] = "gone"
            return decision
        if not self.passes(fields):
            return decision
        custom = self.sink.template(stream)
        template = custom or default_template(stream)
        context = context_for(stream, entry_id, fields)
        title, missing_title = render(template.title, context)
        body, missing_body = render(template.body, context)
        decision["m"] = len(missing_title) + len(missing_body) if custom else 0
        key = f"{stream}:{entry_id}:{self.sink.name}"
        decision["k"] = key
        if self.sink.digest:
            decision["a"] = "digest"
            decision["r"] = (title or body.split("\n", 1)[0])[:DIGEST_LINE]
            return decision
        decision["a"] = "queue"
        decision["r"] = json.dumps(
            record(key, stream, entry_id, title, body, self.sink, self.max_chars, fields),
            ensure_ascii=False,
        )
        return decision

    def passes(self, fields: dict[str, Any]) -> bool:
        g, s = self.filters, self.sink.filters
        text = searchable_text(fields) if (g.include or g.exclude or s.include or s.exclude) else ""
        return passes(fields, include=g.include, exclude=g.exclude, text=text) and passes(
            fields,
            sources=self.sink.sources,
            tags=self.sink.tags,
            source_tags=self.source_tags,
            include=s.include,
            exclude=s.exclude,
            text=text,
        )


def record(
    key: str,
    stream: str,
    entry_id: str,
    title: str,
    body: str,
    sink: Sink,
    max_chars: int,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An outbox record: the message, and every destination owing it (attempts, next, error)."""
    cut = len(body) > max_chars or len(title) > TITLE_MAX
    out: dict[str, Any] = {
        "k": key,
        "s": stream,
        "id": entry_id,
        "t": title[:TITLE_MAX],
        "b": body if len(body) <= max_chars else body[: max_chars - len(TRUNCATED)] + TRUNCATED,
        "src": source_of(fields or {}),
        "d": {d.id: [0, 0, ""] for d in sink.destinations},
    }
    if cut:
        out["tr"] = 1
    return out


def accept(
    rt: Runtime, sink: Sink, k: SinkKeys, decisions: list[tuple[int, dict[str, Any]]]
) -> dict[str, int]:
    """Record the decisions (stream index, decision) in one atomic call."""
    s = rt.settings
    payload = [{"s": index + 1, **decision} for index, decision in decisions]
    reply = _ACCEPT(
        rt.redis,
        [k.state, k.outbox, k.queue, k.dead, k.digest, *k.due, *k.streams],
        [
            k.group,
            json.dumps([d.id for d in sink.destinations]),
            json.dumps(list(sink.streams)),
            s.notify_max_outbox,
            s.notify_max_dead_letters,
            s.notify_digest_items,
            json.dumps(payload, ensure_ascii=False),
        ],
    )
    names = ("queued", "filtered", "digested", "duplicates", "missed", "evicted")
    counts = dict(zip(names, (int(x) for x in reply), strict=True))
    if counts["missed"]:
        log.warning(
            "[notify] sink %r: %d entries trimmed from its streams before it read them (missed)",
            sink.name,
            counts["missed"],
        )
    if counts["evicted"]:
        log.warning(
            "[notify] sink %r: outbox full; %d oldest messages dead-lettered",
            sink.name,
            counts["evicted"],
        )
    return counts


def flush_digest(rt: Runtime, sink: Sink, k: SinkKeys) -> bool:
    """When the digest period is over, turn the collected lines into one outbox message."""
    if not sink.digest:
        return False
    start, items, more = rt.redis.hmget(k.state, ["digest_start", "digest_items", "digest_more"])
    if start is None:
        return False
    seconds, micros = rt.redis.time()
    now = seconds + micros / 1e6
    if now < float(start) + sink.digest:
        return False
    lines = [str(x) for x in rt.redis.lrange(k.digest, 0, -1)]
    count, extra = int(items or len(lines)), int(more or 0)
    title = f"{sink.name}: {count} new item{'s' if count != 1 else ''}"
    body = "\n".join(f"• {line}" for line in lines)
    if extra:
        body += f"\n… and {extra} more"
    key = f"digest:{int(float(start))}:{sink.name}"
    rec = record(key, "digest", "", title, body, sink, rt.settings.notify_max_chars)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(k.outbox, key, json.dumps(rec, ensure_ascii=False))
    pipe.zadd(k.queue, {key: now})
    for due in k.due:
        pipe.zadd(due, {key: now})
    pipe.delete(k.digest)
    pipe.hdel(k.state, "digest_start", "digest_items", "digest_more")
    pipe.hincrby(k.state, "digests", 1)
    pipe.execute()
    return True


def claim(
    rt: Runtime,
    sink: Sink,
    filters: Filters,
    source_tags: Mapping[str, tuple[str, ...]],
    k: SinkKeys | None = None,
) -> dict[str, int]:
    """Read, decide and record one batch of the sink's streams (caller holds the read lock)."""
    k = k or sink_keys(rt.settings, sink)
    entries = read_entries(rt, sink, k, rt.settings.notify_batch)
    counts: dict[str, int] = {"read": len(entries)}
    if entries:
        decider = Decider(sink, filters, source_tags, rt.settings.notify_max_chars)
        decisions = [
            (index, decider.decide(sink.streams[index], entry_id, fields))
            for index, entry_id, fields in entries
        ]
        counts.update(accept(rt, sink, k, decisions))
    if flush_digest(rt, sink, k):
        counts["digest_sent"] = 1
    return counts
