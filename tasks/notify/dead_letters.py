"""A sink's dead letters: messages a destination gave up on, kept (capped) to retry or drop.

A dead letter keeps the rendered message, so ``watchkeeper notify retry`` can send it again
even after the stream trimmed the entry. Its ``ref`` (``<message key>#<destination id>``)
names it on the command line.
"""

from __future__ import annotations

import json
from typing import Any, cast

from tasks.notify.config import Sink
from tasks.notify.outbox import SinkKeys, sink_keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script

_REQUEUE = Script("tasks.notify", "requeue")


def dead_letters(rt: Runtime, sink: Sink, count: int | None = None) -> list[dict[str, Any]]:
    """Newest first, each with its destination's label."""
    k = sink_keys(rt.settings, sink)
    end = -1 if count is None else count - 1
    rows = [json.loads(r) for r in cast(list[str], rt.redis.lrange(k.dead, 0, end))]
    labels = {d.id: d.label for d in sink.destinations}
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
