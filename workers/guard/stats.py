"""Where the memory guard's numbers live in Redis, and the ``status`` sections that read them.

Every key is bounded: one HASH per worker node and one per task name (both expire
``WATCHKEEPER_STATE_TTL`` after their last update, so a retired node or a renamed task
disappears on its own), one HASH per task id that took its worker down (same TTL), and the
dead-letter list capped at ``WATCHKEEPER_MAX_DEAD_LETTERS``.

Keys (prefix ``wk:``):

* ``wk:mem:node:{node}`` — field ``parent`` (JSON: the worker process, its pool and the live
  children it measured), ``child:{pid}`` (JSON written by that pool child: tasks run, start
  time, last task), counters ``recycles:{reason}`` and ``warnings``;
* ``wk:stats:mem:{task name}`` — count, sum/max/last memory delta, last before/after, peak;
* ``wk:kills:{task id}`` — how often that task took its worker down, and how far it got;
* ``wk:dead`` — newest-first dead letters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.store.lists import CappedList
from workers.store.scripts import Script, execute
from workers.store.series import queue_point

RECYCLE_REASONS = ("memory", "max_tasks", "hard", "lost")
ARGS_SUMMARY_CHARS = 200
CALL_CHARS = 4096
"""Largest task call (args and kwargs as JSON) a dead letter keeps to send it again."""
STATUS_SCAN_LIMIT = 1000

_TASK_STATS = Script("workers.guard", "task_stats")


@dataclass
class TaskMemory:
    """Per task name, what this process saw since its last flush (merged into Redis)."""

    count: int = 0
    sum_delta: float = 0.0
    max_delta: float = float("-inf")
    max_after: float = 0.0
    max_peak: float | None = None
    last_delta: float = 0.0
    last_before: float = 0.0
    last_after: float = 0.0
    last_peak: float | None = None

    def add(self, before: float, after: float, peak: float | None) -> None:
        delta = after - before
        self.count += 1
        self.sum_delta += delta
        self.max_delta = max(self.max_delta, delta)
        self.max_after = max(self.max_after, after)
        if peak is not None:
            self.max_peak = peak if self.max_peak is None else max(self.max_peak, peak)
        self.last_delta, self.last_before, self.last_after, self.last_peak = (
            delta,
            before,
            after,
            peak,
        )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def args_summary(args: Any, kwargs: Any) -> str:
    """A short, bounded description of a task's arguments for the dead-letter list."""
    text = f"{args!s} {kwargs!s}" if kwargs not in (None, "", "{}", {}) else f"{args!s}"
    return text if len(text) <= ARGS_SUMMARY_CHARS else text[: ARGS_SUMMARY_CHARS - 1] + "…"


