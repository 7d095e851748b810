"""Five minutes of ``watchkeeper run`` with two trickling notification receivers (issue 19).

    python bench/bench_slow_receivers.py [--seconds 300] [--feeds 4] [--interval 2]
                                         [--baseline-seconds 120]

Two webhooks send their headers and then one byte every 2 s; two others answer at once (one in
the same sink as a trickling one, one in another sink). Goals: every source polled on time —
never seen ``queued`` in two samples 2 s apart, and its polls as frequent as in the same run
with prompt receivers only (the baseline, ``--baseline-seconds``; 0 skips it: a poll comes
every interval plus up to one dispatch pass, WATCHKEEPER_DISPATCH_INTERVAL) — and the prompt
webhooks get every item within 2 s of its poll (the wait for the poll, up to the interval, not
counted). See ``bench/slow_receivers.py``. Prints a table and writes
bench/results/slow_receivers.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.slow_receivers import scenario  # noqa: E402


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    polls = result["polls"].values()
    streaks = result["queued_longest_streak_samples"].values()
    return [
        ("run (s)", f"{result['seconds']:.0f}"),
        ("polls per source", ", ".join(str(p["polls"]) for p in polls)),
        ("gap between polls p50 (s)", f"{max(p['gap_p50_s'] or 0 for p in polls):.2f}"),
        ("longest gap between polls (s)", f"{max(p['max_gap_s'] or 0 for p in polls):.2f}"),
        ("sources queued in 2 samples running", str(sum(1 for v in streaks if v >= 2))),
        ("items x prompt webhooks", f"{result['items']} x 2"),
        (
            "delivered / missing / duplicates",
            f"{result['deliveries']} / {result['missing']} / {result['duplicates']}",
        ),
        ("latency poll → webhook p50 (s)", f"{result['latency_p50_s']:.3f}"),
        ("latency p99 (s), goal ≤ 2", f"{result['latency_p99_s']:.3f}"),
        ("latency max (s)", f"{result['latency_max_s']:.3f}"),
        ("within 2 s", f"{result['within_2s']} of {result['deliveries']}"),
        ("slow receivers' attempts", ", ".join(map(str, result["trickle_attempts"]))),
        ("delivery queue length at the end", str(result["notify"]["queue_length"])),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--feeds", type=int, default=4)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--baseline-seconds", type=float, default=120)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wk-bench-slow-"))
    result = scenario(base / "trickle", args.seconds, args.feeds, args.interval)
    baseline = None
    if args.baseline_seconds:
        baseline = scenario(
            base / "baseline", args.baseline_seconds, args.feeds, args.interval, trickle=False
        )
    table = rows(result)
    shown = rows(baseline) if baseline else [("", "")] * len(table)
    width = max(len(r[0]) for r in table)
    print(f"{'':<{width}}  {'2 trickling receivers':>30}  {'baseline: all prompt':>22}")
    for (name, value), (_, other) in zip(table, shown, strict=True):
        print(f"{name:<{width}}  {value:>30}  {other:>22}")
    path = write_result(
        "slow_receivers",
        {
            "command": "python bench/bench_slow_receivers.py " + " ".join(sys.argv[1:]),
            **result,
            "baseline": baseline,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
