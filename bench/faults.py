"""Fault injection across hosts: nothing lost, nothing doubled, nothing leaked (issue 12).

    sudo python bench/faults.py             # about 10 minutes, 50 faults of every kind
    sudo python bench/faults.py --quick     # under 3 minutes, 10 of every kind (the CI run)
    sudo python bench/faults.py --seed 7 --faults 20 --keep
    sudo python bench/faults.py --sentinel  # Redis on Sentinel: 1 primary, 2 replicas, 3 Sentinels

Builds hosts on this machine with network namespaces joined by veth links to a switch
(``bench/faults_net.py``; root needed, the machine's own network namespace is not touched):
Redis (the machine's redis-server, AOF on, a planted password), two worker hosts
(``celery -A workers worker``, prefork), beat, the TCP listener, the sources (the soak's fresh
unique items behind a planted token, ``bench/faults_sources.py``) and an observer (this
process). Then, at moments drawn from a fixed seed, it injects faults of every kind:

* ``pool_kill``     SIGKILL of one prefork pool child (whatever it was doing, e.g. between
                    dedup and hand-off, or mid-batch)
* ``host_kill``     SIGKILL of a whole worker host (every process in it), restarted soon after
* ``redis_restart`` Redis stopped (SIGTERM: AOF flushed) and started again
* ``partition``     one worker host's link down for longer than the location lease
* ``clock_skew``    the worker on w2 restarted with its wall clock +1 h (libfaketime); it stays
                    skewed until w2 is next restarted for another reason
* ``second_beat``   a second beat started on another host for a few seconds, then stopped
* ``outage``        both worker hosts down for longer than MOONSHOT_MAX_ALERT_BATCH_AGE

With ``--sentinel`` Redis is a primary, two replicas and three Sentinels on six more hosts
(``bench/faults_sentinel.py``), ``redis_restart`` restarts the primary, and four kinds join:
``primary_kill``, ``split_brain``, ``replica_kill`` and ``sentinel_kill``; the time from each
primary kill to the first write that succeeds is reported (p50/p99).

Then it freezes the sources, lets the system drain and checks: every item the sources served
(every TCP line sent) is in its output stream exactly once by key; every alert of a
``locate = true`` feed has exactly one location result and one notification (one idempotency
key; redeliveries of a key are counted apart); Redis ``used_memory`` stayed under the
budget its caps allow; no process is left; neither planted secret appears in any file, log, key
name or ``watchkeeper status`` output. Writes ``bench/results/faults.json``; exit status 0 only
if every check held. Ctrl-C (or any failure) still removes every process and namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import faults_sentinel as fs
from bench.common import RESULTS, machine
from bench.faults_checks import (
    STREAMS,
    Collector,
    MemorySampler,
    needles,
    scan_files,
    scan_keys,
    scan_text,
)
from bench.faults_hosts import ROOT, Cluster
from bench.faults_net import Network, enter
from bench.faults_sources import FaultSources, NotifyReceiver
from bench.sentinel_topology import DOWN_AFTER_MS, MAX_LAG_S
from bench.soak_sources import FEEDS, Rates
from tasks.locations.buffer import LocKeys
from workers.core import keys
from workers.core.connection import connect, url_for
from workers.core.settings import Settings
from workers.store.seen import short_hash

HOSTS = ("redis", "w1", "w2", "beat", "beat2", "tcp", "src", "obs")
KINDS = (
    "pool_kill",
    "host_kill",
    "redis_restart",
    "partition",
    "clock_skew",
    "second_beat",
    "outage",
)
QUICK_SENTINEL = 2
"""Faults of each topology kind in ``--sentinel --quick`` (each takes seconds: a failover)."""
SENTINEL_FAULT_S = 10.0
"""Average seconds one topology fault takes, from a healthy topology back to one."""
TCP_PORT = 5140
LEASE_S = 2
BATCH_AGE_S = 4
WINDOW_S = 30.0
LISTING_WINDOW_S = 1200.0
RATES = Rates(feed=1.5, log=4.0, listing=0.25, tcp=8.0)

#: Small caps and ages so that they are reached, and faults longer than them fit in minutes.
RUN_ENV = {
    "WATCHKEEPER_CONCURRENCY": "2",
    "WATCHKEEPER_MAX_SEEN": "1000",
    "WATCHKEEPER_MAX_ALERTS": "1000",
    "WATCHKEEPER_MAX_LOGS": "3000",
    "WATCHKEEPER_MAX_LISTINGS": "400",
    "WATCHKEEPER_MAX_HISTORY": "50",
    "WATCHKEEPER_HOST_DELAY": "0",
    "WATCHKEEPER_HOST_CONCURRENCY": "4",
    "WATCHKEEPER_HTTP_CONNECT_TIMEOUT": "2",
    "WATCHKEEPER_HTTP_READ_TIMEOUT": "5",
    "WATCHKEEPER_TASK_TIME_LIMIT": "30",
    "WATCHKEEPER_VISIBILITY_TIMEOUT": "60",
    "WATCHKEEPER_LOCATION_LEASE": str(LEASE_S),
    "WATCHKEEPER_LOCATION_FLUSH_INTERVAL": "1",
    "MOONSHOT_MAX_ALERT_BATCH_AGE": str(BATCH_AGE_S),
    "MOONSHOT_MAX_BUFFER_AGE": "30",
    "MOONSHOT_CLEANUP_INTERVAL": "5",
    "MOONSHOT_API_KEY": "",
    # A send cut off by a fault is retried within seconds, not after a backoff grown past the
    # drain (5 s doubling to 10 min by default), and never given up on (dead-lettered).
    "WATCHKEEPER_NOTIFY_BACKOFF_BASE": "0.5",
    "WATCHKEEPER_NOTIFY_BACKOFF_MAX": "4",
    "WATCHKEEPER_NOTIFY_MAX_ATTEMPTS": "1000",
}

#: Bytes one element of each capped structure may take (generous: entries measured here are
#: 150-400 bytes); the memory budget is the empty server plus these times the caps.
ENTRY_BUDGET = {"alerts": 1024, "locations": 1024, "logs": 768, "listings": 1024}
SEEN_MEMBER_BUDGET = 128
BUFFER_ENTRY_BUDGET = 1536
FIXED_BUDGET = 16 * 2**20
"""Clients' buffers, the broker's queues, scripts, allocator slack."""


@dataclass
class Plan:
    quick: bool
    faults: int
    seed: int
    inject_s: float
    drain_s: float
    ready_wait_s: float
    sentinel: bool = False
    per_kind: dict[str, int] = field(default_factory=dict)
    """Faults of a kind when not ``faults`` (the quick Sentinel run's topology kinds)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*KINDS, *fs.KINDS) if self.sentinel else KINDS

    @property
    def hosts(self) -> tuple[str, ...]:
        if self.sentinel:
            return (*(h for h in HOSTS if h != "redis"), *fs.SERVERS, *fs.SENTINELS)
        return HOSTS

    def count(self, kind: str) -> int:
        return self.per_kind.get(kind, self.faults)


@dataclass
class Event:
    t: float
    kind: str
    target: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 1),
            "kind": self.kind,
            "target": self.target,
            "detail": self.detail,
        }


