"""The ``tasks`` dead-letter box: tasks quarantined after taking their worker down.

Retry sends the task again (a new task id, so its kill count starts afresh) with the args it
had when it was quarantined — kept when they were short JSON; without them a letter can only be
dropped.
"""

from __future__ import annotations

import json
from typing import Any, cast

from workers.core.dead_letters import DeadLetterBox, Dispatch, declare_box
from workers.core.runtime import Runtime
from workers.guard.stats import MemoryStore


def _key(rt: Runtime) -> str:
    return MemoryStore(rt.redis, rt.settings).dead_letters().key


def _raw(rt: Runtime) -> list[str]:
    return cast(list[str], rt.redis.lrange(_key(rt), 0, -1))


def _find(rt: Runtime, ref: str) -> tuple[str, dict[str, Any]] | None:
    for raw in _raw(rt):
        record = json.loads(raw)
        if record.get("id") == ref:
            return raw, record
    return None


def letters(rt: Runtime, count: int) -> list[dict[str, Any]]:
    rows = MemoryStore(rt.redis, rt.settings).dead_letters().latest(count)
    return [
        {
            **row,
            "ref": row.get("id", ""),
            "what": f"{row.get('task')} {row.get('args', '')}",
            "when": row.get("at", ""),
            "why": f"took its worker down {row.get('kills')} times"
            + (f" ({row['reason']})" if row.get("reason") else ""),
            "retryable": "call" in row,
        }
        for row in rows
    ]


def retry(rt: Runtime, ref: str, dispatch: Dispatch) -> int:
    found = _find(rt, ref)
    if found is None:
        return 0
    raw, record = found
    call = record.get("call")
    if not isinstance(call, dict):
        raise ValueError(f"dead letter {ref}: its arguments were not kept; drop it instead")
    dispatch(str(record["task"]), list(call.get("args", [])), dict(call.get("kwargs", {})))
    return int(rt.redis.lrem(_key(rt), 1, raw))


def drop(rt: Runtime, ref: str) -> int:
    found = _find(rt, ref)
    if found is None:
        return 0
    return int(rt.redis.lrem(_key(rt), 1, found[0]))


def size(rt: Runtime) -> dict[str, Any]:
    return MemoryStore(rt.redis, rt.settings).dead_letters().size().as_dict()


BOX = declare_box(DeadLetterBox("tasks", "Tasks", letters, retry, drop, size))
