"""Five minutes of ``watchkeeper run`` with two trickling notification receivers (issue 19).

    python bench/bench_slow_receivers.py [--seconds 300] [--feeds 4] [--interval 2]

Two webhooks send their headers and then one byte every 2 s; two others answer at once (one in
the same sink, one in another). Goals: every source polled on time (no ``queued`` backlog:
a source is never seen queued in two samples 2 s apart), and the prompt webhooks get every item
within 2 s of its poll (the interval before the poll not counted). See ``bench/slow_receivers.py``.
Prints a table and writes bench/results/slow_receivers.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.slow_receivers import scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--feeds", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="wk-bench-slow-"))
    result = scenario(home / "home", args.seconds, args.feeds, args.interval)
    polls = result["polls"]
    rows = [
        ("run (s)", f"{result['seconds']:.0f}"),
        ("sources x interval (s)", f"{args.feeds} x {args.interval:g}"),
        (
            "polls / expected, per source",
            ", ".join(f"{p['polls']}/{p['expected']}" for p in polls.values()),
        ),
        (
            "longest gap between polls (s)",
            f"{max(p['max_gap_s'] or 0 for p in polls.values()):.2f}",
        ),
        (
            "queued in 2 samples running (sources)",
            str(sum(1 for v in result["queued_longest_streak_samples"].values() if v >= 2)),
        ),
        ("items x prompt webhooks", f"{result['items']} x 2"),
        (
            "delivered / missing / duplicates",
            f"{result['deliveries']} / {result['missing']} / {result['duplicates']}",
        ),
        ("latency poll → webhook p50 (s)", f"{result['latency_p50_s']:.3f}"),
        ("latency p99 (s), goal ≤ 2", f"{result['latency_p99_s']:.3f}"),
        ("latency max (s)", f"{result['latency_max_s']:.3f}"),
        ("within 2 s", f"{result['within_2s']} of {result['deliveries']}"),
        ("trickling receivers: attempts", ", ".join(map(str, result["trickle_attempts"]))),
        ("delivery queue length at the end", str(result["notify"]["queue_length"])),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>28}")
    path = write_result(
        "slow_receivers",
        {"command": "python bench/bench_slow_receivers.py " + " ".join(sys.argv[1:]), **result},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
