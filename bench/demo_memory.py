"""Per-child memory in the demo: USS of each prefork pool child after it has located alerts.

    python bench/demo_memory.py                 # 60 s of `watchkeeper run --demo`
    python bench/demo_memory.py --seconds 120

Starts ``watchkeeper run --demo`` under a temporary WATCHKEEPER_HOME (offline: the gazetteer
locates every alert), waits until the ``locations`` stream holds located alerts, then samples
every pool child's USS / PSS / RSS (psutil ``memory_full_info``) every few seconds until the
time is up, and the worker parent's. Issue 15's goal is <= 60 MB USS per pool child. Writes
``bench/results/demo_memory.json`` (``--name`` to change) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result
from workers.core.connection import connect

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
GOAL_CHILD_USS_MB = 60.0


def memory(proc: psutil.Process) -> dict[str, float]:
    """USS, PSS and RSS of one process in MB (zeros once it has gone)."""
    try:
        info = proc.memory_full_info()
    except psutil.Error:
        return {"uss_mb": 0.0, "pss_mb": 0.0, "rss_mb": 0.0}
    return {
        "uss_mb": round(info.uss / MB, 2),
        "pss_mb": round(info.pss / MB, 2),
        "rss_mb": round(info.rss / MB, 2),
    }


def worker_of(supervisor: int) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(supervisor).children():
            with contextlib.suppress(psutil.Error):
                if "worker" in child.cmdline():
                    return child
    return None


def located(home: Path) -> int:
    """Entries in the ``locations`` stream of the run under ``home`` (0 before it starts)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        url = json.loads((home / "run.json").read_text())["redis_url"]
        client = connect(url)
        return sum(int(client.xlen(k)) for k in client.scan_iter("*stream:locations"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the demo runs")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--name", default="demo_memory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wk-demo-mem-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHKEEPER_", "MOONSHOT_"))}
    env.update(WATCHKEEPER_HOME=str(tmp / "home"), PYTHONUNBUFFERED="1")
    log = open(tmp / "run.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.seconds:
            time.sleep(args.sample_every)
            if proc.poll() is not None:
                raise SystemExit(f"watchkeeper run exited ({proc.returncode}); see {tmp}/run.log")
            n = located(tmp / "home")
            worker = worker_of(proc.pid)
            if not n or worker is None:
                continue
            children = [{"pid": c.pid, **memory(c)} for c in worker.children()]
            sample = {
                "t": round(time.monotonic() - started, 1),
                "located": n,
                "parent": memory(worker),
                "children": children,
            }
            samples.append(sample)
            print(
                f"[demo] {sample['t']:5.0f}s located {n:>5}  parent uss "
                f"{sample['parent']['uss_mb']:.1f} MB  children uss "
                + ", ".join(f"{c['uss_mb']:.1f}" for c in children)
                + " MB",
                flush=True,
            )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
    if not samples:
        print(f"[demo] no alerts located; see {tmp}/run.log", file=sys.stderr)
        return 1
    max_child = max(c["uss_mb"] for s in samples for c in s["children"])
    last = samples[-1]
    result = {
        "command": "python bench/demo_memory.py " + " ".join(sys.argv[1:]),
        "goal_child_uss_mb": GOAL_CHILD_USS_MB,
        "max_child_uss_mb": max_child,
        "meets_goal": max_child <= GOAL_CHILD_USS_MB,
        "last": last,
        "samples": samples,
    }
    path = write_result(args.name, result)
    print("| process | USS MB | PSS MB | RSS MB |")
    print("|---|---|---|---|")
    print(
        f"| worker parent | {last['parent']['uss_mb']} | {last['parent']['pss_mb']} | "
        f"{last['parent']['rss_mb']} |"
    )
    for c in last["children"]:
        print(f"| pool child {c['pid']} | {c['uss_mb']} | {c['pss_mb']} | {c['rss_mb']} |")
    print(
        f"[demo] max child USS over {len(samples)} samples: {max_child:.1f} MB (goal <= "
        f"{GOAL_CHILD_USS_MB:.0f}): {'met' if result['meets_goal'] else 'NOT met'}; wrote "
        f"{path.relative_to(ROOT)}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
