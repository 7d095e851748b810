"""Cost of beat's dispatch pass (one Lua call over every schedule entry) by number of sources.

    python bench/bench_dispatch.py [--sources 100 1000 5000] [--passes 20]

Beat runs one pass every WATCHKEEPER_DISPATCH_INTERVAL (1 s); this shows how much of that
second a pass takes in Redis and on the client, when nothing is due (the common case: every
source waits for its next_check or its queued poll) and when every source is due at once
(beat's first pass on a new installation). Sending the messages is not measured (a no-op here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.stages  # noqa: F401 (declares the source kinds)
from beat_schedule import schedule_entries
from bench.common import bench_redis, write_result
from workers.core.connection import connect
from workers.core.settings import Settings
from workers.core.sources_file import validate_config
from workers.polling.dispatch import Entry, dispatch_pass


def ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with bench_redis() as url:
        client = connect(url)
        settings = Settings.from_env({"REDIS_URL": url, "WATCHKEEPER_PREFIX": "wkbench:"})
        for n in args.sources:
            config = validate_config(
                {
                    "http_logs": [
                        {"name": f"s{i}", "url": f"http://127.0.0.1:9/{i}", "interval": "1h"}
                        for i in range(n)
                    ]
                }
            )
            entries = schedule_entries(settings, config)
            sent: list[Entry] = []

            def send(
                batch: Sequence[Entry], task_ids: Sequence[str], sent: list[Entry] = sent
            ) -> None:
                sent.extend(batch)

            all_due = []
            for _ in range(max(3, args.passes // 4)):
                for key in client.scan_iter(match="wkbench:*", count=1000):
                    client.delete(key)
                started = time.perf_counter()
                dispatch_pass(client, settings, "wkbench-queue", entries, send)
                all_due.append(time.perf_counter() - started)
            idle = []
            for _ in range(args.passes):
                started = time.perf_counter()
                result = dispatch_pass(client, settings, "wkbench-queue", entries, send)
                idle.append(time.perf_counter() - started)
                assert not result.sent
            rows.append({"sources": n, "idle_pass_ms": ms(idle), "all_due_pass_ms": ms(all_due)})
        for key in client.scan_iter(match="wkbench:*", count=1000):
            client.delete(key)
    print("| sources | pass, nothing due (ms) | pass, all due (ms) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['sources']} | {row['idle_pass_ms']} | {row['all_due_pass_ms']} |")
    path = write_result("dispatch", {"rows": rows, "passes": args.passes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
