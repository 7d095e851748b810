"""One ``watchkeeper run`` started by a benchmark: its own home, processes, CPU and Redis counters.

Shared by ``bench_polls.py`` and ``capacity.py``: start the supervisor with a sources file and
environment, wait for its Redis, find its processes by role, read their CPU times and Redis's
counters (``INFO commandstats`` and ``total_reads_processed`` — one read per request a client
sent, a pipeline counting once, so its delta is the number of round trips), profile them with
py-spy, and stop everything warmly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.common import stop_run_process
from bench.soak import process_tree, redis_pid
from workers.core.connection import connect

ROOT = Path(__file__).resolve().parents[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any watchkeeper setting, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHKEEPER_", "MOONSHOT_")) and k != "REDIS_URL"
    }
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


class WatchkeeperRun:
    """``python -m workers.cli run --config <file>`` under ``home``; logs in ``home/run.log``."""

    def __init__(
        self,
        home: Path,
        config: Path,
        env: dict[str, str],
        redis_roles: Any = None,
    ) -> None:
        self.home, self.config = home, config
        self.env = {**env, "WATCHKEEPER_HOME": str(home)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()
        self.redis_roles = redis_roles
        """For an external Redis (``REDIS_URL``): a callable giving its processes by role."""

    def start(self, timeout: float = 120) -> redis.Redis:
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            env=self.env,
            stdout=open(self.home / "run.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"watchkeeper run exited; see {self.home / 'run.log'}")
            if self.env.get("REDIS_URL") and (self.home / "run.json").exists():
                from workers.core.connection import url_for
                from workers.core.settings import Settings

                self.url = url_for(Settings.from_env(self.env))  # run.json's is redacted
                return connect(self.url)
            with contextlib.suppress(OSError, ValueError, KeyError):
                url = str(json.loads((self.home / "run.json").read_text())["redis_url"])
                # run.json's redacted form of a socket URL has lost a slash or two
                if url.startswith("redis+socket:") and not url.startswith("redis+socket://"):
                    url = "redis+socket://" + url.removeprefix("redis+socket:")
                self.url = url
                return connect(self.url)
            time.sleep(0.2)
        raise SystemExit(f"watchkeeper run did not start within {timeout:g} s")

    def roles(self) -> dict[str, list[psutil.Process]]:
        """Processes by role: worker parent, pool children, beat, listener, redis-server."""
        assert self.proc is not None
        tree = process_tree(self.proc.pid)
        out: dict[str, list[psutil.Process]] = {
            "worker_parent": [tree["worker"]] if tree["worker"] else [],
            "pool": list(tree["pool"]),
            "beat": [tree["beat"]] if tree["beat"] else [],
            "listener": [tree["listener"]] if tree["listener"] else [],
            "notify": ([tree["notify"]] if tree["notify"] else []) + list(tree["notify_pool"]),
            "supervisor": [psutil.Process(self.proc.pid)],
        }
        for procs in out.values():  # the run's own: none may outlive it
            self.pids.update(p.pid for p in procs)
        if self.redis_roles is not None:  # an external Redis outlives the run
            out.update(self.redis_roles())
        else:
            rpid = redis_pid(self.home)
            out["redis"] = [psutil.Process(rpid)] if rpid and psutil.pid_exists(rpid) else []
            self.pids.update(p.pid for p in out["redis"])
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far, per role."""
        return {role: cpu_seconds(procs) for role, procs in self.roles().items()}

    def meter(self) -> CpuMeter:
        return CpuMeter(self)

    def stop(self) -> list[str]:
        problems = stop_run_process(self.proc)
        deadline = time.monotonic() + 15
        left: list[int] = []
        while time.monotonic() < deadline:
            left = [p for p in self.pids if _alive(p)]
            if not left:
                break
            time.sleep(0.2)
        for pid in left:
            problems.append(f"process {pid} outlived the run; killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return problems


class CpuMeter:
    """CPU seconds per role since it was made, counting processes that start or end meanwhile
    (pool children replaced after WATCHKEEPER_MAX_TASKS_PER_CHILD): call ``sample`` often; a
    process that ends loses at most the time since the last sample."""

    def __init__(self, run: WatchkeeperRun) -> None:
        self.run = run
        self.start: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.sample()
        self.start = {pid: cpu for pid, (_, cpu) in self.last.items()}

    def sample(self) -> None:
        for role, procs in self.run.roles().items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    self.last[proc.pid] = (role, t.user + t.system)

    def used(self) -> dict[str, float]:
        self.sample()
        out: dict[str, float] = {}
        for pid, (role, cpu) in self.last.items():
            out[role] = out.get(role, 0.0) + cpu - self.start.get(pid, 0.0)
        return out


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def redis_counters(client: redis.Redis) -> dict[str, Any]:
    """Calls per command and read events (round trips) so far."""
    stats = client.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    return {"calls": calls, "reads": int(client.info("stats")["total_reads_processed"])}


def counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = Counter(after["calls"])
    calls.subtract(before["calls"])
    return {
        "calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v},
        "reads": after["reads"] - before["reads"],
    }


WAITS = (
    "Condition.wait (",
    "_epoll.poll (",
    "poll (",
    "select (",
    "sleep (",
    "recv_bytes (",
    "Connection._recv (",
    "readinto (",
    "read_from_socket (",
    "accept (",
    "_recv_into (",
)
"""Leaf frames of a thread blocked in a system call: not CPU time (py-spy's own idle detection
is not reliable with --nonblocking)."""


class Profiler:
    """py-spy sampling processes until stopped; raw collapsed stacks. ``idle``: wall time,
    waiting included (background threads, which only wait, left out); else on-CPU samples
    only. Needs ptrace rights; without py-spy the profile is simply missing."""

    def __init__(self, out_dir: Path, rate: int = 100, idle: bool = True) -> None:
        self.out_dir, self.rate, self.idle = out_dir, rate, idle
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, pid: int) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            return
        path = self.out_dir / f"{name}-{pid}.txt"
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--idle",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append((name, proc, path))

    def stop(self) -> dict[str, Counter[str]]:
        """Collapsed stacks per profiled role (``name``), samples summed over its processes."""
        for _, proc, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        stacks: dict[str, Counter[str]] = {}
        for name, proc, path in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if self.idle and stack.startswith("Thread._bootstrap"):
                        continue  # background threads (memory guard reporters): idle
                    leaf = stack.rsplit(";", 1)[-1]
                    if not self.idle and any(leaf.startswith(w) or f".{w}" in leaf for w in WAITS):
                        continue
                    if count.isdigit():
                        stacks.setdefault(name, Counter())[stack] += int(count)
        return stacks


