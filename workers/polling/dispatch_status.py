"""The ``beat`` status section: which beat dispatches, the broker queue against its cap, how
many dispatches were made or skipped (previous task still queued, source being polled, queue
full), the size of the due set and how many of its entries are overdue — read from the lock,
the counters each dispatch pass leaves in Redis and the due set itself."""

from __future__ import annotations

import time
from typing import Any

from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section
from workers.core.text import ago, pairs
from workers.polling.state import as_float

SKIPS = ("queued", "queue_full", "polling")

OVERDUE = 60
"""Seconds past its due time an entry counts as overdue (one ``ZCOUNT``, whatever the size:
with a million sources ``status`` shows these, not every source)."""


def beat_section(rt: Runtime) -> dict[str, Any]:
    s = rt.settings
    pipe = rt.redis.pipeline(transaction=False)
    pipe.get(keys.BEAT_LOCK.key(s))
    pipe.pttl(keys.BEAT_LOCK.key(s))
    pipe.hgetall(keys.BEAT_STATS.key(s))
    pipe.zcard(keys.BEAT_DUE.key(s))
    pipe.zcount(keys.BEAT_DUE.key(s), "-inf", time.time() - OVERDUE)
    holder, pttl, stats, due_set, overdue = pipe.execute()
    last_pass = as_float(stats.get("last_pass"))
    return {
        "holder": holder or None,
        "dispatching": 1 if holder else 0,
        "lock_ttl_s": round(max(0, int(pttl)) / 1000, 1) if holder else None,
        "last_pass": last_pass or None,
        "last_pass_ago_s": round(max(0.0, time.time() - last_pass), 1) if last_pass else None,
        "queue_length": int(as_float(stats.get("queue_length"))),
        "max_queue_length": int(as_float(stats.get("queue_cap"))) or s.max_queue_length,
        "dispatched": int(as_float(stats.get("dispatched"))),
        "skipped": {reason: int(as_float(stats.get(f"skipped_{reason}"))) for reason in SKIPS},
        "due_set_entries": int(due_set),
        "overdue_entries": int(overdue),
    }


def render(section: dict[str, Any]) -> list[str]:
    holder = section.get("holder") or "none (no beat running?)"
    return [
        f"  dispatching beat: {holder}; last pass {ago(section.get('last_pass'))}",
        f"  broker queue {section.get('queue_length')}/{section.get('max_queue_length')}; "
        f"dispatched {section.get('dispatched')}; skipped: {pairs(section.get('skipped', {}))}",
        f"  due set {section.get('due_set_entries', 0)} entries, "
        f"{section.get('overdue_entries', 0)} due more than {OVERDUE} s ago",
    ]


SECTION = declare_section(
    StatusSection("beat", beat_section, render, declared_metrics("workers.polling", "beat"))
)
