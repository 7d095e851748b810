"""``watchkeeper status``: one JSON object whose top-level keys are sections.

Each section is a plain function ``section(rt) -> JSON-able`` reading Redis only, so status
works from any machine that reaches the Redis, while workers run or not. Stages add their
section to ``SECTIONS``. A section that fails reports ``{"error": ...}`` instead of hiding the
others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from workers.bounded import SeenSet
from workers.config import SiteSource
from workers.location_health import location_status
from workers.memory_stats import dead_letters_section, task_memory_section, workers_section
from workers.runtime import Runtime
from workers.sources import poll_status
from workers.tcp_stats import tcp_section

Section = Callable[[Runtime], Any]

STREAMS = ("alerts", "logs", "listings")


def stream_caps(rt: Runtime) -> dict[str, int]:
    s = rt.settings
    return {"alerts": s.max_alerts, "logs": s.max_logs, "listings": s.max_listings}


def redis_section(rt: Runtime) -> dict[str, Any]:
    """Used memory, key counts by kind (the part after the prefix) and each stream's size."""
    info = rt.redis.info("memory")
    kinds: Counter[str] = Counter()
    prefix = rt.settings.prefix
    for key in rt.redis.scan_iter(match=prefix + "*", count=1000):
        kinds[str(key)[len(prefix):].split(":", 1)[0]] += 1
    caps = stream_caps(rt)
    streams = {name: {"size": int(rt.redis.xlen(rt.settings.key("stream", name))),
                      "cap": caps[name]} for name in STREAMS}
    return {
        "used_memory": int(info.get("used_memory", 0)),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": int(info.get("maxmemory", 0)),
        "keys_total": int(rt.redis.dbsize()),
        "keys_by_kind": dict(sorted(kinds.items())),
        "streams": streams,
    }


def sources_section(rt: Runtime) -> dict[str, Any]:
    """Per configured source: its kind, URL, stored state and seen-set size against the cap."""
    out: dict[str, Any] = {}
    for source in rt.config().sources:
        state = rt.redis.hgetall(rt.settings.key("src", source.name))
        seen = SeenSet(rt.redis, rt.settings.key("seen", source.name), rt.settings.max_seen)
        out[source.name] = {
            "kind": source.kind,
            "url": source.url,
            "interval_s": source.interval,
            "state": state,
            "seen": seen.size().as_dict(),
            **poll_status(rt, source),
        }
        if isinstance(source, SiteSource):
            from tasks.scrape import site_status  # a stage module: imported only when needed

            out[source.name].update(site_status(rt, source))
    return out


SECTIONS: dict[str, Section] = {
    "redis": redis_section,
    "sources": sources_section,
    "locations": location_status,
    "workers": workers_section,
    "task_memory": task_memory_section,
    "dead_letters": dead_letters_section,
    "tcp": tcp_section,
}


def collect_status(rt: Runtime) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for name, section in SECTIONS.items():
        try:
            status[name] = section(rt)
        except Exception as exc:  # one broken section must not hide the others
            status[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return status


def render_text(status: dict[str, Any]) -> str:
    """A readable rendering of any status object: one block per section."""
    lines: list[str] = []
    for name, section in status.items():
        lines.append(f"== {name}")
        lines.extend(_render(section, "  "))
    return "\n".join(lines)


def _render(value: Any, indent: str) -> list[str]:
    if isinstance(value, dict):
        if not value:
            return [indent + "(none)"]
        out: list[str] = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{indent}{key}:")
                out.extend(_render(item, indent + "  "))
            else:
                out.append(f"{indent}{key}: {item if item not in ({}, []) else '-'}")
        return out
    if isinstance(value, list):
        if not value:
            return [indent + "(none)"]
        out = []
        for item in value:
            rendered = _render(item, indent + "  ")
            out.append(indent + "- " + rendered[0].strip())
            out.extend(rendered[1:])
        return out
    return [indent + str(value)]
