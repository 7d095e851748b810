"""The throughput table: one line per benchmark, each a ratio measured within one run.

    python bench/table.py           # print the table from bench/results/*.json
    python bench/table.py --run     # run every benchmark first (about 10-15 minutes)

Writes bench/results/table.json and prints a Markdown table (pasted into docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent

BENCHMARKS = [
    "bench_feeds.py",
    "bench_tcp.py",
    "bench_seen.py",
    "bench_memory_guard.py",
    "bench_locations.py",
    "bench_scrape.py",
    "bench_notify.py",
    "bench_polls.py",
    "capacity.py",
    "soak.py --quick",
    "scale.py --sources 10000 100000 --minutes 2",
    "scale_peers.py --sources 10000 100000 --minutes 2",
]


def _get(data: dict[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


Row = tuple[str, str, str, str, str]


def rows() -> list[Row]:
    def load(name: str) -> dict[str, Any]:
        path = RESULTS / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    feeds, tcp, seen = load("feeds"), load("tcp"), load("seen")
    guard, loc, scrape, soak = load("memory_guard"), load("locations"), load("scrape"), load("soak")
    notify, polls, capacity = load("notify"), load("polls"), load("capacity")
    capacity_site1s = load("capacity-site1s")
    out: list[Row] = []

    def add(
        what: str, ours: Any, baseline: Any, ratio: Any, goal: str, fmt: Callable[[Any], str] = _fmt
    ) -> None:
        out.append((what, fmt(ours), fmt(baseline), _fmt(ratio, 3), goal))

    add(
        "feed pipeline entries/s vs bare feedparser.parse",
        _get(feeds, "pipeline_entries_per_s"),
        _get(feeds, "bare_feedparser_entries_per_s"),
        _get(feeds, "ratio_pipeline_to_bare"),
        ">= 0.8",
    )
    add(
        "TCP lines/s into Redis vs rsyslog imtcp (to a file), defaults (packed under backlog)",
        _get(tcp, "best", "watchkeeper", "lines_per_s"),
        _get(tcp, "best", "rsyslog-raw", "lines_per_s"),
        _get(tcp, "ratio_to_rsyslog", "watchkeeper/rsyslog-raw"),
        ">= 0.5",
    )
    add(
        "TCP lines/s vs rsyslog, always one entry per line (WATCHKEEPER_TCP_PACK_LINES=1)",
        _get(tcp, "best", "watchkeeper-per-line", "lines_per_s"),
        _get(tcp, "best", "rsyslog-raw", "lines_per_s"),
        _get(tcp, "ratio_to_rsyslog", "watchkeeper-per-line/rsyslog-raw"),
        "(Redis-bound)",
    )
    add(
        "seen-set adds/s vs a Python set",
        _get(seen, "seen_set_adds_per_s"),
        _get(seen, "python_set_adds_per_s"),
        _get(seen, "ratio_seen_set_to_python_set"),
        "(bounded vs unbounded)",
    )
    add(
        "memory guard: no-op task wall ms, guard on / off",
        _get(guard, "median_wall_ms_per_task", "on"),
        _get(guard, "median_wall_ms_per_task", "off"),
        _get(guard, "ratio_wall"),
        "<= 1.05",
    )
    add(
        "memory guard: no-op task CPU ms (parent + child), on / off",
        _get(guard, "median_cpu_ms_per_task", "on"),
        _get(guard, "median_cpu_ms_per_task", "off"),
        _get(guard, "ratio_cpu"),
        "<= 1.05",
    )
    batch = _get(loc, "machine", "batch_size") or 20
    add(
        "location API calls per 1,000 alerts (healthy API)",
        _get(loc, "api_healthy", "api_calls_per_1000"),
        1000 / batch,
        (_get(loc, "api_healthy", "api_calls_per_1000") or 0) / (1000 / batch),
        "<= 1 (1000/batch + retries)",
    )
    add("gazetteer alerts/s", _get(loc, "gazetteer", "alerts_per_s"), None, None, "")
    add(
        "scrape of a 2 MB page: RSS growth over 1,000 scrapes (MB)",
        _get(scrape, "rss_growth_mb"),
        _get(scrape, "rss_bound_mb"),
        None if not scrape else scrape["rss_growth_mb"] / scrape["rss_bound_mb"],
        "< 1",
    )
    add(
        "soak: worker RSS slope, MB per 100k items (ours / naive)",
        _get(soak, "slopes", "ours", "workers_mb_per_100k"),
        _get(soak, "slopes", "naive", "process_mb_per_100k"),
        None,
        "ours <= 0.5",
    )
    add(
        "soak: Redis slope, MB per 100k items (ours / naive)",
        _get(soak, "slopes", "ours", "redis_mb_per_100k"),
        _get(soak, "slopes", "naive", "redis_mb_per_100k"),
        None,
        "ours flat",
    )
    ours, bare = (
        _get(notify, "deliveries_per_s", "watchkeeper"),
        _get(notify, "deliveries_per_s", "requests"),
    )
    add(
        "notifications delivered/s to a local JSON receiver vs a bare requests loop",
        ours,
        bare,
        ours / bare if ours and bare else None,
        "",
    )
    add(
        "item-to-notification latency p99 at 1,000 items/s (s)",
        _get(notify, "soak", "latency_p99_s"),
        None,
        None,
        "< 2 + poll interval",
    )
    add(
        "outbox memory, MB per 100k items notified",
        _get(notify, "soak", "notify_mb_per_100k_items"),
        None,
        None,
        "flat",
    )
    add(
        "small feeds polled/s (feedparser's test corpus) vs rss2email `r2e run --no-send`",
        _get(polls, "watchkeeper", "feeds_per_s"),
        _get(polls, "rss2email", "feeds_per_s"),
        _get(polls, "ratio_feeds_per_s"),
        ">= 1.0",
    )
    add(
        "per poll: worker CPU ms (parent + children) / Redis round trips",
        _get(polls, "watchkeeper", "worker_cpu_ms_per_poll"),
        _get(polls, "watchkeeper", "redis_round_trips_per_poll"),
        None,
        "",
    )
    add(
        "capacity: highest sustained items/s, soak mix and intervals, `watchkeeper run` on 2 cores",
        _get(capacity, "highest_sustained_items_per_s"),
        None,
        None,
        ">= 4,000",
    )
    add(
        "capacity, the listing site polled every 1 s instead of 2 s",
        _get(capacity_site1s, "highest_sustained_items_per_s"),
        None,
        None,
        ">= 4,000",
    )
    scale = load("scale")
    add(
        "scale, 100,000 sources (`bench/scale.py`, `scale_peers.py`): dispatch lateness p99 s, "
        "watchkeeper / django-celery-beat (PostgreSQL)",
        _get(scale, "watchkeeper", "100000", "lateness_p99_s"),
        _get(scale, "peers", "django", "100000", "lateness_p99_s"),
        None,
        "<= 1",
    )
    add(
        "scale, 100,000 sources: dispatch lateness p99 s, watchkeeper / celery-redbeat",
        _get(scale, "watchkeeper", "100000", "lateness_p99_s"),
        _get(scale, "peers", "redbeat", "100000", "lateness_p99_s"),
        None,
        "<= 1",
    )
    add(
        "scale, 1,000,000 sources, 5 min: dispatch lateness p50 / p99 s (docs/scaling.md)",
        f"{_fmt(_get(scale, 'watchkeeper', '1000000', 'lateness_p50_s'), 3)} / "
        f"{_fmt(_get(scale, 'watchkeeper', '1000000', 'lateness_p99_s'))}",
        None,
        None,
        "p99 <= 1",
    )
    add(
        "scale, 1,000,000 sources: slowest Redis command after start-up, ms (Redis waiting "
        "for a CPU on the shared cores)",
        _get(scale, "watchkeeper", "1000000", "steady_slowest_ms"),
        None,
        None,
        "<= 5",
    )
    add(
        "scale, 1,000,000 sources: Redis bytes per idle source (registry, state, due set)",
        _get(scale, "watchkeeper", "1000000", "redis_bytes_per_source"),
        None,
        None,
        "<= 1,024",
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", action="store_true", help="run every benchmark first")
    args = parser.parse_args()
    if args.run:
        for script in BENCHMARKS:
            print(f"== {script}", flush=True)
            name, *extra = script.split()
            subprocess.run([sys.executable, str(HERE / name), *extra], cwd=ROOT, check=False)
    table = rows()
    header = ("measure", "watchkeeper", "baseline", "ratio", "goal")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(row) + " |")
    (RESULTS / "table.json").write_text(
        json.dumps([dict(zip(header, row, strict=True)) for row in table], indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
