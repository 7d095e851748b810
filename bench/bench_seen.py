"""Seen-set adds per second: SeenSet.add_new (Redis, capped, one Lua call per batch) against
a plain Python set (unbounded, in process) on the same keys, in one run.

    python bench/bench_seen.py [--keys 500000] [--batch 50]

The Python set is the seeds' "before": fast, and it grows without bound in the worker. The
ratio shows what the bound and the move out of the worker cost per key.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_redis, write_result
from workers.core.connection import connect
from workers.store.seen import SeenSet, short_hash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--cap", type=int, default=10_000)
    args = parser.parse_args()
    keys = [f"https://example.org/item/{i}?utm=feed" for i in range(args.keys)]
    batches = [keys[i : i + args.batch] for i in range(0, len(keys), args.batch)]

    started = time.perf_counter()
    plain: set[str] = set()
    plain_new = 0
    for batch in batches:
        for key in batch:
            if short_hash(key) not in plain:
                plain.add(short_hash(key))
                plain_new += 1
    plain_s = time.perf_counter() - started

    with bench_redis() as url:
        client = connect(url)
        client.delete("wk:bench:seen")
        seen = SeenSet(client, "wk:bench:seen", cap=args.cap)
        started = time.perf_counter()
        ours_new = sum(len(seen.add_new(batch)) for batch in batches)
        ours_s = time.perf_counter() - started
        size = len(seen)
        client.delete("wk:bench:seen")

    result = {
        "keys": args.keys,
        "batch": args.batch,
        "cap": args.cap,
        "python_set_adds_per_s": round(args.keys / plain_s),
        "seen_set_adds_per_s": round(args.keys / ours_s),
        "ratio_seen_set_to_python_set": round(plain_s / ours_s, 4),
        "python_set_size": len(plain),
        "seen_set_size": size,
        "new_reported": {"python_set": plain_new, "seen_set": ours_new},
    }
    path = write_result("seen", result)
    print(f"{'measure':<34}{'value':>14}")
    for name in (
        "python_set_adds_per_s",
        "seen_set_adds_per_s",
        "ratio_seen_set_to_python_set",
        "python_set_size",
        "seen_set_size",
    ):
        print(f"{name:<34}{result[name]:>14}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
