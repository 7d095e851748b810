"""The memory page's data: each process's series over the last 24 h, shaped for uPlot.

Per worker node one chart: the parent and each pool child (USS), with recycles and hard stops
marked where the node's counters grew between two points; one for the TCP listener; one for
Redis ``used_memory`` (as the node with the most points saw it). A recycled child is a new
pid, so a new line: the newest ``MAX_CHILD_LINES`` pids are drawn.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.series import read_points

WINDOW_S = 24 * 3600
MAX_CHILD_LINES = 16
SCAN_LIMIT = 200


def chart(points: list[dict[str, Any]], lines: dict[str, str]) -> dict[str, Any]:
    """``{"t": [...], "series": {label: [...]}}`` for the point fields named in ``lines``."""
    return {
        "t": [p["t"] for p in points],
        "series": {label: [p.get(f) for p in points] for label, f in lines.items()},
        "marks": [],
    }


def node_chart(points: list[dict[str, Any]]) -> dict[str, Any]:
    last_seen: dict[str, int] = {}
    for i, p in enumerate(points):
        for pid in p.get("children", {}):
            last_seen[pid] = i
    pids = sorted(last_seen, key=lambda pid: last_seen[pid])[-MAX_CHILD_LINES:]
    out = chart(points, {"parent": "parent"})
    for pid in sorted(pids, key=int):
        out["series"][f"child {pid}"] = [p.get("children", {}).get(pid) for p in points]
    out["marks"] = marks(points)
    out["children"] = len(pids)
    return out


def marks(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a recycle counter grew: ``{"t", "label"}`` (hard stops called so)."""
    found = []
    for before, after in itertools.pairwise(points):
        grew = {
            reason: int(n) - int(before.get("recycles", {}).get(reason, 0))
            for reason, n in after.get("recycles", {}).items()
        }
        for reason, n in grew.items():
            if n > 0:
                what = "hard stop" if reason == "hard" else f"recycle ({reason})"
                found.append({"t": after["t"], "label": f"{what} x{n}" if n > 1 else what})
    return found


def memory_data(rt: Runtime, window_s: float = WINDOW_S) -> dict[str, Any]:
    since = time.time() - window_s
    prefix = keys.MEM_SERIES.prefix_of(rt.settings)
    names = []
    for key in rt.redis.scan_iter(match=keys.MEM_SERIES.glob(rt.settings), count=500):
        names.append(str(key)[len(prefix) :])
        if len(names) >= SCAN_LIMIT:
            break
    series = {n: read_points(rt.redis, keys.MEM_SERIES.key(rt.settings, n), since) for n in names}
    listener = series.pop("listener", [])
    nodes = {name: node_chart(points) for name, points in sorted(series.items()) if points}
    fullest = max(series.values(), key=len, default=[])
    return {
        "nodes": nodes,
        "listener": chart(listener, {"listener": "listener"}) if listener else None,
        "redis": chart(fullest, {"used_memory": "redis_mb"}) if fullest else None,
        "interval_s": rt.settings.memory_series_interval,
    }
