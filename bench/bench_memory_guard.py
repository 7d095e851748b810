"""Per-task overhead of the memory guard: a no-op task, guard on vs off, in one run.

Starts an embedded Redis under a temporary home, then alternates prefork workers (one child)
with ``WATCHKEEPER_MEMORY_GUARD=1`` and ``=0``. Each round warms the worker up, sends N no-op
tasks (no result stored) followed by one barrier task with a result, and measures per task:

* wall time: (barrier result time - first send) / N;
* worker CPU time: user+system seconds of the worker's main process and its pool child
  (where every part of the guard runs: hooks, reporter and watchdog threads) / N.

On a shared machine wall time swings by 2x between identical rounds; CPU time is the steadier
measure of what the guard adds. Alternating rounds cancel drift; ratios compare medians.
Goal: ratio <= 1.05.

    python bench/bench_memory_guard.py [--tasks 2000] [--rounds 3]

Prints a table and writes bench/results/memory_guard.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 1.05
PREFETCH = 16


def start_worker(
    home: Path, url: str, guard: int, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    queue = f"wk-bench-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        REDIS_URL=url,
        WATCHKEEPER_HOME=str(home),
        WATCHKEEPER_CONFIG=str(home / "sources.toml"),
        WATCHKEEPER_MEMORY_GUARD=str(guard),
        # no max-tasks recycle inside a round: it costs seconds and would swamp both
        WATCHKEEPER_MAX_TASKS_PER_CHILD="1000000",
        PYTHONPATH=str(ROOT),
    )
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool",
                "prefork",
                "-c",
                "1",
                "--prefetch-multiplier",
                str(PREFETCH),
                "-Q",
                queue,
                "-n",
                f"bench-{queue}@localhost",
                "-I",
                "bench.bench_tasks",
                "--loglevel",
                "WARNING",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return proc, queue


@dataclass
class Round:
    guard: int
    wall_ms: float
    cpu_ms: float


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def run_round(app: Any, home: Path, url: str, guard: int, tasks: int) -> Round:
    """One worker, warmed up; wall time and worker CPU time (parent + child) per task."""
    proc, queue = start_worker(home, url, guard, home / f"worker-guard{guard}.log")
    try:
        for _ in range(200):
            app.send_task("bench.noop", queue=queue)
        app.send_task("bench.echo", args=[0], queue=queue).get(timeout=120)
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children()]
        cpu0, start = _cpu_seconds(procs), time.perf_counter()
        for _ in range(tasks):
            app.send_task("bench.noop", queue=queue)
        app.send_task("bench.echo", args=[1], queue=queue).get(timeout=600)
        wall = time.perf_counter() - start
        cpu = _cpu_seconds(procs) - cpu0
        return Round(guard, wall / tasks * 1000, cpu / tasks * 1000)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="wk-bench-mem-"))
    (home / "sources.toml").write_text("# no sources: the benchmark sends its own tasks\n")
    os.environ.update(WATCHKEEPER_HOME=str(home), WATCHKEEPER_CONFIG=str(home / "sources.toml"))
    from workers.core.connection import EmbeddedRedis

    embedded = EmbeddedRedis(home)
    url = embedded.acquire()
    os.environ["REDIS_URL"] = url
    from workers import app

    rounds: list[Round] = []
    try:
        for _ in range(args.rounds):
            for guard in (1, 0):
                rounds.append(run_round(app, home, url, guard, args.tasks))
    finally:
        embedded.release()

    def med(guard: int, what: str) -> float:
        return statistics.median(getattr(r, what) for r in rounds if r.guard == guard)

    wall_ratio = med(1, "wall_ms") / med(0, "wall_ms")
    cpu_ratio = med(1, "cpu_ms") / med(0, "cpu_ms")
    print(
        f"{'guard':<7}{'wall ms/task per round':<36}{'median':>8}"
        f"   {'worker CPU ms/task per round':<36}{'median':>8}"
    )
    for guard, label in ((0, "off"), (1, "on")):
        walls = " ".join(f"{r.wall_ms:.3f}" for r in rounds if r.guard == guard)
        cpus = " ".join(f"{r.cpu_ms:.3f}" for r in rounds if r.guard == guard)
        print(
            f"{label:<7}{walls:<36}{med(guard, 'wall_ms'):>8.3f}   {cpus:<36}"
            f"{med(guard, 'cpu_ms'):>8.3f}"
        )
    for name, ratio in (("worker CPU time", cpu_ratio), ("wall time", wall_ratio)):
        verdict = "meets" if ratio <= GOAL else "MISSES"
        print(f"overhead ratio on/off, {name}: {ratio:.3f} ({verdict} the goal <= {GOAL})")

    result = {
        "benchmark": "memory_guard",
        "command": "python bench/bench_memory_guard.py " + " ".join(sys.argv[1:]),
        "tasks_per_round": args.tasks,
        "rounds": args.rounds,
        "pool": f"prefork -c 1, prefetch multiplier {PREFETCH}",
        "rounds_detail": [asdict(r) for r in rounds],
        "median_wall_ms_per_task": {"on": med(1, "wall_ms"), "off": med(0, "wall_ms")},
        "median_cpu_ms_per_task": {"on": med(1, "cpu_ms"), "off": med(0, "cpu_ms")},
        "ratio_cpu": cpu_ratio,
        "ratio_wall": wall_ratio,
        "goal": GOAL,
        "meets_goal_cpu": cpu_ratio <= GOAL,
        "meets_goal_wall": wall_ratio <= GOAL,
        "load_average": os.getloadavg(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "bench" / "results" / "memory_guard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
