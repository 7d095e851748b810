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
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.bounded import CappedList
from workers.runtime import Runtime
from workers.settings import Settings

RECYCLE_REASONS = ("memory", "max_tasks", "hard", "lost")
ARGS_SUMMARY_CHARS = 200
STATUS_SCAN_LIMIT = 1000

_TASK_STATS = """
local k = KEYS[1]
redis.call('HINCRBY', k, 'count', ARGV[2])
redis.call('HINCRBYFLOAT', k, 'sum_delta_mb', ARGV[3])
local function hmax(f, v)
  if v == '' then return end
  local cur = tonumber(redis.call('HGET', k, f))
  if cur == nil or tonumber(v) > cur then redis.call('HSET', k, f, v) end
end
hmax('max_delta_mb', ARGV[4])
hmax('max_after_mb', ARGV[5])
hmax('max_peak_mb', ARGV[6])
redis.call('HSET', k, 'last_delta_mb', ARGV[7], 'last_before_mb', ARGV[8],
           'last_after_mb', ARGV[9], 'updated', ARGV[11])
if ARGV[10] ~= '' then redis.call('HSET', k, 'last_peak_mb', ARGV[10]) end
redis.call('EXPIRE', k, ARGV[1])
return 1
"""


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
            delta, before, after, peak)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def args_summary(args: Any, kwargs: Any) -> str:
    """A short, bounded description of a task's arguments for the dead-letter list."""
    text = f"{args!s} {kwargs!s}" if kwargs not in (None, "", "{}", {}) else f"{args!s}"
    return text if len(text) <= ARGS_SUMMARY_CHARS else text[:ARGS_SUMMARY_CHARS - 1] + "…"