def call_record(call: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"args": [...], "kwargs": {...}}`` if it is JSON within ``CALL_CHARS``, else None."""
    if call is None:
        return None
    try:
        text = json.dumps({"args": list(call["args"]), "kwargs": dict(call["kwargs"])})
    except (TypeError, ValueError, KeyError):
        return None
    return json.loads(text) if len(text) <= CALL_CHARS else None


@dataclass
class MemoryStore:
    """Writes and reads the guard's keys; every method is one round trip (or one pipeline)."""

    client: redis.Redis
    settings: Settings

    def node_key(self, node: str) -> str:
        return keys.MEM_NODE.key(self.settings, node)

    def task_key(self, name: str) -> str:
        return keys.TASK_MEMORY.key(self.settings, name)

    def kills_key(self, task_id: str) -> str:
        return keys.KILLS.key(self.settings, task_id)

    def dead_letters(self) -> CappedList:
        return CappedList(
            self.client, keys.DEAD_LETTERS.key(self.settings), self.settings.max_dead_letters
        )

    def flush(
        self, node: str, pid: int, child: Mapping[str, Any] | None, tasks: Mapping[str, TaskMemory]
    ) -> None:
        """Merge per-task-name statistics and this process's record in one pipeline."""
        ttl, now = self.settings.state_ttl, f"{time.time():.3f}"
        pipe = self.client.pipeline(transaction=False)
        for name, agg in tasks.items():
            _TASK_STATS.queue(
                pipe,
                [self.task_key(name)],
                [
                    ttl,
                    agg.count,
                    _num(agg.sum_delta),
                    _num(agg.max_delta),
                    _num(agg.max_after),
                    _num(agg.max_peak),
                    _num(agg.last_delta),
                    _num(agg.last_before),
                    _num(agg.last_after),
                    _num(agg.last_peak),
                    now,
                ],
            )
        if child is not None:
            pipe.hset(self.node_key(node), f"child:{pid}", json.dumps(child))
            pipe.expire(self.node_key(node), ttl)
        execute(pipe)

    def series_key(self, process: str) -> str:
        return keys.MEM_SERIES.key(self.settings, process)

    def add_point(self, node: str, record: Mapping[str, Any]) -> None:
        """One point of the node's memory series: parent and children USS (RSS where USS is
        unreadable), the recycle counters so far (the chart marks where they grew) and Redis's
        ``used_memory`` as this node saw it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.node_key(node))
        pipe.info("memory")
        counters, info = pipe.execute()

        def mem(proc: Mapping[str, Any]) -> Any:
            return proc.get("uss_mb") if proc.get("uss_mb") is not None else proc.get("rss_mb")

        point = {
            "t": round(time.time(), 1),
            "parent": mem(record),
            "children": {str(c["pid"]): mem(c) for c in record.get("children", [])},
            "recycles": {r: int(counters.get(f"recycles:{r}", 0)) for r in RECYCLE_REASONS},
            "redis_mb": round(int(info.get("used_memory", 0)) / 1048576, 2),
        }
        s = self.settings
        pipe = self.client.pipeline(transaction=False)
        queue_point(pipe, self.series_key(node), point, s.memory_series_points, s.state_ttl)
        pipe.execute()

    def count(self, node: str, counter: str, by: int = 1) -> None:
        key = self.node_key(node)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, counter, by)
        pipe.expire(key, self.settings.state_ttl)
        pipe.execute()

    def publish_parent(
        self, node: str, record: Mapping[str, Any], live_pids: Iterable[int]
    ) -> None:
        """The node's own record; drops ``child:{pid}`` fields of children no longer alive."""
        key = self.node_key(node)
        live = {f"child:{pid}" for pid in live_pids}
        fields: list[str] = self.client.hkeys(key)  # type: ignore[assignment]
        stale = [f for f in fields if f.startswith("child:") and f not in live]
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, "parent", json.dumps(record))
        if stale:
            pipe.hdel(key, *stale)
        pipe.expire(key, self.settings.state_ttl)
        pipe.execute()

    def record_kill(
        self, task_id: str, name: str, args: str, mem_mb: float | None, reason: str
    ) -> int:
        """Count one worker kill against ``task_id``; return how many it has now."""
        key, task_key = self.kills_key(task_id), self.task_key(name)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "count", 1)
        pipe.hset(
            key, mapping={"name": name, "args": args, "reason": reason, "at": f"{time.time():.3f}"}
        )
        if mem_mb is not None:
            pipe.hset(key, "last_mem_mb", f"{mem_mb:.1f}")
        pipe.expire(key, self.settings.state_ttl)
        pipe.hincrby(task_key, "kills", 1)
        pipe.expire(task_key, self.settings.state_ttl)
        return int(pipe.execute()[0])

    def kills(self, task_id: str) -> dict[str, str]:
        return self.client.hgetall(self.kills_key(task_id))  # type: ignore[return-value]

    def dead_letter(
        self,
        task_id: str,
        name: str,
        args: str,
        kills: Mapping[str, str],
        node: str,
        call: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Quarantine a task; ``call`` (its args and kwargs) is kept when it is JSON and short,
        so the task can be sent again (the dashboard's "retry")."""
        mem = kills.get("last_mem_mb")
        record: dict[str, Any] = {
            "task": name,
            "id": task_id,
            "args": args,
            "kills": int(kills.get("count", 0)),
            "memory_mb": float(mem) if mem else None,
            "reason": kills.get("reason", ""),
            "node": node,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ts": round(time.time(), 3),
        }
        kept = call_record(call)
        if kept is not None:
            record["call"] = kept
        self.dead_letters().push(record)
        return record
