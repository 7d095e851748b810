"""The memory guard's status sections: ``workers`` (per node, the parent and each pool child),
``task_memory`` (which task grows memory) and ``dead_letters`` (tasks quarantined after
taking their worker down)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section
from workers.core.text import duration, mb, table
from workers.guard.stats import RECYCLE_REASONS, MemoryStore

STATUS_SCAN_LIMIT = 1000
GUARD = "workers.guard"


def _scan(rt: Runtime, pattern: str) -> list[str]:
    keys: list[str] = []
    for key in rt.redis.scan_iter(match=pattern, count=500):
        keys.append(str(key))
        if len(keys) >= STATUS_SCAN_LIMIT:
            break
    return sorted(keys)


def _node_status(raw: Mapping[str, str], now: float) -> dict[str, Any]:
    parent = json.loads(raw.get("parent", "{}") or "{}")
    records = {
        int(f.split(":", 1)[1]): json.loads(v) for f, v in raw.items() if f.startswith("child:")
    }
    children = []
    for measured in parent.get("children", []):
        own = records.get(int(measured["pid"]), {})
        started = own.get("started") or measured.get("started")
        children.append(
            {
                "pid": measured["pid"],
                "rss_mb": measured.get("rss_mb"),
                "uss_mb": measured.get("uss_mb"),
                "tasks": own.get("tasks", 0),
                "age_s": round(now - started, 1) if started else None,
                "last_task": own.get("last_task"),
            }
        )
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
    prefix = keys.MEM_NODE.prefix_of(rt.settings)
    found = _scan(rt, keys.MEM_NODE.glob(rt.settings))
    now = time.time()
    nodes = {
        key[len(prefix) :]: _node_status(rt.redis.hgetall(key), now)  # type: ignore[arg-type]
        for key in found
    }
    return {"nodes": nodes, "keys": len(found), "ttl_s": rt.settings.state_ttl}


def task_memory_section(rt: Runtime) -> dict[str, Any]:
    """Per task name, memory growth across runs: the largest mean delta first."""
    prefix = keys.TASK_MEMORY.prefix_of(rt.settings)
    rows: dict[str, dict[str, Any]] = {}
    for key in _scan(rt, keys.TASK_MEMORY.glob(rt.settings)):
        raw: dict[str, str] = rt.redis.hgetall(key)  # type: ignore[assignment]
        count = int(raw.get("count", 0))

        def num(name: str, raw: dict[str, str] = raw) -> float | None:
            value = raw.get(name)
            return round(float(value), 2) if value not in (None, "") else None

        rows[key[len(prefix) :]] = {
            "count": count,
            "mean_delta_mb": round(float(raw.get("sum_delta_mb", 0)) / count, 3) if count else None,
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
    kills = len(_scan(rt, keys.KILLS.glob(rt.settings)))
    return {**dead.size().as_dict(), "latest": dead.latest(shown), "kill_counters": kills}


def render_workers(section: dict[str, Any]) -> list[str]:
    rows = []
    for node, info in section.get("nodes", {}).items():
        parent = info.get("parent", {})
        rec = info.get("recycles", {})
        recycles = ", ".join(f"{k} {v}" for k, v in rec.items() if v) or "none"
        rows.append(
            [
                node,
                "parent",
                parent.get("pid"),
                mb(parent.get("rss_mb")),
                mb(parent.get("uss_mb")),
                "",
                "",
                f"recycles: {recycles}",
            ]
        )
        for child in info.get("children", []):
            rows.append(
                [
                    "",
                    "child",
                    child.get("pid"),
                    mb(child.get("rss_mb")),
                    mb(child.get("uss_mb")),
                    child.get("tasks"),
                    duration(child.get("age_s")),
                    child.get("last_task"),
                ]
            )
    return table(
        ["node", "role", "pid", "rss", "uss", "tasks", "age", "last task / recycles"], rows
    )


def render_task_memory(section: dict[str, Any]) -> list[str]:
    tasks = sorted(
        section.get("tasks", {}).items(), key=lambda kv: -float(kv[1].get("mean_delta_mb") or 0)
    )[:10]
    return table(
        ["task (top 10 by mean delta)", "runs", "mean Δ", "max Δ", "last Δ", "kills"],
        [
            [
                name,
                s.get("count"),
                mb(s.get("mean_delta_mb")),
                mb(s.get("max_delta_mb")),
                mb(s.get("last_delta_mb")),
                s.get("kills"),
            ]
            for name, s in tasks
        ],
    )


def render_dead_letters(section: dict[str, Any]) -> list[str]:
    lines = [f"  {section.get('size', 0)}/{section.get('cap')} in {section.get('key')}"]
    for item in section.get("latest", [])[:5]:
        lines.append(
            f"  - {item.get('at')} {item.get('task')} {item.get('id')} "
            f"args={item.get('args')} kills={item.get('kills')} "
            f"memory={mb(item.get('memory_mb'))} {item.get('reason', '')}"
        )
    return lines


declare_section(
    StatusSection("workers", workers_section, render_workers, declared_metrics(GUARD, "workers"))
)
declare_section(
    StatusSection(
        "task_memory",
        task_memory_section,
        render_task_memory,
        declared_metrics(GUARD, "task_memory"),
    )
)
declare_section(
    StatusSection(
        "dead_letters",
        dead_letters_section,
        render_dead_letters,
        declared_metrics(GUARD, "dead_letters"),
    )
)
