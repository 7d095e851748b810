"""Capacity: the highest item rate the whole system sustains on this machine.

    python bench/capacity.py          # steps 500 ... 24000 items/s, until one falls behind
    python bench/capacity.py --steps 1000 4000 --step-seconds 60
    python bench/capacity.py --sentinel [--replica-acks 0] [--min-replicas 0]

Runs ``watchkeeper run`` (default concurrency, embedded Redis, fresh home) against the soak's
local sources (``bench/soak_sources.py``: two feeds, an ndjson log endpoint, three listing
pages, TCP senders; the soak's mix — feeds 15 %, logs 35 %, listings 10 %, TCP 40 % — and its
intervals: 1 s, the site 2 s) and steps the offered load up without restarting anything: the
sources' item counters advance at the current step's rate, continuously. Each step settles,
then is measured: items offered (made available by the sources) and items processed (entries
added to the ``alerts``, ``logs`` and ``listings`` streams, counted in Redis). A source serves
only its newest few seconds of items, so a system that falls behind *loses* items: a step is
sustained when processed ≥ 97 % of offered and no TCP lines were skipped. It stops after the
first step that is not sustained (``--all`` runs every step).

For each step: CPU seconds per process role (worker parent, pool children, beat, listener,
Redis), CPU-µs per item per stage — fetch, parse, dedup + write, locate, TCP — from the pool
children's on-CPU py-spy samples split by stack (the listener's CPU is the TCP stage), Redis
round trips per item, and the hottest functions. Caps are set so that no item still served is
evicted from a seen-set. Results: ``bench/results/capacity.json``.

``--sentinel`` runs the same against Redis on Sentinel on this machine — a primary, two
replicas, three Sentinels (``bench/sentinel_topology.py``) — with ``--replica-acks`` replicas
confirming the writes the outside world is told about (``WATCHKEEPER_REPLICA_ACKS``; 0: no
``WAIT``) and the servers' ``min-replicas-to-write`` at ``--min-replicas``: the price of each
guarantee, in items/s (docs/reliability.md). Redis CPU is the primary's; the replicas' and
Sentinels' is reported apart.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from bench.common import write_result
from bench.sentinel_topology import LocalTopology
from bench.soak import SOAK_ENV, STREAMS, StreamCounter, _free_port
from bench.soak_sources import WINDOW_S, Rates, SoakSources
from bench.wk_run import (
    Profiler,
    WatchkeeperRun,
    buckets,
    clean_env,
    counter_delta,
    cpu_seconds,
    redis_counters,
    top_functions,
)
from workers.core import keys
from workers.core.settings import Settings

STEPS = (500, 1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000)
SUSTAINED = 0.97
GOAL = 4000
BASE = 1000.0
"""The sources' rates at multiplier 1 (items/s, the soak's mix); a step multiplies them."""

#: Pool-children work by stage, from on-CPU stacks: the first rule matching a stack wins.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("locate", ("tasks/locations/",)),
    ("fetch", ("workers/polling/fetch.py",)),
    ("fetch", ("scrape/robots",)),
    ("parse", ("tasks/feeds/parse.py",)),
    ("parse", ("tasks/feeds/parsers.py",)),
    ("parse", ("tasks/http_logs/",)),
    ("parse", ("tasks/scrape/extract",)),
    ("parse", ("bs4/",)),
    ("dedup + write", ("workers/polling/poll.py", "redis/")),
    ("dedup + write", ("workers/store/",)),
    ("dedup + write", ("workers/polling/poll.py",)),
    ("notify", ("tasks/notify/",)),
    ("memory guard", ("workers/guard/",)),
    ("Celery task overhead", ("celery/",)),
    ("Celery task overhead", ("billiard/",)),
    ("Celery task overhead", ("kombu/",)),
]


class SteppedSources(SoakSources):
    """Soak sources whose rates all scale by a multiplier that can change while running:
    item counters advance by rate x multiplier, continuously across changes."""

    def __init__(self, rates: Rates) -> None:
        super().__init__(rates)
        self.multiplier = 1.0
        self._load_s = 0.0
        self._since = time.time()

    def set_multiplier(self, value: float) -> None:
        self._load_s = self.load_seconds()
        self._since = time.time()
        self.multiplier = value

    def load_seconds(self) -> float:
        """Seconds of base-rate load offered so far."""
        return self._load_s + (time.time() - self._since) * self.multiplier

    def latest(self, rate: float) -> int:
        return int(self.load_seconds() * rate)

    def window(self, rate: float) -> int:
        return max(20, math.ceil(rate * self.multiplier * self.window_s))

    def offered(self) -> int:
        return sum(self.produced().values())


class Generator:
    """The stepped sources in a process of their own (so rendering them never competes with
    this process's counting for one interpreter lock), driven over a pipe."""

    def __init__(self, tcp_port: int, first_rate: float, site_interval: str) -> None:
        parent, child = mp.get_context("fork").Pipe()
        self.conn = parent
        self.proc = mp.get_context("fork").Process(
            target=_generate,
            args=(child, tcp_port, first_rate / BASE, site_interval),
            daemon=True,
        )
        self.proc.start()
        self.config_toml: str = self.conn.recv()

    def ask(self, *message: Any) -> Any:
        self.conn.send(message)
        return self.conn.recv()

    def set_rate(self, rate: float) -> None:
        self.ask("set", rate / BASE)

    def snapshot(self) -> dict[str, Any]:
        """Items offered per kind so far and TCP lines skipped (a sender fell behind)."""
        return dict(self.ask("snapshot"))

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.ask("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def _generate(conn: Any, tcp_port: int, multiplier: float, site_interval: str) -> None:
    sources = SteppedSources(Rates.split(BASE))
    sources.set_multiplier(multiplier)
    sources.start()
    conn.send(sources.config_toml(tcp_port, site_interval=site_interval))
    started_tcp = False
    while True:
        message = conn.recv()
        if message[0] == "set":
            sources.set_multiplier(message[1])
            if not started_tcp:  # the listener is up once the run is
                sources.send_tcp("watchkeeper", "127.0.0.1", tcp_port)
                started_tcp = True
            conn.send(None)
        elif message[0] == "snapshot":
            conn.send({**sources.produced(), "tcp_skipped": _skipped(sources)})
        else:
            sources.stop()
            conn.send(None)
            return


def run_env(max_rate: float, concurrency: int | None) -> dict[str, str]:
    rates = Rates.split(max_rate)
    biggest = max(20, math.ceil(max(rates.feed, rates.log, rates.listing) * WINDOW_S))
    env = dict(SOAK_ENV)
    env.update(
        {
            # An item still served must never be evicted from its seen-set.
            "WATCHKEEPER_MAX_SEEN": str(max(2000, 3 * biggest)),
            # The count reads each stream after the last counted entry: keep a few seconds.
            "WATCHKEEPER_MAX_LOGS": str(max(20_000, int(10 * (rates.log + rates.tcp)))),
            "WATCHKEEPER_MAX_ALERTS": str(max(5_000, int(10 * 2 * rates.feed))),
            "WATCHKEEPER_MAX_LISTINGS": str(max(2_000, int(10 * rates.listing))),
        }
    )
    if concurrency:
        env["WATCHKEEPER_CONCURRENCY"] = str(concurrency)
    return clean_env(env)


def count(counters: dict[str, StreamCounter]) -> int:
    return sum(c.update() for c in counters.values())


def by_stream(counters: dict[str, StreamCounter]) -> dict[str, int]:
    return {name: c.update() for name, c in counters.items()}


def measure_step(
    rate: float,
    sources: Generator,
    run: WatchkeeperRun,
    client: Any,
    counters: dict[str, StreamCounter],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    sources.set_rate(rate)
    print(f"[capacity] {rate:,.0f} items/s offered: settling {args.settle:g} s", flush=True)
    time.sleep(args.settle)
    profiler = Profiler(work / f"step-{int(rate)}", idle=False)
    (work / f"step-{int(rate)}").mkdir(exist_ok=True)
    roles = run.roles()
    for proc in roles["pool"]:
        profiler.start("pool", proc.pid)
    for name in ("worker_parent", "listener", "beat"):
        for proc in roles[name]:
            profiler.start(name, proc.pid)
    meter, redis0 = run.meter(), redis_counters(client)
    gen = psutil.Process(sources.proc.pid)
    gen_cpu0 = cpu_seconds([gen])
    snap0, done0 = sources.snapshot(), by_stream(counters)
    started = time.monotonic()
    while time.monotonic() - started < args.step_seconds:
        time.sleep(1.0)
        meter.sample()
        count(counters)
    elapsed = time.monotonic() - started
    snap1, done1 = sources.snapshot(), by_stream(counters)
    kinds = ("feeds", "logs", "listings", "tcp")
    offered_by = {k: snap1[k] - snap0[k] for k in kinds}
    done_by = {k: done1[k] - done0[k] for k in done1}
    offered, done = sum(offered_by.values()), sum(done_by.values())
    skipped = snap1["tcp_skipped"] - snap0["tcp_skipped"]
    gen_cpu = cpu_seconds([gen]) - gen_cpu0
    cpu, redis1 = meter.used(), redis_counters(client)
    stacks = profiler.stop()
    delta = counter_delta(redis0, redis1)
    pool = stacks.get("pool", Counter())
    pool_cpu = cpu.get("pool", 0.0)
    stage_pct = buckets(pool, STAGES)
    per_item = 1e6 / max(done, 1)
    stages = {name: round(pool_cpu * pct / 100 * per_item, 1) for name, pct in stage_pct.items()}
    stages["TCP (listener)"] = round(cpu.get("listener", 0.0) * per_item, 1)
    stages["Redis server"] = round(cpu.get("redis", 0.0) * per_item, 1)
    for role, label in (("redis_replicas", "Redis replicas"), ("sentinels", "Sentinels")):
        if role in cpu:
            stages[label] = round(cpu[role] * per_item, 1)
    stages["worker parent (dispatch, ack)"] = round(cpu.get("worker_parent", 0.0) * per_item, 1)
    stages["beat"] = round(cpu.get("beat", 0.0) * per_item, 1)
    ratio = done / offered if offered else 0.0
    sustained = ratio >= SUSTAINED and skipped == 0
    step = {
        "offered_per_s": rate,
        "offered": offered,
        "processed": done,
        "processed_per_s": round(done / elapsed, 1),
        "processed_ratio": round(ratio, 3),
        "offered_by_kind": offered_by,
        "processed_by_stream": done_by,
        "tcp_lines_skipped": skipped,
        "sustained": sustained,
        "seconds": round(elapsed, 1),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "machine_cpu_pct": round(100 * sum(cpu.values()) / elapsed / (os.cpu_count() or 1), 1),
        "load_generator_cpu_pct": round(100 * gen_cpu / elapsed, 1),
        "cpu_us_per_item": stages,
        "cpu_us_per_item_total": round(sum(cpu.values()) * per_item, 1),
        "redis_round_trips_per_item": round(delta["reads"] / max(done, 1), 3),
        "pool_cpu_by_stage_pct": stage_pct,
        "hottest_pool_functions": top_functions(pool, 15),
        "hottest_parent_functions": top_functions(stacks.get("worker_parent", Counter()), 8),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(
        f"[capacity] {rate:,.0f}/s: processed {step['processed_per_s']:,.0f}/s "
        f"({ratio:.1%}), TCP skipped {skipped}, machine CPU {step['machine_cpu_pct']} %, "
        f"{step['cpu_us_per_item_total']} CPU-µs/item -> "
        f"{'sustained' if sustained else 'FALLS BEHIND'}",
        flush=True,
    )
    return step


def topology_roles(topology: LocalTopology) -> Any:
    """The Sentinel topology's processes by role: the primary (``redis``), the replicas and
    the Sentinels."""

    def roles() -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {"redis": [], "redis_replicas": [], "sentinels": []}
        with contextlib.suppress(RuntimeError):
            primary = topology.primary_port()
            for proc in topology.servers:
                if proc.popen is not None and proc.alive():
                    role = "redis" if proc.port == primary else "redis_replicas"
                    out[role].append(psutil.Process(proc.popen.pid))
        out["sentinels"] = [
            psutil.Process(p.popen.pid) for p in topology.watchers if p.popen and p.alive()
        ]
        return out

    return roles


def _skipped(sources: SoakSources) -> int:
    return int(sources.tcp_skipped.get("watchkeeper", 0))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=float, nargs="+", default=list(STEPS))
    parser.add_argument("--step-seconds", type=float, default=30.0, help="measured per step")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=0, help="0: the default")
    parser.add_argument("--all", action="store_true", help="run every step even after a miss")
    parser.add_argument(
        "--site-interval", default="2s", help="the listing site's interval (the soak's: 2s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--sentinel", action="store_true", help="Redis on Sentinel: 1 primary, 2 replicas"
    )
    parser.add_argument("--replica-acks", type=int, default=1, help="WATCHKEEPER_REPLICA_ACKS")
    parser.add_argument("--min-replicas", type=int, default=1, help="min-replicas-to-write")
    parser.add_argument("--name", default="capacity", help="bench/results/NAME.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wk-capacity-"))
    env = run_env(max(args.steps), args.concurrency or None)
    topology = roles = None
    if args.sentinel:
        topology = LocalTopology(min_replicas=args.min_replicas).start()
        env.update(REDIS_URL=topology.url(), WATCHKEEPER_REPLICA_ACKS=str(args.replica_acks))
        roles = topology_roles(topology)
    settings = Settings.from_env(env)
    config = work / "sources.toml"
    tcp_port = _free_port()
    run = WatchkeeperRun(work / "home", config, env, roles)
    steps: list[dict[str, Any]] = []
    load0 = os.getloadavg()
    sources = Generator(tcp_port, args.steps[0], args.site_interval)
    try:
        config.write_text(sources.config_toml)
        client = run.start()
        counters = {n: StreamCounter(client, keys.STREAM.key(settings, n)) for n in STREAMS}
        for rate in args.steps:
            step = measure_step(rate, sources, run, client, counters, args, work)
            steps.append(step)
            if not step["sustained"] and not args.all:
                break
    except KeyboardInterrupt:
        print("[capacity] interrupted", flush=True)
    finally:
        problems = run.stop()
        sources.stop()
        if topology is not None:
            topology.stop()
    for problem in problems:
        print(f"[capacity] {problem}", file=sys.stderr)
    held = [s["offered_per_s"] for s in steps if s["sustained"]]
    result = {
        "command": "python bench/capacity.py " + " ".join(sys.argv[1:]),
        "highest_sustained_items_per_s": max(held) if held else 0,
        "goal_items_per_s": GOAL,
        "criterion": f"processed >= {SUSTAINED:.0%} of offered, no TCP lines skipped",
        "mix": "soak: feeds 15 % (two feeds), logs 35 %, listings 10 %, TCP 40 %",
        "intervals": {"feeds": "1s", "logs": "1s", "site": args.site_interval},
        "redis": (
            {
                "topology": "Sentinel: 1 primary, 2 replicas, 3 Sentinels on this machine",
                "replica_acks": args.replica_acks,
                "min_replicas_to_write": args.min_replicas,
            }
            if args.sentinel
            else "embedded (one server)"
        ),
        "env": {k: v for k, v in env.items() if k.startswith(("WATCHKEEPER_", "MOONSHOT_"))},
        "steps": steps,
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "stop_problems": problems,
    }
    path = write_result(args.name, result)
    report(result, path)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(result: dict[str, Any], path: Path) -> None:
    print("\n| offered/s | processed/s | ratio | machine CPU % | CPU-µs/item | sustained |")
    print("|---|---|---|---|---|---|")
    for s in result["steps"]:
        print(
            f"| {s['offered_per_s']:,.0f} | {s['processed_per_s']:,.0f} | {s['processed_ratio']}"
            f" | {s['machine_cpu_pct']} | {s['cpu_us_per_item_total']} | {s['sustained']} |"
        )
    print(
        f"\nhighest sustained: {result['highest_sustained_items_per_s']:,.0f} items/s "
        f"(goal >= {GOAL:,}); load before {result['load_before']}, after {result['load_after']}"
    )
    if result["steps"]:
        last = result["steps"][-1]
        print(f"CPU-µs per item at {last['offered_per_s']:,.0f}/s: {last['cpu_us_per_item']}")
        print("hottest pool functions (on-CPU):")
        for f in last["hottest_pool_functions"][:10]:
            print(f"  {f['inclusive_pct']:5.1f}%  (self {f['self_pct']:4.1f}%)  {f['function']}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