@dataclass
class MemoryStore:
    """Writes and reads the guard's keys; every method is one round trip (or one pipeline)."""

    client: redis.Redis
    settings: Settings
    _script: Any = field(default=None, repr=False)

    def node_key(self, node: str) -> str:
        return self.settings.key("mem", "node", node)

    def task_key(self, name: str) -> str:
        return self.settings.key("stats", "mem", name)

    def kills_key(self, task_id: str) -> str:
        return self.settings.key("kills", task_id)

    def dead_letters(self) -> CappedList:
        return CappedList(self.client, self.settings.key("dead"), self.settings.max_dead_letters)

    def flush(self, node: str, pid: int, child: Mapping[str, Any] | None,
              tasks: Mapping[str, TaskMemory]) -> None:
        """Merge per-task-name statistics and this process's record in one pipeline."""
        if self._script is None:
            self._script = self.client.register_script(_TASK_STATS)
        ttl, now = self.settings.state_ttl, f"{time.time():.3f}"
        pipe = self.client.pipeline(transaction=False)
        for name, agg in tasks.items():
            self._script(keys=[self.task_key(name)], client=pipe, args=[
                ttl, agg.count, _num(agg.sum_delta), _num(agg.max_delta), _num(agg.max_after),
                _num(agg.max_peak), _num(agg.last_delta), _num(agg.last_before),
                _num(agg.last_after), _num(agg.last_peak), now])
        if child is not None:
            pipe.hset(self.node_key(node), f"child:{pid}", json.dumps(child))
            pipe.expire(self.node_key(node), ttl)
        pipe.execute()

    def count(self, node: str, counter: str, by: int = 1) -> None:
        key = self.node_key(node)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, counter, by)
        pipe.expire(key, self.settings.state_ttl)
        pipe.execute()

    def publish_parent(self, node: str, record: Mapping[str, Any],
                       live_pids: Iterable[int]) -> None:
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

    def record_kill(self, task_id: str, name: str, args: str, mem_mb: float | None,
                    reason: str) -> int:
        """Count one worker kill against ``task_id``; return how many it has now."""
        key, task_key = self.kills_key(task_id), self.task_key(name)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "count", 1)
        pipe.hset(key, mapping={"name": name, "args": args, "reason": reason,
                                "at": f"{time.time():.3f}"})
        if mem_mb is not None:
            pipe.hset(key, "last_mem_mb", f"{mem_mb:.1f}")
        pipe.expire(key, self.settings.state_ttl)
        pipe.hincrby(task_key, "kills", 1)
        pipe.expire(task_key, self.settings.state_ttl)
        return int(pipe.execute()[0])

    def kills(self, task_id: str) -> dict[str, str]:
        return self.client.hgetall(self.kills_key(task_id))  # type: ignore[return-value]

    def dead_letter(self, task_id: str, name: str, args: str, kills: Mapping[str, str],
                    node: str) -> dict[str, Any]:
        mem = kills.get("last_mem_mb")
        record = {
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
        self.dead_letters().push(record)
        return record


# --- status sections -------------------------------------------------------------------


def _scan(rt: Runtime, pattern: str) -> list[str]:
    keys: list[str] = []
    for key in rt.redis.scan_iter(match=pattern, count=500):
        keys.append(str(key))
        if len(keys) >= STATUS_SCAN_LIMIT:
            break
    return sorted(keys)


def _node_status(raw: Mapping[str, str], now: float) -> dict[str, Any]:
    parent = json.loads(raw.get("parent", "{}") or "{}")
    records = {int(f.split(":", 1)[1]): json.loads(v) for f, v in raw.items()
               if f.startswith("child:")}
    children = []
    for measured in parent.get("children", []):
        own = records.get(int(measured["pid"]), {})
        started = own.get("started") or measured.get("started")
        children.append({
            "pid": measured["pid"],
            "rss_mb": measured.get("rss_mb"),
            "uss_mb": measured.get("uss_mb"),
            "tasks": own.get("tasks", 0),
            "age_s": round(now - started, 1) if started else None,
            "last_task": own.get("last_task"),
        })
    updated = parent.get("updated")
    return {
        "parent": {k: parent.get(k) for k in ("pid", "rss_mb", "uss_mb", "pool", "guard")},
        "children": children,
        "recycles": {r: int(raw.get(f"recycles:{r}", 0)) for r in RECYCLE_REASONS},
        "warnings": int(raw.get("warnings", 0)),
        "updated_s_ago": round(now - updated, 1) if updated else None,
    }


def workers_section(rt: Runtime) -> dict[str, Any]:
    """Per node: the parent's memory, each pool child (pid, rss, uss, tasks, age), recycles."""
    prefix = rt.settings.key("mem", "node", "")
    keys = _scan(rt, prefix + "*")
    now = time.time()
    nodes = {key[len(prefix):]: _node_status(rt.redis.hgetall(key), now)  # type: ignore[arg-type]
             for key in keys}
    return {"nodes": nodes, "keys": len(keys), "ttl_s": rt.settings.state_ttl}


def task_memory_section(rt: Runtime) -> dict[str, Any]:
    """Per task name, memory growth across runs: the largest mean delta first."""
    prefix = rt.settings.key("stats", "mem", "")
    rows: dict[str, dict[str, Any]] = {}
    for key in _scan(rt, prefix + "*"):
        raw: dict[str, str] = rt.redis.hgetall(key)  # type: ignore[assignment]
        count = int(raw.get("count", 0))

        def num(name: str, raw: dict[str, str] = raw) -> float | None:
            value = raw.get(name)
            return round(float(value), 2) if value not in (None, "") else None

        rows[key[len(prefix):]] = {
            "count": count,
            "mean_delta_mb": round(float(raw.get("sum_delta_mb", 0)) / count, 3) if count
            else None,
            "max_delta_mb": num("max_delta_mb"),
            "last_delta_mb": num("last_delta_mb"),
            "last_after_mb": num("last_after_mb"),
            "max_after_mb": num("max_after_mb"),
            "max_peak_mb": num("max_peak_mb"),
            "kills": int(raw.get("kills", 0)),
        }
    ordered = sorted(rows.items(), key=lambda kv: -(kv[1]["mean_delta_mb"] or 0.0))
    return {"tasks": dict(ordered), "keys": len(rows), "ttl_s": rt.settings.state_ttl}


def dead_letters_section(rt: Runtime, shown: int = 20) -> dict[str, Any]:
    """Tasks quarantined after taking their worker down too often, newest first."""
    store = MemoryStore(rt.redis, rt.settings)
    dead = store.dead_letters()
    kills = len(_scan(rt, rt.settings.key("kills", "*")))
    return {**dead.size().as_dict(), "latest": dead.latest(shown), "kill_counters": kills}
