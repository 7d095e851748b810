"""What the source registry costs, by number of sources.

    python bench/bench_registry.py [--sources 1000 10000 100000]

For each size: applying a sources file of that many feeds to an empty registry (parse,
validate, diff, one atomic write — and how long the write's Lua call held Redis, from ``INFO
commandstats``), applying it again unchanged (what a beat does at start), Redis memory per
source, one worker's lookup of one source (``get``: one ``HGET``), a follower's poll when
nothing changed (beat every pass: one ``HMGET``) and after one source changed, and reading the
whole registry (beat's start, ``status``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.stages  # noqa: F401 (declares the source kinds)
from bench.common import bench_redis, write_result
from workers.core.connection import connect
from workers.core.settings import Settings
from workers.core.source_registry import ChangeTracker, Definition, SourceRegistry
from workers.ops.sources.apply import apply_file
from workers.store.source_writes import write


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def median(fn: Callable[[], Any], n: int = 200) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def script_seconds(client: Any) -> float:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval")) / 1e6


def measure(client: Any, settings: Settings, n: int, folder: Path) -> dict[str, Any]:
    for key in client.scan_iter(match=settings.prefix + "*", count=1000):
        client.delete(key)
    path = folder / f"sources-{n}.toml"
    path.write_text(
        "".join(
            f'[[feeds]]\nname = "feed{i}"\nurl = "https://host{i % 500}.example.org/feed/{i}.xml"\n'
            f'interval = "{5 + i % 55}m"\ntags = ["news"]\n'
            for i in range(n)
        )
    )
    before = int(client.info("memory")["used_memory"])
    client.config_resetstat()
    started = time.perf_counter()
    apply_file(client, settings, path)
    first_apply = time.perf_counter() - started
    write_held = script_seconds(client)
    per_source = (int(client.info("memory")["used_memory"]) - before) / n
    started = time.perf_counter()
    unchanged = apply_file(client, settings, path, automatic=True)
    assert unchanged.state == "unchanged"
    again = time.perf_counter() - started
    registry = SourceRegistry(client, settings)
    get_one = median(lambda: SourceRegistry(client, settings).get(f"feed{n // 2}"))
    tracker = ChangeTracker(registry)
    started = time.perf_counter()
    assert tracker.poll().full
    reload = time.perf_counter() - started
    nothing = median(lambda: tracker.poll())
    url = "https://changed.example.org/feed.xml"
    write(client, settings, "cli", [Definition("extra", "feed", "cli", {"url": url})])
    started = time.perf_counter()
    one = tracker.poll()
    one_changed = time.perf_counter() - started
    assert list(one.changed) == ["extra"]
    return {
        "sources": n,
        "apply_s": round(first_apply, 3),
        "apply_write_redis_ms": ms(write_held),
        "apply_unchanged_ms": ms(again),
        "redis_bytes_per_source": round(per_source),
        "get_one_ms": ms(get_one),
        "follow_nothing_changed_ms": ms(nothing),
        "follow_one_changed_ms": ms(one_changed),
        "read_whole_registry_s": round(reload, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    rows = []
    with bench_redis() as url, tempfile.TemporaryDirectory() as tmp:
        client = connect(url)
        settings = replace(
            Settings.from_env({"REDIS_URL": url, "WATCHKEEPER_PREFIX": "wkbench:"}),
            max_sources=max(args.sources) + 10,
        )
        for n in args.sources:
            rows.append(measure(client, settings, n, Path(tmp)))
            print(rows[-1], flush=True)
        client.close()
    headers = list(rows[0])
    print(" | ".join(headers))
    for row in rows:
        print(" | ".join(str(row[h]) for h in headers))
    print(write_result("registry", {"rows": rows}))


if __name__ == "__main__":
    main()
