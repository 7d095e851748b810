"""``watchkeeper status`` on a terminal: the JSON status as a few readable tables.

Rendering only: every figure comes from ``collect_status`` (the same data as ``--json``).
Sections this module does not know are shown generically, so a new stage is never hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from workers.status import _render


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [["-" if c in (None, "") else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines if rows else [*lines, "  (none)"]


def ago(timestamp: Any) -> str:
    try:
        seconds = time.time() - float(timestamp)
    except (TypeError, ValueError):
        return "never"
    return duration(seconds) + " ago"


def duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if abs(s) < 120:
        return f"{s:.0f}s"
    if abs(s) < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def mb(value: Any) -> str:
    try:
        return f"{float(value):.1f}MB"
    except (TypeError, ValueError):
        return "-"


def _sources(section: dict[str, Any]) -> list[str]:
    rows = []
    for name, src in section.items():
        state = src.get("state", {})
        seen = src.get("seen", {})
        rows.append([name, src.get("kind"), state.get("last_status", "never polled"),
                     ago(state.get("last_ok")), state.get("errors", 0),
                     duration(state.get("backoff_s", 0)),
                     duration(src.get("next_check_in_s")) if "next_check_in_s" in src else "-",
                     f"{seen.get('size', 0)}/{seen.get('cap', '?')}",
                     (state.get("last_error") or src.get("warning") or "")[:60]])
    return table(["source", "kind", "status", "last ok", "errors", "backoff", "next",
                  "seen", "last error / warning"], rows)


def _locations(section: dict[str, Any]) -> list[str]:
    buf = section.get("buffer", {})
    batches = section.get("batches", {})
    lines = [f"  resolver {section.get('resolver')}; buffer {buf.get('size')}/{buf.get('max')}"
             f" ({buf.get('utilization_pct')}%), avg_age {buf.get('avg_age_s')}s, max_age "
             f"{buf.get('max_age_s')}s; leases {section.get('leases_outstanding')}",
             f"  batches ok {batches.get('succeeded', 0)}, retried {batches.get('retried', 0)},"
             f" failed {batches.get('failed', 0)}; located "
             + (", ".join(f"{k} {v}" for k, v in section.get("located_by_method", {}).items())
                or "none")
             + "; fallbacks "
             + (", ".join(f"{k} {v}" for k, v in section.get("fallback_by_reason", {}).items())
                or "none")]
    if section.get("last_error"):
        lines.append(f"  last error: {section['last_error']}")
    return lines


def _tcp(section: dict[str, Any]) -> list[str]:
    if not section.get("running"):
        return [f"  not running (state {section.get('state', 'never started')})"]
    d = section.get("discarded", {})
    q = section.get("queue", {})
    return [f"  {section.get('listening')} pid {section.get('pid')}: open {section.get('open')}"
            f", accepted {section.get('accepted')}, closed {section.get('closed')}, refused "
            f"{section.get('refused')}, idle timeouts {section.get('idle_timeouts')}",
            f"  lines {section.get('lines')} ({section.get('bytes')} bytes), discarded "
            + ", ".join(f"{k} {v}" for k, v in d.items())
            + f"; queue {q.get('lines')}/{q.get('cap_lines')}"
            + (f"; last write error: {section['last_write_error']}"
               if section.get("last_write_error") else "")]


def _workers(section: dict[str, Any]) -> list[str]:
    rows = []
    for node, info in section.get("nodes", {}).items():
        parent = info.get("parent", {})
        rec = info.get("recycles", {})
        recycles = ", ".join(f"{k} {v}" for k, v in rec.items() if v) or "none"
        rows.append([node, "parent", parent.get("pid"), mb(parent.get("rss_mb")),
                     mb(parent.get("uss_mb")), "", "", f"recycles: {recycles}"])
        for child in info.get("children", []):
            rows.append(["", "child", child.get("pid"), mb(child.get("rss_mb")),
                         mb(child.get("uss_mb")), child.get("tasks"),
                         duration(child.get("age_s")), child.get("last_task")])
    return table(["node", "role", "pid", "rss", "uss", "tasks", "age", "last task / recycles"],
                 rows)


def _task_memory(section: dict[str, Any]) -> list[str]:
    tasks = sorted(section.get("tasks", {}).items(),
                   key=lambda kv: -float(kv[1].get("mean_delta_mb") or 0))[:10]
    return table(["task (top 10 by mean delta)", "runs", "mean Δ", "max Δ", "last Δ", "kills"],
                 [[name, s.get("count"), mb(s.get("mean_delta_mb")), mb(s.get("max_delta_mb")),
                   mb(s.get("last_delta_mb")), s.get("kills")] for name, s in tasks])


def _dead_letters(section: dict[str, Any]) -> list[str]:
    lines = [f"  {section.get('size', 0)}/{section.get('cap')} in {section.get('key')}"]
    for item in section.get("latest", [])[:5]:
        lines.append(f"  - {item.get('at')} {item.get('task')} {item.get('id')} "
                     f"args={item.get('args')} kills={item.get('kills')} "
                     f"memory={mb(item.get('memory_mb'))} {item.get('reason', '')}")
    return lines


def _redis(section: dict[str, Any]) -> list[str]:
    lines = [f"  used memory {section.get('used_memory_human')}, keys "
             f"{section.get('keys_total')}: " + ", ".join(
                 f"{k} {v}" for k, v in section.get("keys_by_kind", {}).items())]
    lines += table(["stream", "size", "cap"], [[n, s.get("size"), s.get("cap")]
                                              for n, s in section.get("streams", {}).items()])
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "sources": _sources, "locations": _locations, "tcp": _tcp, "workers": _workers,
    "task_memory": _task_memory, "dead_letters": _dead_letters, "redis": _redis,
}


def render(status: dict[str, Any]) -> str:
    out: list[str] = []
    for name, section in status.items():
        out.append(f"== {name}")
        renderer = RENDERERS.get(name)
        if not isinstance(section, dict) or "error" in section or renderer is None:
            out.extend(_render(section, "  "))
            continue
        try:
            out.extend(renderer(section))
        except Exception as exc:  # a surprising shape must not hide the other sections
            out.append(f"  (cannot render: {exc})")
            out.extend(_render(section, "  "))
    return "\n".join(out)
