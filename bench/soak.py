"""Soak benchmark: memory against items processed, watchkeeper vs the seeds' naive "before".

    python bench/soak.py --quick            # 150,000 items, about 5 minutes on 2 cores
    python bench/soak.py                    # 1,000,000 items (about a week of the seed's
                                            # 1,000 entries a minute, in compressed time)
    python bench/soak.py --items 20000      # a smoke run

Runs the whole system for real: ``watchkeeper run`` (prefork worker, beat, TCP listener, its
own embedded Redis under a temporary WATCHKEEPER_HOME) against local sources that make fresh
unique items continuously (``bench/soak_sources.py``: two feeds, an ndjson log endpoint, three
listing pages, TCP lines) — and, in the same run against the same sources, the naive baseline
(``bench/naive_baseline.py``) with its own embedded Redis. Caps are set small (printed at the
start) so they are reached early and the rest of the run shows whether memory stays flat.

Every few seconds it samples the RSS of the worker parent, each pool child, beat and the
listener (found from the supervisor's process tree), Redis ``used_memory`` and key counts, the
items each system has processed (entries added to its streams), and the baseline's RSS and
Redis memory. It writes ``bench/results/soak.json`` and ``bench/results/soak.png`` and prints
the slope in MB per 100k items after warm-up (a linear fit over the samples after the first
20% of items). Ctrl-C stops everything it started.
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
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, stop_run_process, write_result
from bench.soak_sources import Rates, SoakSources
from workers.core import keys
from workers.core.connection import EmbeddedRedis, connect
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.ops.status import redis_section

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
QUICK_ITEMS = 200_000
WARMUP = 0.2
GOAL_WORKERS_MB_PER_100K = 0.5
GOAL_CHILD_USS_MB = 60.0
MEASURES = ("rss", "pss", "uss")
NO_RECYCLE = 1_000_000_000

#: Small caps so they are reached within the warm-up; short ages for the same reason.
SOAK_ENV = {
    "WATCHKEEPER_MAX_SEEN": "2000",
    "WATCHKEEPER_MAX_LOGS": "20000",
    "WATCHKEEPER_MAX_ALERTS": "5000",
    "WATCHKEEPER_MAX_LISTINGS": "2000",
    "WATCHKEEPER_MAX_HISTORY": "100",
    "WATCHKEEPER_HOST_DELAY": "0",
    "WATCHKEEPER_HOST_CONCURRENCY": "4",
    "WATCHKEEPER_LOCATION_FLUSH_INTERVAL": "2",
    "MOONSHOT_MAX_BUFFER_AGE": "20",
    "MOONSHOT_MAX_ALERT_BATCH_AGE": "20",
    "MOONSHOT_CLEANUP_INTERVAL": "10",
    "MOONSHOT_API_KEY": "",
    # The prefork parent keeps a timer per running task for its soft and hard limits; kombu's
    # Timer.cancel only flags an entry, which stays in the heap until its time comes, so the
    # parent holds about (tasks per second x this limit) entries: bounded, but reached only
    # after one limit's worth of time. A short limit brings that plateau into the warm-up.
    "WATCHKEEPER_TASK_TIME_LIMIT": "30",
}

#: Stream → what counts as processed items in it (``locations`` is derived from alerts).
STREAMS = ("alerts", "logs", "listings")

_COUNT_AFTER = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], '+')
if #e == 0 then return {0, ''} end
return {#e, e[#e][1]}
"""


