"""A sink's dead letters: messages a destination gave up on, kept (capped) to retry or drop.

A dead letter keeps the rendered message, so ``watchkeeper notify retry`` can send it again
even after the stream trimmed the entry. Its ``ref`` (``<message key>#<destination id>``)
names it on the command line.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from tasks.notify.config import Sink, notify_config
from tasks.notify.outbox import SinkKeys, sink_keys
from tasks.notify.status import shown_destinations
from workers.core.dead_letters import DeadLetterBox, Dispatch, declare_box
from workers.core.runtime import Runtime
from workers.store.scripts import Script

_REQUEUE = Script("tasks.notify", "requeue")


def dead_letters(rt: Runtime, sink: Sink, count: int | None = None) -> list[dict[str, Any]]:
    """Newest first, each with its destination's label."""
    k = sink_keys(rt.settings, sink)
    end = -1 if count is None else count - 1
    rows = [json.loads(r) for r in cast(list[str], rt.redis.lrange(k.dead, 0, end))]
    labels = dict(shown_destinations(sink, cast(dict[str, str], rt.redis.hgetall(k.state))))
    for row in rows:
        row["destination"] = labels.get(row.get("dest", ""), f"(removed {row.get('dest')})")
    return rows


def retry(rt: Runtime, sink: Sink, ref: str | None) -> tuple[int, int]:
    """Requeue one dead letter (by ref) or all (``None``); returns (requeued, left: their
    destination is no longer configured)."""
    k: SinkKeys = sink_keys(rt.settings, sink)
    requeued, left = _REQUEUE(
        rt.redis,
        [k.state, k.outbox, k.queue, k.dead, *k.due],
        [json.dumps([d.id for d in sink.destinations]), ref or "*"],
    )
    return int(requeued), int(left)


def drop(rt: Runtime, sink: Sink, ref: str | None) -> int:
    """Remove one dead letter (by ref) or all (``None``); returns how many."""
    k = sink_keys(rt.settings, sink)
    if ref is None:
        removed = int(rt.redis.llen(k.dead))
        rt.redis.delete(k.dead)
        return removed
    removed = 0
    for raw in cast(list[str], rt.redis.lrange(k.dead, 0, -1)):
        if json.loads(raw).get("ref") == ref:
            removed += int(rt.redis.lrem(k.dead, 1, raw))
    return removed


# --- the dashboard's "deliveries" box (workers.core.dead_letters) ----------------------------


def _sinks(rt: Runtime) -> tuple[Sink, ...]:
    return notify_config(rt.config()).sinks


def _split(rt: Runtime, ref: str) -> tuple[Sink, str] | None:
    name, _, own = ref.partition("/")
    sink = next((s for s in _sinks(rt) if s.name == name), None)
    return (sink, own) if sink is not None and own else None


def box_letters(rt: Runtime, count: int) -> list[dict[str, Any]]:
    """Every sink's dead letters, newest first, at most ``count``; refs are ``sink/ref``."""
    rows = [
        {
            **row,
            "ref": f"{sink.name}/{row.get('ref')}",
            "what": f"{sink.name} → {row.get('destination')}: {row.get('title', '')}",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(row.get("at") or 0))),
            "why": f"{row.get('attempts')} attempts: {row.get('reason', '')}",
            "retryable": True,
        }
        for sink in _sinks(rt)
        for row in dead_letters(rt, sink, count)
    ]
    return sorted(rows, key=lambda r: -float(r.get("at") or 0))[:count]


def box_retry(rt: Runtime, ref: str, dispatch: Dispatch) -> int:
    found = _split(rt, ref)
    return retry(rt, *found)[0] if found else 0


def box_drop(rt: Runtime, ref: str) -> int:
    found = _split(rt, ref)
    return drop(rt, *found) if found else 0


def box_size(rt: Runtime) -> dict[str, Any]:
    sinks = _sinks(rt)
    size = sum(int(rt.redis.llen(sink_keys(rt.settings, s).dead)) for s in sinks)
    return {"key": "notify:{sink}:dead", "size": size, "cap": rt.settings.notify_max_dead_letters}


BOX = declare_box(
    DeadLetterBox("deliveries", "Deliveries", box_letters, box_retry, box_drop, box_size)
)