def frame_name(frame: str) -> str:
    """``function (path/to/file.py:123)`` → ``function (file.py)``."""
    func, _, where = frame.partition(" (")
    path = where.split(":")[0].rstrip(")")
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def top_functions(
    stacks: Counter[str], n: int = 15, idle: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Functions by inclusive share of the busy samples (stacks with none of ``idle``), each
    counted once per stack; frames on (nearly) every stack — the process's entry points — are
    left out."""
    busy = Counter({s: c for s, c in stacks.items() if not any(i in s for i in idle)})
    total = sum(busy.values()) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in busy.items():
        frames = [frame_name(f) for f in stack.split(";") if f]
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    inclusive = Counter({k: v for k, v in inclusive.items() if v < 0.9 * total})
    return [
        {
            "function": name,
            "inclusive_pct": round(100 * count / total, 1),
            "self_pct": round(100 * own[name] / total, 1),
        }
        for name, count in inclusive.most_common(n)
    ]


def buckets(stacks: Counter[str], rules: list[tuple[str, tuple[str, ...]]]) -> dict[str, float]:
    """Share of samples (%) per bucket: the first rule whose needle is in the stack wins; a
    needle starting with ``!`` matches stacks *without* the rest."""
    total = sum(stacks.values()) or 1
    out: Counter[str] = Counter()
    for stack, count in stacks.items():
        for name, needles in rules:
            if all((n[1:] not in stack) if n.startswith("!") else (n in stack) for n in needles):
                out[name] += count
                break
        else:
            out["other"] += count
    return {k: round(100 * v / total, 1) for k, v in out.most_common()}