@dataclass
class Run:
    plan: Plan
    run_dir: Path
    password: str = field(default_factory=lambda: "pw" + secrets.token_hex(12))
    token: str = field(default_factory=lambda: "tk" + secrets.token_hex(12))
    sentinel_password: str = field(default_factory=lambda: "sp" + secrets.token_hex(12))
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unplanned: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)
        self.net = Network(self.plan.hosts)
        self.lock = threading.Lock()

    def t(self) -> float:
        return time.monotonic() - self.started

    def log(self, kind: str, target: str, detail: str = "") -> None:
        with self.lock:
            self.events.append(Event(self.t(), kind, target, detail))
        print(f"[faults] {self.t():6.1f}s  {kind:<13} {target:<6} {detail}", flush=True)

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for e in self.events if e.kind == k) for k in self.plan.kinds}


# --- setup ------------------------------------------------------------------------------------


def redis_conf(run: Run) -> bytes:
    d = run.run_dir / "hosts" / "redis"
    return (
        f"bind {run.net.address['redis']}\nport 6379\nrequirepass {run.password}\n"
        f'dir {d}\nappendonly yes\nappendfsync everysec\nsave ""\n'
        f"logfile {run.run_dir / 'logs' / 'redis-server.log'}\ndaemonize no\n"
    ).encode()


