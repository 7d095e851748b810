"""The ``registry`` status section: the source registry against its cap, its revision, its
change log, and how many sources each owner holds — five reads, whatever the registry's size."""

from __future__ import annotations

from typing import Any

from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section
from workers.core.text import pairs


def registry_section(rt: Runtime) -> dict[str, Any]:
    s = rt.settings
    meta = rt.sources.meta()
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hgetall(keys.SOURCES_OWNERS.key(s))
    pipe.zcard(keys.SOURCES_LOG.key(s))
    owners, logged = pipe.execute()
    return {
        "key": keys.SOURCES.key(s),
        "size": meta.size,
        "cap": s.max_sources,
        "utilization_pct": round(100.0 * meta.size / s.max_sources, 1),
        "revision": meta.rev,
        "change_log": {"size": int(logged), "cap": s.sources_changes, "floor": meta.floor},
        "owners_count": len(owners),
        "owners": {str(k): int(v) for k, v in sorted(owners.items())},
    }


def render(section: dict[str, Any]) -> list[str]:
    log = section.get("change_log", {})
    return [
        f"  {section.get('size')}/{section.get('cap')} sources ({section.get('utilization_pct')} "
        f"%), revision {section.get('revision')}; change log {log.get('size')}/{log.get('cap')}",
        f"  owners ({section.get('owners_count')}): {pairs(section.get('owners', {}))}",
    ]


SECTION = declare_section(
    StatusSection("registry", registry_section, render, declared_metrics("workers.ops", "registry"))
)