class StreamCounter:
    """Entries added to a capped stream, counted between samples (Redis 6.2 has no
    ``entries-added``; XLEN stops at the cap). ``overtaken`` is set if trimming ever removed
    entries before they were counted, so the count would be low."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        self.last = ""
        self.count = 0
        self.overtaken = False
        self.script = client.register_script(_COUNT_AFTER)

    def update(self) -> int:
        if self.last:
            first = self.client.xrange(self.key, "-", "+", count=1)
            if first and _id_tuple(str(first[0][0])) > _id_tuple(self.last):
                self.overtaken = True
        n, last = self.script(keys=[self.key], args=["(" + self.last if self.last else "-"])
        if int(n):
            self.count += int(n)
            self.last = str(last)
        return self.count


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# --- processes ------------------------------------------------------------------------------


def _rss(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_info().rss) / MB
    except psutil.Error:
        return 0.0


def _full(proc: psutil.Process | None) -> dict[str, float]:
    """RSS, USS (pages only this process maps) and PSS (shared pages split among their
    sharers, so a group's PSS adds up to what it really occupies) in MB; zeros when gone."""
    try:
        info = proc.memory_full_info() if proc is not None else None
    except psutil.Error:
        info = None
    if info is None:
        return {"rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0}
    return {k: round(float(getattr(info, k[:3])) / MB, 2) for k in ("rss_mb", "uss_mb", "pss_mb")}


def process_tree(supervisor: int) -> dict[str, Any]:
    """The run's processes by role, from the supervisor's children."""
    roles: dict[str, Any] = {
        "worker": None,
        "pool": [],
        "beat": None,
        "listener": None,
        "notify": None,
        "notify_pool": [],
    }
    try:
        children = psutil.Process(supervisor).children()
    except psutil.Error:
        return roles
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "worker" in cmd and "notify" in cmd:  # the delivery worker (--queues notify)
            roles["notify"] = child
            with contextlib.suppress(psutil.Error):
                roles["notify_pool"] = child.children()
        elif "worker" in cmd:
            roles["worker"] = child
            with contextlib.suppress(psutil.Error):
                roles["pool"] = child.children()
        elif "beat" in cmd:
            roles["beat"] = child
        elif "listen" in cmd:
            roles["listener"] = child
    return roles


def measure_processes(supervisor: int, seen_pids: set[int]) -> dict[str, Any]:
    roles = process_tree(supervisor)
    worker, pool = roles["worker"], roles["pool"]
    for proc in [worker, roles["beat"], roles["listener"], *pool]:
        if proc is not None:
            seen_pids.add(proc.pid)
    children = [{"pid": p.pid, **_full(p)} for p in pool]
    parent = _full(worker)
    return {
        "worker_parent_rss_mb": parent["rss_mb"],
        "worker_parent_uss_mb": parent["uss_mb"],
        "worker_parent_pss_mb": parent["pss_mb"],
        "pool_children": children,
        "pool_children_rss_mb": round(sum(c["rss_mb"] for c in children), 2),
        "pool_child_uss_max_mb": max((c["uss_mb"] for c in children), default=0.0),
        "workers_rss_mb": round(parent["rss_mb"] + sum(c["rss_mb"] for c in children), 2),
        "workers_uss_mb": round(parent["uss_mb"] + sum(c["uss_mb"] for c in children), 2),
        "workers_pss_mb": round(parent["pss_mb"] + sum(c["pss_mb"] for c in children), 2),
        "beat_rss_mb": round(_rss(roles["beat"]), 2) if roles["beat"] else 0.0,
        "listener_rss_mb": round(_rss(roles["listener"]), 2) if roles["listener"] else 0.0,
        "supervisor_rss_mb": round(_rss(psutil.Process(supervisor)), 2)
        if psutil.pid_exists(supervisor)
        else 0.0,
    }


def redis_pid(home: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((home / "redis" / "redis.pid").read_text().strip())
    return None


# --- the run --------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="wk-soak-"))
        self.home = self.tmp / "home"
        self.naive_home = self.tmp / "naive"
        self.home.mkdir()
        self.rates = Rates.split(args.rate)
        self.sources = SoakSources(self.rates)
        self.env = self.run_env()
        self.run_proc: subprocess.Popen[bytes] | None = None
        self.naive_proc: subprocess.Popen[bytes] | None = None
        self.naive_redis = EmbeddedRedis(self.naive_home)
        self.naive_redis_held = False
        self.pids: set[int] = set()
        self.samples: list[dict[str, Any]] = []
        self.status_end: dict[str, Any] = {}
        self.counters: dict[str, StreamCounter] = {}

    def run_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WATCHKEEPER_", "MOONSHOT_")) and k != "REDIS_URL"
        }
        env.update(SOAK_ENV)
        # The seen-set cap must exceed the newest items a source serves, or items still in
        # the source would be evicted and seen as new again.
        biggest = max(
            self.sources.window(r) for r in (self.rates.feed, self.rates.log, self.rates.listing)
        )
        env["WATCHKEEPER_MAX_SEEN"] = str(max(int(SOAK_ENV["WATCHKEEPER_MAX_SEEN"]), 2 * biggest))
        if not self.args.recycle:
            env["WATCHKEEPER_MAX_TASKS_PER_CHILD"] = str(NO_RECYCLE)
        env.update(
            {
                "WATCHKEEPER_HOME": str(self.home),
                "PYTHONUNBUFFERED": "1",
                "WATCHKEEPER_CONCURRENCY": str(self.args.concurrency),
            }
        )
        return env

    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start(self) -> tuple[redis.Redis, redis.Redis]:
        self.sources.start()
        tcp_port, naive_port = _free_port(), _free_port()
        config = self.home / "soak.toml"
        config.write_text(self.sources.config_toml(tcp_port))
        self.naive_redis.acquire()
        self.naive_redis_held = True
        naive_url = f"unix://{self.naive_redis.socket}"
        logs = self.tmp / "logs"
        logs.mkdir()
        self.naive_proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "naive_baseline.py"),
                "--base",
                self.sources.base,
                "--redis-url",
                naive_url,
                "--tcp-port",
                str(naive_port),
            ],
            cwd=ROOT,
            stdout=open(logs / "naive.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.run_proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "run", "--config", str(config)],
            cwd=ROOT,
            env=self.env,
            stdout=open(logs / "run.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pids.update({self.naive_proc.pid, self.run_proc.pid})
        ours = self.wait_for_run()
        self.sources.send_tcp("watchkeeper", "127.0.0.1", tcp_port)
        self.sources.send_tcp("naive", "127.0.0.1", naive_port)
        return ours, connect(f"redis+socket://{self.naive_redis.socket}")

    def wait_for_run(self) -> redis.Redis:
        deadline = time.monotonic() + 120
        run_json = self.home / "run.json"
        while time.monotonic() < deadline:
            assert self.run_proc is not None
            if self.run_proc.poll() is not None:
                raise SystemExit(
                    f"watchkeeper run exited ({self.run_proc.returncode}); see "
                    f"{self.tmp / 'logs' / 'run.log'}"
                )
            if run_json.exists():
                with contextlib.suppress(ValueError, KeyError):
                    return connect(json.loads(run_json.read_text())["redis_url"])
            time.sleep(0.2)
        raise SystemExit("watchkeeper run did not start within 120 s")

    def loop(self, ours: redis.Redis, naive: redis.Redis) -> None:
        assert self.run_proc is not None
        settings = self.settings()
        runtime = Runtime(settings, ours, self.home / "soak.toml")
        counters = self.counters = {
            name: StreamCounter(ours, keys.STREAM.key(settings, name)) for name in STREAMS
        }
        started = time.monotonic()
        deadline = started + self.args.max_minutes * 60
        target = self.args.items
        ours_pids: set[int] = set()
        while True:
            time.sleep(self.args.sample_every)
            if self.run_proc.poll() is not None:
                raise SystemExit(f"watchkeeper run exited early ({self.run_proc.returncode})")
            sample = self.sample(runtime, counters, naive, ours_pids, started)
            self.samples.append(sample)
            print(
                f"[soak] {sample['t']:6.0f}s  items {sample['items']:>9,} "
                f"(naive {sample['naive']['items']:,})  workers {sample['workers_rss_mb']:.1f} MB"
                f" (PSS {sample['workers_pss_mb']:.1f}, child USS max "
                f"{sample['pool_child_uss_max_mb']:.1f})"
                f"  redis {sample['redis']['used_memory'] / MB:.1f} MB  |  naive "
                f"{sample['naive']['rss_mb']:.1f} MB, redis "
                f"{sample['naive']['redis_used_memory'] / MB:.1f} MB",
                flush=True,
            )
            if sample["items"] >= target:
                break
            if time.monotonic() > deadline:
                print(
                    f"[soak] --max-minutes {self.args.max_minutes} reached at "
                    f"{sample['items']:,} items; stopping",
                    flush=True,
                )
                break
        self.pids |= ours_pids
        self.status_end = self.full_status(ours)

    def sample(
        self,
        runtime: Runtime,
        counters: dict[str, StreamCounter],
        naive: redis.Redis,
        ours_pids: set[int],
        started: float,
    ) -> dict[str, Any]:
        assert self.run_proc is not None and self.naive_proc is not None
        by_stream = {name: c.update() for name, c in counters.items()}
        procs = measure_processes(self.run_proc.pid, ours_pids)
        section = redis_section(runtime)
        rpid = redis_pid(self.home)
        naive_streams = {name: int(naive.xlen(f"naive:stream:{name}")) for name in STREAMS}
        naive_mem = _full(psutil.Process(self.naive_proc.pid))
        naive_info = naive.info("memory")
        return {
            "t": round(time.monotonic() - started, 1),
            "items": sum(by_stream.values()),
            "items_by_stream": by_stream,
            "produced": self.sources.produced(),
            "tcp_sent": dict(self.sources.tcp_sent),
            "tcp_skipped": dict(self.sources.tcp_skipped),
            "cpu_percent": psutil.cpu_percent(),
            "load_1m": round(os.getloadavg()[0], 2),
            **procs,
            "redis": {
                "used_memory": section["used_memory"],
                "rss_mb": round(_rss(psutil.Process(rpid)), 2) if rpid else None,
                "keys_total": section["keys_total"],
                "keys_by_kind": section["keys_by_kind"],
                "streams": {k: v["size"] for k, v in section["streams"].items()},
            },
            "naive": {
                "items": sum(naive_streams.values()),
                "items_by_stream": naive_streams,
                "rss_mb": naive_mem["rss_mb"],
                "uss_mb": naive_mem["uss_mb"],
                "pss_mb": naive_mem["pss_mb"],
                "redis_used_memory": int(naive_info["used_memory"]),
                "redis_keys": int(naive.dbsize()),
            },
        }

    def full_status(self, ours: redis.Redis) -> dict[str, Any]:
        """``watchkeeper status --json`` at the end of the run (as a user would see it)."""
        url = json.loads((self.home / "run.json").read_text())["redis_url"]
        env = {**self.env, "REDIS_URL": url}
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", "status", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            status: dict[str, Any] = json.loads(out.stdout)
        except ValueError:
            return {"error": out.stderr.strip()[-500:]}
        return status

    def stop(self) -> list[str]:
        """Stop everything this run started; return what had to be killed (ideally nothing)."""
        problems = stop_run_process(self.run_proc)
        if self.naive_proc is not None and self.naive_proc.poll() is None:
            self.naive_proc.send_signal(signal.SIGTERM)
            try:
                self.naive_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                problems.append("naive baseline did not stop within 30 s; killed")
                self.naive_proc.kill()
                self.naive_proc.wait(timeout=10)
        self.sources.stop()
        if self.naive_redis_held:
            self.naive_redis.release()
        ours_redis = redis_pid(self.home)
        deadline = time.monotonic() + 15
        left: list[int] = []
        while time.monotonic() < deadline:
            left = [p for p in self.pids | ({ours_redis} if ours_redis else set()) if _alive(p)]
            if not left:
                break
            time.sleep(0.2)
        for pid in left:
            problems.append(f"process {pid} outlived the run; killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return problems


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- results --------------------------------------------------------------------------------


def slope(samples: list[dict[str, Any]], x_of: Any, y_of: Any) -> float | None:
    """MB per 100k items: a least-squares line over the samples after the warm-up."""
    points = [(x_of(s), y_of(s)) for s in samples]
    if not points:
        return None
    last = max(x for x, _ in points)
    after = [(x / 1e5, y) for x, y in points if x >= WARMUP * last]
    if len(after) < 3 or max(x for x, _ in after) == min(x for x, _ in after):
        return None
    n = len(after)
    mx = sum(x for x, _ in after) / n
    my = sum(y for _, y in after) / n
    return round(
        float(sum((x - mx) * (y - my) for x, y in after) / sum((x - mx) ** 2 for x, _ in after)), 4
    )


def slopes(samples: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    def ours(y: Any) -> float | None:
        return slope(samples, lambda s: s["items"], y)

    def naive(y: Any) -> float | None:
        return slope(samples, lambda s: s["naive"]["items"], y)

    return {
        "ours": {
            "workers_mb_per_100k": ours(lambda s: s["workers_rss_mb"]),
            "worker_parent_mb_per_100k": ours(lambda s: s["worker_parent_rss_mb"]),
            "pool_children_mb_per_100k": ours(lambda s: s["pool_children_rss_mb"]),
            "workers_uss_mb_per_100k": ours(lambda s: s["workers_uss_mb"]),
            "beat_mb_per_100k": ours(lambda s: s["beat_rss_mb"]),
            "listener_mb_per_100k": ours(lambda s: s["listener_rss_mb"]),
            "redis_mb_per_100k": ours(lambda s: s["redis"]["used_memory"] / MB),
        },
        "naive": {
            "process_mb_per_100k": naive(lambda s: s["naive"]["rss_mb"]),
            "redis_mb_per_100k": naive(lambda s: s["naive"]["redis_used_memory"] / MB),
        },
    }


def memory_goals(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 15: every pool child <= 60 MB USS, and the worker processes together (parent +
    children) below the naive process at every sample. "Together" is given three ways, each
    against the naive process measured the same way: RSS summed (counts pages the processes
    share once per process, so it overstates a prefork group), PSS summed (each shared page
    split among its sharers: what the group really occupies) and USS summed (private pages only:
    understates it)."""
    child_max = max(s["pool_child_uss_max_mb"] for s in samples)
    totals: dict[str, Any] = {}
    for m in MEASURES:
        below = [s[f"workers_{m}_mb"] < s["naive"][f"{m}_mb"] for s in samples]
        from_index = next((i for i in range(len(below)) if all(below[i:])), None)
        totals[m] = {
            "first": {
                "workers": samples[0][f"workers_{m}_mb"],
                "naive": samples[0]["naive"][f"{m}_mb"],
            },
            "last": {
                "workers": samples[-1][f"workers_{m}_mb"],
                "naive": samples[-1]["naive"][f"{m}_mb"],
            },
            "samples_below": sum(below),
            "below_at_every_sample": all(below),
            "below_from_items": None if from_index is None else samples[from_index]["items"],
        }
    return {
        "pool_child_uss_max_mb": child_max,
        "pool_child_uss_goal_mb": GOAL_CHILD_USS_MB,
        "pool_child_uss_met": child_max <= GOAL_CHILD_USS_MB,
        "samples": len(samples),
        "workers_vs_naive": totals,
    }


def plot(samples: list[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = [s["items"] / 1000 for s in samples]
    nk = [s["naive"]["items"] / 1000 for s in samples]
    sl = result["slopes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    left.plot(
        nk,
        [s["naive"]["rss_mb"] for s in samples],
        color="tab:red",
        label=f"naive baseline process ({_fmt(sl['naive']['process_mb_per_100k'])} MB/100k)",
    )
    left.plot(
        k,
        [s["workers_rss_mb"] for s in samples],
        color="tab:blue",
        label=f"watchkeeper workers: parent + pool children "
        f"({_fmt(sl['ours']['workers_mb_per_100k'])} MB/100k)",
    )
    left.plot(
        k,
        [s.get("workers_pss_mb", 0.0) for s in samples],
        color="tab:blue",
        ls="--",
        label="watchkeeper workers, PSS summed (shared pages counted once)",
    )
    left.plot(
        k,
        [s.get("pool_child_uss_max_mb", 0.0) for s in samples],
        color="tab:purple",
        label=f"largest pool child, USS (goal <= {GOAL_CHILD_USS_MB:.0f} MB)",
    )
    left.plot(
        k,
        [s["worker_parent_rss_mb"] for s in samples],
        color="tab:blue",
        ls=":",
        label="watchkeeper worker parent",
    )
    left.plot(
        k,
        [s["listener_rss_mb"] for s in samples],
        color="tab:green",
        ls="--",
        label="watchkeeper TCP listener",
    )
    left.plot(
        k, [s["beat_rss_mb"] for s in samples], color="tab:gray", ls="--", label="watchkeeper beat"
    )
    left.set_title("Process memory (RSS unless noted)")
    left.set_ylabel("MB")
    right.plot(
        nk,
        [s["naive"]["redis_used_memory"] / MB for s in samples],
        color="tab:red",
        label=f"naive baseline ({_fmt(sl['naive']['redis_mb_per_100k'])} MB/100k)",
    )
    right.plot(
        k,
        [s["redis"]["used_memory"] / MB for s in samples],
        color="tab:blue",
        label=f"watchkeeper ({_fmt(sl['ours']['redis_mb_per_100k'])} MB/100k)",
    )
    right.set_title("Redis used_memory")
    right.set_ylabel("MB")
    warm = WARMUP * (k[-1] if k else 0)
    for ax in (left, right):
        ax.axvspan(0, warm, color="0.92", zorder=0)
        ax.set_xlabel("items processed (thousands)")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    cfg = result["config"]
    fig.suptitle(
        f"watchkeeper soak: {result['items_processed']:,} items in "
        f"{result['duration_s'] / 60:.1f} min, {cfg['rate_per_s']:,.0f} items/s offered, "
        f"concurrency {cfg['concurrency']}; caps: seen {cfg['caps']['max_seen']}, logs "
        f"{cfg['caps']['max_logs']}, alerts {cfg['caps']['max_alerts']}, listings "
        f"{cfg['caps']['max_listings']} (grey: warm-up)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def redis_version(client: redis.Redis) -> str:
    return str(client.info("server").get("redis_version", "?"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--items",
        type=int,
        default=1_000_000,
        help="stop once watchkeeper has processed this many items",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ITEMS:,} items (a few minutes)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="items per second the sources offer (all kinds together)",
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size")
    parser.add_argument(
        "--recycle",
        action="store_true",
        help="keep the default WATCHKEEPER_MAX_TASKS_PER_CHILD; without it pool "
        "children are never recycled for task count, so a per-task leak "
        "in them cannot hide behind recycling",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's temporary home and logs"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="stop after this long whatever the count (0: 3x the expected time)",
    )
    parser.add_argument("--name", default="soak", help="results file name (bench/results/NAME)")
    args = parser.parse_args()
    if args.quick:
        args.items = QUICK_ITEMS
    if not args.max_minutes:
        args.max_minutes = 3 * args.items / args.rate / 60 + 5

    soak = Soak(args)
    settings = soak.settings()
    caps = {
        "max_seen": settings.max_seen,
        "max_logs": settings.max_logs,
        "max_alerts": settings.max_alerts,
        "max_listings": settings.max_listings,
        "max_history": settings.max_history,
        "location_buffer": settings.moonshot_max_buffer_size,
        "alert_hash_ttl_s": settings.moonshot_max_alert_batch_age
        + settings.moonshot_cleanup_interval,
        "max_tasks_per_child": settings.max_tasks_per_child,
        "task_time_limit_s": settings.task_time_limit,
    }
    print(
        f"[soak] {args.items:,} items at {args.rate:,.0f} items/s offered (feeds "
        f"{soak.rates.feed * 2:,.0f}, logs {soak.rates.log:,.0f}, listings "
        f"{soak.rates.listing:,.0f}, tcp {soak.rates.tcp:,.0f}); caps: "
        + ", ".join(f"{k}={v}" for k, v in caps.items()),
        flush=True,
    )
    print(f"[soak] home {soak.home}; logs {soak.tmp / 'logs'}", flush=True)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    versions: dict[str, str] = {}
    started = time.time()
    try:
        ours, naive = soak.start()
        versions = {"redis": redis_version(ours), "naive_redis": redis_version(naive)}
        soak.loop(ours, naive)
    except KeyboardInterrupt:
        interrupted = True
        print("\n[soak] interrupted; stopping everything", flush=True)
    finally:
        problems = soak.stop()
        signal.signal(signal.SIGTERM, previous)
    for problem in problems:
        print(f"[soak] {problem}", file=sys.stderr)
    if args.keep:
        print(f"[soak] kept {soak.tmp}")
    if not soak.samples:
        if not args.keep:
            shutil.rmtree(soak.tmp, ignore_errors=True)
        return 130 if interrupted else 1

    samples = soak.samples
    last = samples[-1]
    result: dict[str, Any] = {
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "interrupted": interrupted,
        "items_processed": last["items"],
        "items_processed_naive": last["naive"]["items"],
        "duration_s": round(last["t"], 1),
        "items_per_s": round(last["items"] / last["t"], 1) if last["t"] else None,
        "config": {
            "items_target": args.items,
            "rate_per_s": args.rate,
            "rates": {
                "feed_each": soak.rates.feed,
                "log": soak.rates.log,
                "listing": soak.rates.listing,
                "tcp": soak.rates.tcp,
            },
            "concurrency": args.concurrency,
            "sample_every_s": args.sample_every,
            "warmup_fraction": WARMUP,
            "caps": caps,
            "env": {
                k: v
                for k, v in soak.env.items()
                if k.startswith(("WATCHKEEPER_", "MOONSHOT_"))
                and k not in ("WATCHKEEPER_HOME", "MOONSHOT_API_KEY")
            },
            "intervals": {"feeds": "1s", "logs": "1s", "site": "2s"},
        },
        "versions": {**versions, "python": sys.version.split()[0]},
        "memory_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "slopes": slopes(samples),
        "goal": {
            "workers_mb_per_100k": GOAL_WORKERS_MB_PER_100K,
            "redis": "flat under caps",
            "pool_child_uss_mb": GOAL_CHILD_USS_MB,
        },
        "memory": memory_goals(samples),
        "count_may_be_low": [name for name, c in soak.counters.items() if c.overtaken],
        "stop_problems": problems,
        "final": {
            k: last[k]
            for k in (
                "workers_rss_mb",
                "worker_parent_rss_mb",
                "pool_children_rss_mb",
                "beat_rss_mb",
                "listener_rss_mb",
                "redis",
                "naive",
                "produced",
                "tcp_sent",
                "tcp_skipped",
            )
        },
        "status_at_end": {
            k: soak.status_end.get(k)
            for k in ("redis", "workers", "task_memory", "locations", "tcp", "dead_letters")
        },
        "samples": samples,
    }
    result["slopes"]["ours"]["meets_goal"] = (
        result["slopes"]["ours"]["workers_mb_per_100k"] is not None
        and result["slopes"]["ours"]["workers_mb_per_100k"] <= GOAL_WORKERS_MB_PER_100K
    )
    path = write_result(args.name, result)
    png = RESULTS / f"{args.name}.png"
    plot(samples, result, png)
    report(result, path, png)
    if not args.keep:
        shutil.rmtree(soak.tmp, ignore_errors=True)
    return 130 if interrupted else 0


def report(result: dict[str, Any], path: Path, png: Path) -> None:
    sl = result["slopes"]
    first, last = result["samples"][0], result["samples"][-1]
    print(
        f"\n[soak] {result['items_processed']:,} items (naive "
        f"{result['items_processed_naive']:,}) in {result['duration_s'] / 60:.1f} min, "
        f"{result['items_per_s']:,} items/s"
    )
    print("| memory slope after warm-up, MB per 100k items | watchkeeper | naive |")
    print("|---|---|---|")
    print(
        f"| worker processes (RSS) | {_fmt(sl['ours']['workers_mb_per_100k'])} "
        f"(parent {_fmt(sl['ours']['worker_parent_mb_per_100k'])}, children "
        f"{_fmt(sl['ours']['pool_children_mb_per_100k'])}) | "
        f"{_fmt(sl['naive']['process_mb_per_100k'])} |"
    )
    print(
        f"| Redis used_memory | {_fmt(sl['ours']['redis_mb_per_100k'])} | "
        f"{_fmt(sl['naive']['redis_mb_per_100k'])} |"
    )
    print(
        f"| listener / beat (RSS) | {_fmt(sl['ours']['listener_mb_per_100k'])} / "
        f"{_fmt(sl['ours']['beat_mb_per_100k'])} | |"
    )
    print(
        f"[soak] goal: workers <= {GOAL_WORKERS_MB_PER_100K} MB/100k: "
        f"{'met' if sl['ours']['meets_goal'] else 'NOT met'}; Redis "
        f"{first['redis']['used_memory'] / MB:.1f} -> {last['redis']['used_memory'] / MB:.1f}"
        f" MB, keys {last['redis']['keys_total']}, streams {last['redis']['streams']}"
    )
    print(
        f"[soak] naive: process {first['naive']['rss_mb']:.1f} -> "
        f"{last['naive']['rss_mb']:.1f} MB, Redis "
        f"{first['naive']['redis_used_memory'] / MB:.1f} -> "
        f"{last['naive']['redis_used_memory'] / MB:.1f} MB"
    )
    mem = result["memory"]
    print(
        f"[soak] pool child USS, max over {mem['samples']} samples: "
        f"{mem['pool_child_uss_max_mb']:.1f} MB (goal <= {GOAL_CHILD_USS_MB:.0f}): "
        f"{'met' if mem['pool_child_uss_met'] else 'NOT met'}"
    )
    print(
        "| workers (parent + children) vs naive process, MB | first sample | last sample | "
        "below naive |"
    )
    print("|---|---|---|---|")
    for m, t in mem["workers_vs_naive"].items():
        since = (
            "at every sample"
            if t["below_at_every_sample"]
            else "never"
            if t["below_from_items"] is None
            else f"from {t['below_from_items']:,} items on"
        )
        print(
            f"| {m.upper()} summed | {t['first']['workers']:.1f} vs {t['first']['naive']:.1f} | "
            f"{t['last']['workers']:.1f} vs {t['last']['naive']:.1f} | {since} "
            f"({t['samples_below']}/{mem['samples']}) |"
        )
    print(f"[soak] wrote {path.relative_to(ROOT)} and {png.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