def environment(run: Run, config: Path) -> dict[str, str]:
    """The workers' environment; with Sentinel, ``REDIS_URL`` names the Sentinels (with the
    servers' password) and the Sentinels' own password is ``WATCHKEEPER_SENTINEL_PASSWORD``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHKEEPER_", "MOONSHOT_", "FAKETIME", "LD_PRELOAD"))
        and k != "REDIS_URL"
    }
    env.update(RUN_ENV)
    if run.plan.sentinel:
        url = fs.sentinel_url(run.net, run.password)
        env["WATCHKEEPER_SENTINEL_PASSWORD"] = run.sentinel_password
    else:
        url = f"redis://:{run.password}@{run.net.address['redis']}:6379/0"
    env.update(
        REDIS_URL=url,
        WATCHKEEPER_CONFIG=str(config),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s")


def redis_up(url: str) -> bool:
    client = connect(url, 0.0, socket_timeout=2, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def worker_ready(cluster: Cluster, host: str) -> bool:
    proc = cluster.procs[host]
    text = proc.log.read_text(errors="replace")
    return proc.alive() and f"{host}@faults ready." in text.rsplit("===== start", 1)[-1]


def port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def live(proc: psutil.Process, killed: set[int]) -> bool:
    try:
        return proc.pid not in killed and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- faults -----------------------------------------------------------------------------------


class Injector:
    """One thread per fault kind, each at its seeded moments; host locks keep faults on one
    host from overlapping (a partition may overlap process faults: it is the network's)."""

    def __init__(
        self, run: Run, cluster: Cluster, url: str, topo: fs.TopologyFaults | None = None
    ) -> None:
        self.run, self.cluster, self.url = run, cluster, url
        self.topo = topo
        self.threads: list[threading.Thread] = []
        self.killed: set[int] = set()

    def schedule(self, kind: str) -> list[float]:
        rng = random.Random(f"{self.run.plan.seed}-{kind}")
        span = self.run.plan.inject_s
        return sorted(rng.uniform(0, span) for _ in range(self.run.plan.count(kind)))

    def start(self, offset: float) -> None:
        for kind in self.run.plan.kinds:
            action = getattr(self, kind)
            times = [offset + t for t in self.schedule(kind)]
            th = threading.Thread(target=self._lane, args=(kind, action, times), daemon=True)
            th.start()
            self.threads.append(th)

    def _lane(self, kind: str, action: Callable[[random.Random], None], times: list[float]) -> None:
        rng = random.Random(f"{self.run.plan.seed}-{kind}-do")
        for at in times:
            while not self.run.stop.is_set() and self.run.t() < at:
                self.run.stop.wait(min(0.5, at - self.run.t()))
            if self.run.stop.is_set():
                return
            try:
                action(rng)
            except Exception as exc:  # recorded; the run goes on and reports it
                self.run.errors.append(f"{kind}: {exc}")

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(th.is_alive() for th in self.threads)

    # each fault ------------------------------------------------------------------------------

    def pool_kill(self, rng: random.Random) -> None:
        for _ in range(40):  # a host may be restarting: wait for one with a pool
            host = rng.choice(("w1", "w2"))
            with self.cluster.locks[host]:
                ready = worker_ready(self.cluster, host)
                pool = [
                    p for p in self.cluster.procs[host].pool() if ready and live(p, self.killed)
                ]
                if pool:
                    victim = rng.choice(pool)
                    self.killed.add(victim.pid)
                    self.cluster.pids.add(victim.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim.pid, signal.SIGKILL)
                    self.run.log("pool_kill", host, f"pid {victim.pid}")
                    return
            time.sleep(0.5)
        raise RuntimeError("no pool child to kill for 20 s")

    def _restart(self, host: str, down: float, skew: bool = False) -> None:
        self.cluster.procs[host].kill(signal.SIGKILL)
        self.cluster.procs[host].reap()
        time.sleep(down)
        self.cluster.start(host, skew=skew)
        self._ready(host)

    def _ready(self, host: str) -> None:
        """Hold the host until its worker is up again, so the next fault hits a working
        host (a worker that never came up would be one long outage, not many faults)."""
        with contextlib.suppress(RuntimeError):
            wait_for(host, lambda: worker_ready(self.cluster, host), self.run.plan.ready_wait_s)

    def host_kill(self, rng: random.Random) -> None:
        host = "w1"  # w2's host kills are its clock-skew restarts
        down = rng.uniform(0.3, 1.5)
        with self.cluster.locks[host]:
            self.run.log("host_kill", host, f"SIGKILL every process, down {down:.1f} s")
            self._restart(host, down)

    def clock_skew(self, rng: random.Random) -> None:
        with self.cluster.locks["w2"]:
            self.run.log("clock_skew", "w2", "restarted with its clock +1 h")
            self._restart("w2", rng.uniform(0.2, 1.0), skew=True)

    def outage(self, rng: random.Random) -> None:
        down = BATCH_AGE_S + rng.uniform(0.5, 1.5)
        graceful = rng.random() < 0.3
        with self.cluster.locks["w1"], self.cluster.locks["w2"]:
            self.run.log(
                "outage",
                "w1+w2",
                f"{'SIGTERM' if graceful else 'SIGKILL'}, down {down:.1f} s "
                f"(> MOONSHOT_MAX_ALERT_BATCH_AGE {BATCH_AGE_S} s)",
            )
            t0 = time.monotonic()
            for host in ("w1", "w2"):
                proc = self.cluster.procs[host]
                if graceful and proc.pid is not None:  # warm shutdown: the main process only
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
                else:
                    proc.kill(signal.SIGKILL)
            for host in ("w1", "w2"):
                proc = self.cluster.procs[host]
                if proc.popen is not None:
                    try:
                        proc.popen.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill(signal.SIGKILL)
                        proc.reap()
            time.sleep(max(0.0, down - (time.monotonic() - t0)))
            for host in ("w1", "w2"):
                self.cluster.start(host)

    def partition(self, rng: random.Random) -> None:
        host = rng.choice(("w1", "w2"))
        down = LEASE_S + rng.uniform(1.0, 2.5)
        with self.cluster.locks[f"net-{host}"]:
            self.run.log("partition", host, f"link down {down:.1f} s (> lease {LEASE_S} s)")
            self.run.net.link(host, up=False)
            try:
                time.sleep(down)
            finally:
                self.run.net.link(host, up=True)

    def redis_restart(self, rng: random.Random) -> None:
        down = rng.uniform(0.2, 1.5)
        if self.topo is not None:
            self.topo.primary_restart(down)
            return
        with self.cluster.locks["redis"]:
            self.run.log("redis_restart", "redis", f"SIGTERM, down {down:.1f} s")
            proc = self.cluster.procs["redis"]
            if not proc.stop(timeout=20):
                self.run.errors.append("redis did not stop on SIGTERM within 20 s")
            time.sleep(down)
            self.cluster.start("redis")
            wait_for("redis after restart", lambda: redis_up(self.url), 30)

    # Sentinel's kinds (bench/faults_sentinel.py): one topology fault at a time

    def _topology(self) -> fs.TopologyFaults:
        if self.topo is None:
            raise RuntimeError("a Sentinel fault in a run without --sentinel")
        return self.topo

    def primary_kill(self, rng: random.Random) -> None:
        self._topology().primary_kill(rng.uniform(0.5, 2.0))

    def split_brain(self, rng: random.Random) -> None:
        topo = self._topology()
        variant = (
            "sentinels" if topo.variants["sentinels"] <= topo.variants["clients"] else "clients"
        )
        topo.split_brain(
            variant, rng.uniform(1.0, 3.0) if variant == "sentinels" else rng.uniform(2.0, 6.0)
        )

    def replica_kill(self, rng: random.Random) -> None:
        self._topology().replica_kill(rng.uniform(0.5, 3.0), rng.randrange(2))

    def sentinel_kill(self, rng: random.Random) -> None:
        self._topology().sentinel_kill(rng.choice(fs.SENTINELS), rng.uniform(1.0, 5.0))

    def second_beat(self, rng: random.Random) -> None:
        up = rng.uniform(2.0, 6.0)
        with self.cluster.locks["beat2"]:
            self.run.log("second_beat", "beat2", f"started for {up:.1f} s")
            self.cluster.start("beat2")
            time.sleep(up)
            if not self.cluster.procs["beat2"].stop(timeout=10):
                self.run.errors.append("second beat did not stop on SIGTERM within 10 s")


# --- the checks -------------------------------------------------------------------------------


FEED_KEYS = {"soak-rss": "soak-rss|soak-rss-{}", "soak-atom": "soak-atom|urn:soak:atom:{}"}


def expected_items(sources: FaultSources) -> dict[str, set[str]]:
    """What each output must hold, by key: every item the sources made (they offer each one
    until it is found), every TCP line whose send completed."""
    made = sources.made()
    return {
        "alerts": {FEED_KEYS[f].format(k) for f in FEEDS for k in range(made[f])},
        "logs": {f"soak-logs|id=log-{k}" for k in range(made["logs"])},
        "listings": {f"soak-market|w{k}" for k in range(made["listings"])},
        "tcp": {str(n) for n in sources.tcp_sent_items()},
    }


def capture_hook(sources: FaultSources) -> Callable[[str, str], None]:
    """Tell the sources which items reached the output, so they stop offering them."""
    prefixes = {feed: FEED_KEYS[feed].format("") for feed in FEEDS}
    prefixes["logs"] = "soak-logs|id=log-"

    def hook(kind: str, key: str) -> None:
        for name, prefix in prefixes.items():
            if (kind == "alerts" or name == "logs") and key.startswith(prefix):
                with contextlib.suppress(ValueError):
                    sources.capture(name, int(key[len(prefix) :]))
                return

    return hook


def missing_count(collector: Collector, expected: dict[str, set[str]]) -> int:
    with collector.lock:
        found = collector.seen.items
        return sum(len(exp - set(found[kind])) for kind, exp in expected.items())


def unlocated(client: redis.Redis, settings: Settings) -> int:
    return int(client.zcard(keys.LOC_QUEUED.key(settings)))


def start_sinks(settings: Settings, client: redis.Redis, config: Path) -> None:
    """Create the notification sink's consumer group before anything is written: a sink reads
    from where its group starts (docs/streams.md), so alerts written before the workers'
    first delivery run would never be notified, by design."""
    import workers.stages  # noqa: F401 (the source kinds and sections the file holds)
    from tasks.notify.config import notify_config
    from tasks.notify.outbox import ensure_groups, sink_keys
    from workers.core.runtime import Runtime

    rt = Runtime(settings, client, config)
    for sink in notify_config(rt.config()).sinks:
        ensure_groups(rt, sink, sink_keys(settings, sink))


def notification_checks(collector: Collector, receiver: NotifyReceiver | None) -> dict[str, Any]:
    """Every alert the collector found notified under exactly one idempotency key
    (``alerts:{entry id}:faults``); redeliveries of a key (at-least-once: a worker killed
    between sending and recording) counted apart; a key for an entry the collector never
    found (one a failover took back after it was notified) is an orphan."""
    if receiver is None:
        return {"alerts": 0, "notified": 0, "lost": 0, "doubled": 0, "orphans": 0}
    received = Counter(receiver.received())
    with collector.lock:
        alert_key = dict(collector.seen.alert_key)
    by_alert: dict[str, set[str]] = {}
    orphans = []
    for key in received:
        entry_id = key.partition(":")[2].rpartition(":")[0]
        alert = alert_key.get(entry_id)
        if alert is None:
            orphans.append(key)
        else:
            by_alert.setdefault(alert, set()).add(key)
    alerts = set(alert_key.values())
    lost = sorted(a for a in alerts if a not in by_alert)
    doubled = sorted(a for a, found in by_alert.items() if len(found) > 1)
    return {
        "alerts": len(alerts),
        "notified": len(by_alert),
        "lost": len(lost),
        "doubled": len(doubled),
        "orphans": len(orphans),
        "deliveries": sum(received.values()),
        "redelivered_same_key": sum(n - 1 for n in received.values()),
        "lost_examples": lost[:20],
        "doubled_examples": [{"alert": a, "keys": sorted(by_alert[a])} for a in doubled[:20]],
        "orphan_examples": orphans[:20],
    }


def unnotified(collector: Collector, receiver: NotifyReceiver | None) -> int:
    return int(notification_checks(collector, receiver)["lost"])


def near(events: list[Event], t: float, span: float = 15.0) -> list[str]:
    return [f"{e.t:.1f}s {e.kind} {e.target}" for e in events if abs(e.t - t) <= span]


def entry_time(entry_id: str, started_wall: float) -> float:
    return int(entry_id.split("-")[0]) / 1000 - started_wall


def item_checks(
    collector: Collector,
    expected: dict[str, set[str]],
    uncertain: set[str],
    run: Run,
    started_wall: float,
) -> dict[str, Any]:
    """Lost, doubled and unexpected items per output, and the faults near each bad one."""
    out: dict[str, Any] = {}
    with collector.lock:
        seen = collector.seen
        for kind, exp in expected.items():
            found = seen.items[kind]
            lost = sorted(exp - set(found))
            doubled = sorted(k for k, n in found.items() if n > 1)
            unexpected = sorted(set(found) - exp)
            if kind == "tcp":
                unexpected = [k for k in unexpected if k not in uncertain]
            out[kind] = {
                "offered": len(exp),
                "found": len(found),
                "lost": len(lost),
                "doubled": len(doubled),
                "unexpected": len(unexpected),
                "lost_examples": lost[:20],
                "doubled_examples": [
                    {
                        "key": k,
                        "entries": seen.where[kind][k],
                        "faults_near": near(
                            run.events, entry_time(seen.where[kind][k][-1], started_wall)
                        ),
                    }
                    for k in doubled[:20]
                ],
                "unexpected_examples": unexpected[:20],
            }
        alert_ids = list(seen.alert_key)
        located = seen.located
        lost_loc = [a for a in alert_ids if located[a] == 0]
        doubled_loc = [a for a in alert_ids if located[a] > 1]
        orphans = [a for a in located if a not in seen.alert_key]
        out["locations"] = {
            "alerts": len(alert_ids),
            "located": sum(1 for a in alert_ids if located[a] >= 1),
            "lost": len(lost_loc),
            "doubled": len(doubled_loc),
            "orphans": len(orphans),
            "methods": dict(seen.methods),
            "fallback_reasons": dict(seen.fallbacks),
            "lost_examples": [
                {
                    "alert": a,
                    "key": seen.alert_key[a],
                    "faults_near": near(run.events, entry_time(a, started_wall)),
                }
                for a in lost_loc[:20]
            ],
            "doubled_examples": [
                {"alert": a, "key": seen.alert_key[a], "results": located[a]}
                for a in doubled_loc[:20]
            ],
        }
        out["stream_entries_read"] = dict(collector.read_count)
        out["stream_entries_missed"] = dict(collector.missed)
        out["collector_reconnects"] = collector.reconnects
    return out


def diagnose(client: redis.Redis, settings: Settings, checks: dict[str, Any]) -> dict[str, Any]:
    """Where each lost item is stuck, read from Redis before it stops: a lost item whose key
    is in its source's seen-set was deduplicated but never written; a lost location, whether
    its marker, buffer entry, payload or a leased batch still holds it."""
    out: dict[str, Any] = {"items": [], "locations": []}
    for kind in ("alerts", "logs", "listings"):
        for item in checks[kind]["lost_examples"]:
            source, _, key = str(item).partition("|")
            score = client.zscore(keys.SEEN.key(settings, source), short_hash(key))
            out["items"].append(
                {"stream": kind, "key": item, "in_seen_set": score is not None, "seen_at": score}
            )
    loc = LocKeys(settings)
    leased: dict[str, str] = {}
    for batch, ids in client.hgetall(loc.batches).items():
        with contextlib.suppress(ValueError):
            for alert in json.loads(ids):
                leased[str(alert)] = batch.decode() if isinstance(batch, bytes) else str(batch)
    for example in checks["locations"]["lost_examples"]:
        alert = example["alert"]
        out["locations"].append(
            {
                **example,
                "marker": client.zscore(loc.queued, alert),
                "buffered": client.zscore(loc.buffer, alert),
                "payload": client.hexists(loc.alerts, alert),
                "leased_in": leased.get(alert),
            }
        )
    raw = client.lrange(keys.DEAD_LETTERS.key(settings), 0, 19)
    dead = [(x.decode() if isinstance(x, bytes) else str(x))[:300] for x in raw]
    out["dead_letters"] = {
        "count": int(client.llen(keys.DEAD_LETTERS.key(settings))),
        "first": dead,
    }
    out["notify"] = {
        "outbox": int(client.hlen(keys.NOTIFY_OUTBOX.key(settings, "faults"))),
        "dead_letters": int(client.llen(keys.NOTIFY_DEAD.key(settings, "faults"))),
    }
    out["unlocated_markers"] = int(client.zcard(loc.queued))
    out["buffer"] = int(client.zcard(loc.buffer))
    out["leases"] = int(client.zcard(loc.lease))
    return out


def memory_budget(settings: Settings, base: int, sources: int) -> dict[str, int]:
    caps = {
        "alerts": settings.max_alerts,
        "locations": settings.max_alerts,
        "logs": settings.max_logs,
        "listings": settings.max_listings,
    }
    parts = {f"stream {k}": (cap + 100) * ENTRY_BUDGET[k] for k, cap in caps.items()}
    parts["seen-sets"] = sources * settings.max_seen * SEEN_MEMBER_BUDGET
    parts["location buffer"] = settings.moonshot_max_buffer_size * BUFFER_ENTRY_BUDGET
    parts["empty server"] = base
    parts["fixed"] = FIXED_BUDGET
    parts["total"] = sum(parts.values())
    return parts


def status_output(run: Run, cluster: Cluster) -> tuple[str, list[str]]:
    """``watchkeeper status`` (text and JSON) as a user on the observer host sees it."""
    texts, problems = [], []
    for extra in ([], ["--json"]):
        out = subprocess.run(
            [*run.net.exec_prefix("obs"), sys.executable, "-m", "workers.cli", "status", *extra],
            cwd=ROOT,
            env=cluster.host_env("obs"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        texts.append(out.stdout + out.stderr)
        if out.returncode != 0:
            problems.append(f"status {' '.join(extra)} exited {out.returncode}")
    return "\n".join(texts), problems


# --- the run ----------------------------------------------------------------------------------


class FaultRun:
    """One run in phases: set up the hosts, inject, drain, check, tear down (always)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.run_dir = Path(tempfile.mkdtemp(prefix="wk-faults-"))
        self.run = Run(plan, self.run_dir)
        self.config = self.run_dir / "sources.toml"
        self.cluster: Cluster | None = None
        self.sources: FaultSources | None = None
        self.collector: Collector | None = None
        self.sampler: MemorySampler | None = None
        self.receiver: NotifyReceiver | None = None
        self.topology: fs.Topology | None = None
        self.topo_faults: fs.TopologyFaults | None = None
        self.prober: fs.Prober | None = None
        self.result: dict[str, Any] = {}

    # phases ----------------------------------------------------------------------------------

    def setup(self) -> None:
        run = self.run
        run.net.create()
        enter(run.net.ns("src"))  # the HTTP server and the TCP sender live on the sources host
        self.sources = sources = FaultSources(
            RATES, run.net.address["src"], run.token, WINDOW_S, LISTING_WINDOW_S
        )
        self.receiver = NotifyReceiver(run.net.address["src"]).start()
        self.config.touch(mode=0o600)
        self.config.write_text(
            sources.config_toml(TCP_PORT).replace(
                'host = "127.0.0.1"', f'host = "{run.net.address["tcp"]}"'
            )
            + self.receiver.sink_toml()
        )
        sources.start()
        enter(run.net.ns("obs"))  # everything else this process does, it does as the observer
        self.env = environment(run, self.config)
        self.settings = Settings.from_env(self.env)
        self.url = url_for(self.settings)  # with Sentinel: the Sentinels' password folded in
        conf = b"" if self.plan.sentinel else redis_conf(run)
        self.cluster = cluster = Cluster(run.net, self.env, self.run_dir, conf)
        reader = None
        if self.plan.sentinel:
            self.topology = fs.Topology(cluster, run.password, run.sentinel_password)
            self.topology.start()
            self.topo_faults = fs.TopologyFaults(self.topology, run.log)
            reader = self.topology.replica_reader
        else:
            cluster.start("redis")
        wait_for("redis", lambda: redis_up(self.url), 30)
        self.client = connect(self.url, socket_timeout=5, retry_on_timeout=True)
        self.base_memory = int(self.client.info("memory")["used_memory"])
        stream_keys = {name: keys.STREAM.key(self.settings, name) for name in STREAMS}
        start_sinks(self.settings, self.client, self.config)
        self.collector = Collector(self.url, stream_keys, capture_hook(sources), reader).start()
        self.sampler = MemorySampler(self.url).start()
        if self.plan.sentinel:
            self.prober = fs.Prober(self.url).start()
        for host in ("w1", "w2", "beat", "tcp"):
            cluster.start(host)
        for host in ("w1", "w2"):
            wait_for(f"worker {host}", lambda h=host: worker_ready(cluster, h), 90)  # type: ignore[misc]
        wait_for("TCP listener", lambda: port_open(run.net.address["tcp"], TCP_PORT), 60)
        enter(run.net.ns("src"))
        sources.send_tcp("listener", run.net.address["tcp"], TCP_PORT)
        enter(run.net.ns("obs"))
        self.started_wall = time.time() - run.t()
        print(
            f"[faults] run dir {self.run_dir}; seed {self.plan.seed}; {self.plan.faults} faults "
            f"of each of {len(self.plan.kinds)} kinds over {self.plan.inject_s:.0f} s; hosts "
            + ", ".join(f"{h}={a}" for h, a in run.net.address.items()),
            flush=True,
        )

    def inject(self) -> None:
        assert self.cluster is not None
        run, cluster = self.run, self.cluster
        injector = Injector(run, cluster, self.url, self.topo_faults)
        injector.start(offset=run.t() + 5)
        until = run.t() + self.plan.inject_s + 5
        while run.t() < until or not injector.join(0):
            cluster.note_pool()
            self.revive()
            time.sleep(1.0)
            if run.t() > until + max(60.0, self.plan.inject_s / 2):  # a lane is stuck
                run.errors.append("fault lanes did not finish within 1.5x the planned time")
                run.stop.set()
                break
        for host in ("w1", "w2"):  # every host up again for the drain
            run.net.link(host, up=True)
            if not cluster.procs[host].alive():
                cluster.start(host)
        if self.topology is not None:
            with cluster.locks["redis"]:
                self.topology.revive()
                self.topology.wait_healthy()
        elif not cluster.procs["redis"].alive():
            cluster.start("redis")
        wait_for("redis", lambda: redis_up(self.url), 30)

    def revive(self) -> None:
        """Restart a process that exited by itself (what systemd would do), and record it:
        an exit nobody injected is a finding."""
        assert self.cluster is not None
        for host in ("w1", "w2", "beat", "tcp"):
            proc, lock = self.cluster.procs[host], self.cluster.locks[host]
            if proc.alive() or proc.popen is None or not lock.acquire(blocking=False):
                continue
            try:
                if proc.alive():
                    continue
                tail = proc.log.read_text(errors="replace").strip().splitlines()[-1:]
                reason = f"exit {proc.popen.returncode}: {tail[0][:160] if tail else ''}"
                self.run.unplanned.append(
                    {"t": round(self.run.t(), 1), "host": host, "why": reason}
                )
                print(
                    f"[faults] {self.run.t():6.1f}s  {host} exited by itself ({reason}); "
                    "restarting",
                    flush=True,
                )
                self.cluster.start(host)
            finally:
                lock.release()

    def drain(self) -> dict[str, set[str]]:
        """No new items; wait until every served item is written and every alert located."""
        assert self.sources is not None and self.collector is not None
        self.sources.freeze()
        time.sleep(1.0)
        self.sources.stop_tcp()
        deadline = time.monotonic() + self.plan.drain_s
        while time.monotonic() < deadline:
            self.revive()
            expected = expected_items(self.sources)
            with contextlib.suppress(redis.RedisError):
                if (
                    missing_count(self.collector, expected) == 0
                    and unlocated(self.client, self.settings) == 0
                    and not unnotified(self.collector, self.receiver)
                ):
                    break
            time.sleep(1.0)
        time.sleep(2.0)  # a last pass of the collector
        return expected_items(self.sources)

    def check(self, expected: dict[str, set[str]]) -> None:
        assert self.sources is not None and self.collector is not None
        assert self.cluster is not None and self.sampler is not None
        run, cluster, sources = self.run, self.cluster, self.sources
        uncertain = {str(n) for a, b in sources.tcp_uncertain for n in range(a, b)}
        checks = item_checks(self.collector, expected, uncertain, run, self.started_wall)
        checks["notifications"] = notification_checks(self.collector, self.receiver)
        try:
            checks["diagnosis"] = diagnose(self.client, self.settings, checks)
        except redis.RedisError as exc:
            checks["diagnosis"] = {"error": str(exc)}
        secrets_ = needles(run.password, run.token)
        if self.plan.sentinel:
            secrets_["sentinel password"] = run.sentinel_password
        n_keys, leaks = scan_keys(self.client, secrets_)
        status_text, status_problems = status_output(run, cluster)
        leaks += scan_text("watchkeeper status", status_text, secrets_)
        stopped = {
            h: cluster.procs[h].stop(timeout=30) for h in ("beat", "beat2", "w1", "w2", "tcp")
        }
        self.collector.stop()
        self.sampler.stop()
        resume = None
        if self.prober is not None and self.topo_faults is not None:
            self.prober.stop()
            resume = fs.resume_report(
                self.topo_faults.kills, self.prober, self.collector.write_times()
            )
        if self.topology is not None:  # Redis last
            stopped.update(self.topology.stop(timeout=30))
        else:
            stopped["redis"] = cluster.procs["redis"].stop(timeout=30)
        sources.stop()
        if self.receiver is not None:
            self.receiver.stop()
        time.sleep(1.0)
        left = cluster.left(run.net)
        in_netns = {k: v for k, v in run.net.pids().items() if v}
        # Redis's own data files hold the source registry, URLs with their tokens (as the
        # sources file does): allowed there, readable by their owner only
        redis_data = [
            p
            for host in ("redis", "r1", "r2", "r3")
            for p in (self.run_dir / "hosts" / host).rglob("*")
            if p.is_file() and (p.suffix in {".aof", ".rdb"} or p.name.endswith(".manifest"))
        ]
        allowed = [self.config, *self.run_dir.glob("hosts/s*/sentinel.conf"), *redis_data]
        leaks += scan_files(self.run_dir, secrets_, allowed=allowed)
        budget = memory_budget(self.settings, self.base_memory, sources=len(FEEDS) + 2)
        self.result = assemble(
            run, self.plan, checks, cluster, sources, self.sampler, budget, left, in_netns,
            stopped, leaks, n_keys, status_problems, status_text,
        )  # fmt: skip
        if self.plan.sentinel and self.topo_faults is not None:
            self.result["sentinel"] = {
                "resume_after_primary_kill": resume,
                "failovers": self.topo_faults.failovers,
                "split_brain_variants": self.topo_faults.variants,
                "prober_failed_writes": self.prober.failures if self.prober else None,
                "collector_stale_replica_reads": self.collector.stale_reads,
                "settings": {"down_after_ms": DOWN_AFTER_MS, "min_replicas_to_write": 1,
                             "min_replicas_max_lag_s": MAX_LAG_S,
                             "replica_acks": self.settings.replica_acks},
            }  # fmt: skip
            self.result["command"] = self.result["command"].replace(
                "bench/faults.py", "bench/faults.py --sentinel"
            )

    def teardown(self) -> None:
        """Whatever happened: every process we started, and every namespace, gone."""
        self.run.stop.set()
        for part in (self.collector, self.sampler, self.sources, self.receiver, self.prober):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.cluster is not None:
            for proc in self.cluster.procs.values():
                with contextlib.suppress(Exception):
                    proc.kill(signal.SIGKILL)
                    proc.reap()
        killed = self.run.net.destroy()
        if killed and "processes" in self.result:
            self.result["processes"]["killed_at_cleanup"] = killed


def execute(plan: Plan, keep: bool, out_path: Path) -> int:
    if os.geteuid() != 0:
        print("faults: needs root (network namespaces)", file=sys.stderr)
        return 2

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    fr = FaultRun(plan)
    try:
        fr.setup()
        fr.inject()
        fr.check(fr.drain())
    except KeyboardInterrupt:
        fr.teardown()  # (again in finally: idempotent)
        print("[faults] interrupted; everything started was stopped", flush=True)
        return 130
    except Exception as exc:
        fr.run.errors.append(f"run aborted: {type(exc).__name__}: {exc}")
        print(f"[faults] aborted: {exc}", flush=True)
    finally:
        fr.teardown()
    result = fr.result or {"ok": False, "errors": fr.run.errors, "faults": fr.run.counts()}
    report(result)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    if keep or not result["ok"]:
        print(f"[faults] run directory kept: {fr.run_dir}")
    else:
        shutil.rmtree(fr.run_dir, ignore_errors=True)
    return 0 if result["ok"] else 1


def assemble(
    run: Run,
    plan: Plan,
    checks: dict[str, Any],
    cluster: Cluster,
    sources: FaultSources,
    sampler: MemorySampler,
    budget: dict[str, int],
    left: list[int],
    in_netns: dict[str, list[int]],
    stopped_cleanly: dict[str, bool],
    leaks: list[str],
    n_keys: int,
    status_problems: list[str],
    status_text: str,
) -> dict[str, Any]:
    counts = run.counts()
    outputs = ("alerts", "logs", "listings", "tcp", "locations", "notifications")
    lost = sum(checks[k]["lost"] for k in outputs)
    doubled = sum(checks[k]["doubled"] for k in outputs)
    missed = sum(checks["stream_entries_missed"].values())
    failures = []
    if lost:
        failures.append(f"{lost} items lost")
    if doubled:
        failures.append(f"{doubled} items doubled")
    if missed:
        failures.append(f"{missed} stream entries trimmed before the collector read them")
    if checks["locations"]["orphans"]:
        failures.append(f"{checks['locations']['orphans']} location results for unknown alerts")
    if checks["notifications"]["orphans"]:
        failures.append(f"{checks['notifications']['orphans']} notifications for unknown alerts")
    if sampler.peak >= budget["total"]:
        failures.append(f"Redis used_memory peak {sampler.peak} >= budget {budget['total']}")
    if left or in_netns:
        failures.append(f"processes left: {left or in_netns}")
    if leaks:
        failures.append(f"{len(leaks)} secret leaks")
    short = [k for k, n in counts.items() if n < plan.count(k)]
    if short:
        failures.append(f"fewer faults than planned: {', '.join(short)}")
    failures += run.errors + status_problems
    return {
        "ok": not failures,
        "checks_ran": True,
        "failures": failures,
        "command": "sudo python bench/faults.py"
        + (" --quick" if plan.quick else "")
        + f" --seed {plan.seed} --faults {plan.faults}",
        "seed": plan.seed,
        "elapsed_s": round(run.t(), 1),
        "inject_s": plan.inject_s,
        "faults": counts,
        "faults_total": sum(counts.values()),
        "items": {k: checks[k] for k in ("alerts", "logs", "listings", "tcp")},
        "locations": checks["locations"],
        "notifications": checks["notifications"],
        "collector": {
            "entries_read": checks["stream_entries_read"],
            "entries_missed": checks["stream_entries_missed"],
            "reconnects": checks["collector_reconnects"],
        },
        "tcp_sender": {
            "sent": len(sources.tcp_sent_items()),
            "uncertain": sum(b - a for a, b in sources.tcp_uncertain),
            "send_errors": sources.tcp_errors,
        },
        "sources": {
            "unauthorised_requests": sources.unauthorised,
            "requests": sources.requests,
            "produced": sources.produced(),
            "note": "items offered = served at least once; produced but never served means no "
            "poll reached the source while the item was in its window",
        },
        "diagnosis": checks["diagnosis"],
        "unplanned_exits": run.unplanned,
        "memory": {
            "redis_used_memory_peak": sampler.peak,
            "budget": budget,
            "samples": len(sampler.samples),
            "keys_peak": max((k for _, _, k in sampler.samples), default=0),
        },
        "processes": {
            "started": len(cluster.pids),
            "starts_by_host": {h: p.starts for h, p in cluster.procs.items()},
            "left": left,
            "in_namespaces_after_stop": in_netns,
            "stopped_on_sigterm": stopped_cleanly,
        },
        "secrets": {
            "leaks": leaks,
            "keys_scanned": n_keys,
            "checked": [
                "files under the run directory (logs, homes, AOF)",
                "key names",
                "watchkeeper status / status --json",
            ],
        },
        "settings": RUN_ENV,
        "rates_per_s": {
            "feed": RATES.feed,
            "log": RATES.log,
            "listing": RATES.listing,
            "tcp": RATES.tcp,
        },
        "events": [e.as_dict() for e in run.events],
        "errors": run.errors,
        "status_excerpt": status_text[:1500],
    }


def report(result: dict[str, Any]) -> None:
    if not result.get("checks_ran"):
        print("[faults] FAILED before the checks: " + "; ".join(result.get("errors", [])))
        return
    print("\nfaults injected: " + ", ".join(f"{k} {n}" for k, n in result["faults"].items()))
    print(
        f"{'output':<10} {'offered':>8} {'found':>8} {'lost':>6} {'doubled':>8} {'unexpected':>10}"
    )
    for kind, r in result["items"].items():
        print(
            f"{kind:<10} {r['offered']:>8} {r['found']:>8} {r['lost']:>6} {r['doubled']:>8} "
            f"{r['unexpected']:>10}"
        )
    loc = result["locations"]
    print(
        f"{'locations':<10} {loc['alerts']:>8} {loc['located']:>8} {loc['lost']:>6} "
        f"{loc['doubled']:>8} {loc['orphans']:>10}   methods {loc['methods']}"
    )
    note = result.get("notifications") or {}
    if note:
        print(
            f"{'notified':<10} {note['alerts']:>8} {note['notified']:>8} {note['lost']:>6} "
            f"{note['doubled']:>8} {note['orphans']:>10}   redelivered (same key) "
            f"{note.get('redelivered_same_key', 0)}"
        )
    resume = (result.get("sentinel") or {}).get("resume_after_primary_kill")
    if resume:
        probe, own = resume["probe_write_s"], resume["watchkeeper_write_s"]
        print(
            f"time to resume after a primary kill ({resume['primary_kills']} kills): first write "
            f"through Sentinel p50 {probe['p50']} s p99 {probe['p99']} s; watchkeeper's own "
            f"first write p50 {own['p50']} s p99 {own['p99']} s (goal p99 <= 15 s)"
        )
    mem = result["memory"]
    print(
        f"redis used_memory peak {mem['redis_used_memory_peak'] / 2**20:.1f} MiB "
        f"(budget from caps {mem['budget']['total'] / 2**20:.1f} MiB); processes left "
        f"{len(result['processes']['left'])}; secret leaks {len(result['secrets']['leaks'])}"
    )
    for exit_ in result["unplanned_exits"]:
        print(f"  exited by itself (restarted): {exit_}")
    for leak in result["secrets"]["leaks"][:20]:
        print(f"  leak: {leak}")
    print("OK" if result["ok"] else "FAILED: " + "; ".join(result["failures"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 10 faults of each kind")
    parser.add_argument("--faults", type=int, help="faults of each kind (default 50, quick 10)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--inject", type=float, help="seconds of injection")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="Redis on Sentinel (1 primary, 2 replicas, 3 Sentinels) and its four fault kinds",
    )
    parser.add_argument("--out", type=Path, help="result file (default bench/results/faults.json)")
    args = parser.parse_args(argv)
    faults = args.faults or (10 if args.quick else 50)
    inject = args.inject or (90.0 if args.quick else 480.0) * faults / (10 if args.quick else 50)
    per_kind: dict[str, int] = {}
    if args.sentinel:
        # Topology faults come one at a time, each from and back to a healthy topology
        # (SENTINEL_FAULT_S each on average): the injection lasts as long as they take.
        topology = ("redis_restart", *fs.KINDS[:-1])
        n = args.faults or (QUICK_SENTINEL if args.quick else 50)
        per_kind = dict.fromkeys(topology, n)
        inject = args.inject or max(inject, SENTINEL_FAULT_S * n * len(topology))
    plan = Plan(
        args.quick,
        faults,
        args.seed,
        inject,
        drain_s=45.0 if args.quick else 90.0,
        ready_wait_s=2.0 if args.quick else 5.0,
        sentinel=args.sentinel,
        per_kind=per_kind,
    )
    name = "faults-sentinel" if args.sentinel else "faults"
    out = args.out or RESULTS / (f"{name}-quick.json" if args.quick else f"{name}.json")
    return execute(plan, args.keep, out)


if __name__ == "__main__":
    sys.exit(main())
