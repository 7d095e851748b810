"""``watchkeeper status``: one JSON object whose top-level keys are sections.

The sections are declared by the packages they report on (``workers.core.status_sections``);
this module adds the ``redis`` section, collects them all, and renders any section without a
renderer of its own generically, so nothing declared is ever hidden. A section that fails
reports ``{"error": ...}`` instead of hiding the others.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import workers.guard.status
import workers.ops.sources.status
import workers.polling.dispatch_status
import workers.polling.status
import workers.tcp.status  # noqa: F401 (these declare the runtime's sections)
from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import SECTIONS, StatusSection, declare_section
from workers.core.text import table
from workers.ops import topology
from workers.store.streams import ledger_bytes

ORDER = (
    "redis",
    "sources",
    "registry",
    "locations",
    "notify",
    "workers",
    "task_memory",
    "dead_letters",
    "tcp",
)
"""Sections shown first, in this order; others follow in declaration order."""

STREAMS = ("alerts", "logs", "listings", "locations", "changes", "health")


KEYS_COUNTED = 100_000
"""Keys the ``redis`` section reads at most to count keys by kind; past that (a million
sources hold several million keys: a full count took 17 s) the counts are scaled up from
those, which ``SCAN`` returns in hash order — a fair sample — and marked estimated."""


def redis_section(rt: Runtime) -> dict[str, Any]:
    """Used memory, key counts by kind (the part after the prefix), and each stream's size
    against its cap and bytes against its budget."""
    info = rt.redis.info("memory")
    kinds: Counter[str] = Counter()
    prefix = rt.settings.prefix
    total, scanned = int(rt.redis.dbsize()), 0
    for key in rt.redis.scan_iter(match=prefix + "*", count=1000):
        kinds[str(key)[len(prefix) :].split(":", 1)[0]] += 1
        scanned += 1
        if scanned >= KEYS_COUNTED:
            break
    estimated = scanned >= KEYS_COUNTED and total > scanned
    if estimated:
        kinds = Counter({k: round(v * total / scanned) for k, v in kinds.items()})
    streams = {
        name: {
            "size": int(rt.redis.xlen(keys.STREAM.key(rt.settings, name))),
            "cap": rt.settings.stream_cap(name),
            "bytes": ledger_bytes(rt.redis, keys.STREAM_BYTES.key(rt.settings, name)),
            "budget": rt.settings.stream_budget(name),
        }
        for name in STREAMS
    }
    try:
        replication: dict[str, Any] = topology.topology(rt)
    except Exception as exc:  # the topology must not hide memory and keys
        replication = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "used_memory": int(info.get("used_memory", 0)),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": int(info.get("maxmemory", 0)),
        "keys_total": total,
        "keys_by_kind": dict(sorted(kinds.items())),
        "keys_by_kind_estimated": estimated,
        "streams": streams,
        "topology": replication,
    }


def render_redis(section: dict[str, Any]) -> list[str]:
    sampled = " (by kind: estimated from a sample)" if section.get("keys_by_kind_estimated") else ""
    lines = [
        f"  used memory {section.get('used_memory_human')}, keys "
        f"{section.get('keys_total')}{sampled}: "
        + ", ".join(f"{k} {v}" for k, v in section.get("keys_by_kind", {}).items())
    ]
    lines += table(
        ["stream", "size", "cap", "bytes", "budget"],
        [
            [n, s.get("size"), s.get("cap"), s.get("bytes"), s.get("budget")]
            for n, s in section.get("streams", {}).items()
        ],
    )
    replication = section.get("topology") or {}
    if "error" in replication:
        lines.append(f"  topology: (cannot read: {replication['error']})")
    elif replication:
        lines += topology.render(replication)
    return lines


declare_section(
    StatusSection("redis", redis_section, render_redis, declared_metrics("workers.ops", "redis"))
)


def sections() -> list[StatusSection]:
    declared = list(SECTIONS)
    first = [s for name in ORDER for s in declared if s.name == name]
    return first + [s for s in declared if s not in first]


def collect_status(rt: Runtime) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for section in sections():
        try:
            status[section.name] = section.collect(rt)
        except Exception as exc:  # one broken section must not hide the others
            status[section.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return status


def render_text(status: dict[str, Any]) -> str:
    """Every section as text: its own renderer, or a generic rendering of its data."""
    renderers = {s.name: s.render for s in SECTIONS}
    out: list[str] = []
    for name, section in status.items():
        out.append(f"== {name}")
        renderer = renderers.get(name)
        if not isinstance(section, dict) or "error" in section or renderer is None:
            out.extend(_render(section, "  "))
            continue
        try:
            out.extend(renderer(section))
        except Exception as exc:  # a surprising shape must not hide the other sections
            out.append(f"  (cannot render: {exc})")
            out.extend(_render(section, "  "))
    return "\n".join(out)


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
