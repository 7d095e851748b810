"""Keeping notification state bounded when the sources file changes (a cleanup step).

Everything a sink keeps is capped while it is configured; this step removes what belongs to
sinks, destinations and sources that are no longer there: consumer groups ``notify:<sink>`` on
streams the sink does not take any more (or of removed sinks — a forgotten group would keep its
pending entries forever), the keys of removed sinks, the shares of removed destinations in
outbox messages (a message nobody owes any more is acknowledged) and their recorded labels, and
health records of removed sources. A sink with a destination whose variable is not set in the
process running the cleanup keeps its shares and labels: that process cannot tell which
destinations the variable holds (the delivery worker, which can, records them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, cast

import redis

from tasks.notify.config import Destination, Sink, notify_config
from tasks.notify.deliver import settle
from tasks.notify.outbox import DEST_FIELD, sink_keys
from tasks.notify.streams import stream_key
from workers.core import keys
from workers.core.maintenance import declare_cleanup
from workers.core.runtime import Runtime
from workers.core.settings import STREAM_CAPS

log = logging.getLogger(__name__)

PER_DEST = (DEST_FIELD, "delivered:", "retried:", "failed:")
"""Sink state fields kept per destination (``<field>:<destination id>``)."""

SINK_KEYS = (
    keys.NOTIFY_OUTBOX,
    keys.NOTIFY_QUEUE,
    keys.NOTIFY_DEAD,
    keys.NOTIFY_LOG,
    keys.NOTIFY_STATE,
    keys.NOTIFY_DIGEST,
)


def notify_cleanup(rt: Runtime) -> dict[str, Any]:
    if rt.config_path is None:  # no sources file here: no sinks known, none to judge gone
        return {"skipped": "no sources file on this machine"}
    s = rt.settings
    config = rt.config()
    sinks = {sink.name: sink for sink in notify_config(config).sinks}
    counts = {"groups": 0, "sink_keys": 0, "destination_shares": 0, "health": 0}
    for stream in STREAM_CAPS:
        counts["groups"] += _drop_groups(rt, stream, sinks)
    counts["sink_keys"] = _drop_sink_keys(rt, sinks)
    for sink in sinks.values():
        counts["destination_shares"] += _drop_removed_destinations(rt, sink)
    health = keys.NOTIFY_HEALTH.key(s)
    down = [str(n) for n in rt.redis.hkeys(health)]
    gone = [n for n, source in rt.sources.get_many(down).items() if source is None]
    counts["health"] = int(rt.redis.hdel(health, *gone)) if gone else 0
    return counts


def _drop_groups(rt: Runtime, stream: str, sinks: dict[str, Sink]) -> int:
    key = stream_key(rt.settings, stream)
    try:
        groups = rt.redis.xinfo_groups(key)
    except redis.ResponseError:  # no such stream
        return 0
    dropped = 0
    for group in groups:
        name = str(group.get("name", ""))
        if not name.startswith("notify:"):
            continue
        sink = sinks.get(name[len("notify:") :])
        if sink is None or stream not in sink.streams:
            rt.redis.xgroup_destroy(key, name)
            log.info("[notify] cleanup: group %r on %r removed", name, stream)
            dropped += 1
    return dropped


def _drop_sink_keys(rt: Runtime, sinks: dict[str, Sink]) -> int:
    s = rt.settings
    found: list[str] = []
    for spec in (*SINK_KEYS, keys.NOTIFY_DUE):
        pattern = spec.regex()
        for key in rt.redis.scan_iter(match=spec.glob(s), count=500):
            match = pattern.match(str(key)[len(s.prefix) :])
            if match and match.group(1) not in sinks:
                found.append(str(key))
    for start in range(0, len(found), 500):
        rt.redis.delete(*found[start : start + 500])
    return len(found)


def _drop_removed_destinations(rt: Runtime, sink: Sink) -> int:
    """Shares of destinations no longer in the sink: cleared (a message nobody owes is acked)."""
    s = rt.settings
    if any(d.unset for d in sink.destinations):
        return 0  # which destinations its variable holds is known only where it is set
    current = {d.id for d in sink.destinations}
    k = sink_keys(s, sink)
    fields = [str(f) for f in rt.redis.hkeys(k.state)]
    gone = [f for f in fields if f.startswith(PER_DEST) and f.split(":", 1)[1] not in current]
    if gone:  # a removed destination's label and counters
        rt.redis.hdel(k.state, *gone)
    removed = 0
    for raw_key, raw in cast(dict[str, str], rt.redis.hgetall(k.outbox)).items():
        stale = set(json.loads(raw).get("d", {})) - current
        for dest_id in stale:
            ghost = _ghost(sink, dest_id)
            settle(
                rt,
                ghost,
                ghost.destinations[-1],
                sink_keys(s, ghost),
                [{"k": raw_key, "o": "drop"}],
                {"delivered": 0, "retried": 0, "dead": 0},
            )
            removed += 1
    return removed


def _ghost(sink: Sink, dest_id: str) -> Sink:
    """The sink with a removed destination put back, to address that destination's share."""
    return replace(sink, destinations=(*sink.destinations, Destination(dest_id, "", "removed")))


declare_cleanup(notify_cleanup)
