"""Cost of beat's dispatch pass by number of sources.

    python bench/bench_dispatch.py [--sources 100 1000 10000] [--passes 20]

Beat runs one pass every WATCHKEEPER_DISPATCH_INTERVAL (1 s): a full pass (one Lua call over
every schedule entry, rebuilding the due set) once a minute, and between them a pass over what
the due set says is due. This shows how long each takes — on the client and in Redis (the
script's own time, from ``INFO commandstats``: while it runs, every other client waits) — when
nothing is due (the common case: every source waits for its next_check or its queued poll)
and when every source is due at once (beat's first pass on a new installation). Sending the
messages is not measured (a no-op here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.stages  # noqa: F401 (declares the source kinds)
from beat_schedule import schedule_entries
from bench.common import bench_redis, write_result
from workers.core.connection import connect
from workers.core.settings import Settings
from workers.core.sources_file import validate_config
from workers.polling.dispatch import Entry, dispatch_pass, due_entries


def ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


def _send(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
    """Sending is not measured."""


def timed(client: Any, settings: Settings, entries: list[Entry], full: bool) -> tuple[float, float]:
    """One pass, full or over what is due: (wall s, s of Redis script time)."""
    client.config_resetstat()
    started = time.perf_counter()
    todo = entries
    if not full:
        by_name = {e.name: e for e in entries}
        todo = [by_name[name] for name in due_entries(client, settings) or ()]
    result = dispatch_pass(client, settings, "wkbench-queue", todo, _send, full)
    wall = time.perf_counter() - started
    stats = client.info("commandstats")
    redis_us = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))
    assert full or not result.sent
    return wall, redis_us / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with bench_redis() as url:
        client = connect(url)
        settings = Settings.from_env(
            {
                "REDIS_URL": url,
                "WATCHKEEPER_PREFIX": "wkbench:",
                "WATCHKEEPER_MAX_QUEUE_LENGTH": "1000000",
            }
        )
        for n in args.sources:
            config = validate_config(
                {
                    "http_logs": [
                        {"name": f"s{i}", "url": f"http://127.0.0.1:9/{i}", "interval": "1h"}
                        for i in range(n)
                    ]
                }
            )
            entries = schedule_entries(settings, config.sources)

            all_due = []
            for _ in range(max(3, args.passes // 4)):
                for key in client.scan_iter(match="wkbench:*", count=1000):
                    client.delete(key)
                all_due.append(timed(client, settings, entries, True))
            idle_full = [timed(client, settings, entries, True) for _ in range(args.passes)]
            idle_due = [timed(client, settings, entries, False) for _ in range(args.passes)]
            rows.append(
                {
                    "sources": n,
                    "idle_pass_ms": ms([w for w, _ in idle_due]),
                    "idle_pass_redis_ms": ms([r for _, r in idle_due]),
                    "idle_full_pass_ms": ms([w for w, _ in idle_full]),
                    "idle_full_pass_redis_ms": ms([r for _, r in idle_full]),
                    "all_due_pass_ms": ms([w for w, _ in all_due]),
                }
            )
        for key in client.scan_iter(match="wkbench:*", count=1000):
            client.delete(key)
    print(
        "| sources | pass, nothing due (ms; in Redis) | full pass, nothing due (ms; in Redis) "
        "| full pass, all due (ms) |"
    )
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sources']} | {r['idle_pass_ms']}; {r['idle_pass_redis_ms']} "
            f"| {r['idle_full_pass_ms']}; {r['idle_full_pass_redis_ms']} | {r['all_due_pass_ms']} |"
        )
    path = write_result("dispatch", {"rows": rows, "passes": args.passes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
