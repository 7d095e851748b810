"""The fault run's Redis on Sentinel (``bench/faults.py --sentinel``): hosts, faults, timing.

Six more hosts: Redis servers ``r1`` (the first primary), ``r2``, ``r3`` (its replicas) and
Sentinels ``s1``, ``s2``, ``s3``, each in its own network namespace, configured as
``bench/sentinel_topology.py`` says (``min-replicas-to-write 1`` with a 2 s lag, Sentinel
``down-after-milliseconds`` 5000, quorum 2). The servers' password is given on their standard
input; the Sentinels have a password of their own (``WATCHKEEPER_SENTINEL_PASSWORD`` for
watchkeeper) and a configuration file they rewrite, mode 0600, holding both.

Faults on the topology run one at a time (a primary and two replicas, with one replica
acknowledging, survive one failure at a time), each from a healthy topology — every server up,
both replicas in sync, every Sentinel agreeing — and each restores it before the next:

* ``primary_kill``  SIGKILL of the primary: Sentinel promotes a replica; the old primary comes
                    back as a replica of the new one. ``Prober`` measures the time from the kill
                    to the first write that succeeds through Sentinel;
* ``split_brain``   the primary partitioned — from the Sentinels and the replicas (they elect
                    another; cut off from its replicas it refuses writes after 2 s, and rejoins
                    as a replica when healed), or, alternately, from the workers, beat and the
                    listener only (Sentinel sees it well: no failover; clients wait);
* ``replica_kill``  SIGKILL of a replica, restarted after a moment;
* ``sentinel_kill`` SIGKILL of one Sentinel, restarted after a moment (two still agree);
* ``redis_restart`` (the plain run's kind) the primary stopped with SIGTERM and started again.
"""

from __future__ import annotations

import bisect
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.faults_hosts import Cluster
from bench.faults_net import Network
from bench.sentinel_topology import (
    DOWN_AFTER_MS,
    MASTER,
    caught_up,
    redis_binary,
    sentinel_conf,
    server_conf,
    write_private,
)

SERVERS = ("r1", "r2", "r3")
SENTINELS = ("s1", "s2", "s3")
PORT = 6379
SENTINEL_PORT = 26379
KINDS = ("primary_kill", "split_brain", "replica_kill", "sentinel_kill")
CLIENT_HOSTS = ("w1", "w2", "beat", "beat2", "tcp")
HEALTHY_WAIT_S = 90.0


def sentinel_url(net: Network, password: str) -> str:
    """``REDIS_URL`` of the run: every Sentinel, the master's name, the servers' password (the
    Sentinels' comes from ``WATCHKEEPER_SENTINEL_PASSWORD``)."""
    hosts = ",".join(f"{net.address[s]}:{SENTINEL_PORT}" for s in SENTINELS)
    return f"sentinel://:{password}@{hosts}/{MASTER}/0"


@dataclass
class Topology:
    """The run's servers and Sentinels: start, ask who is primary, check health."""

    cluster: Cluster
    password: str
    sentinel_password: str
    down_after_ms: int = DOWN_AFTER_MS
    run_dir: Path = field(init=False)
    problem: str = ""
    """Why the topology is not healthy (``healthy``'s last check)."""

    def __post_init__(self) -> None:
        self.run_dir = self.cluster.run_dir
        net = self.cluster.net
        for host in SERVERS:
            self.cluster.add(host, [redis_binary(), "-"])
            self.cluster.procs[host].umask = 0o077  # its data: the registry, tokens and all
            self.cluster.locks[host] = self.cluster.locks["redis"]
        for host in SENTINELS:
            conf = self.run_dir / "hosts" / host / "sentinel.conf"
            self.cluster.add(host, [redis_binary(), str(conf), "--sentinel"])
            self.cluster.procs[host].umask = 0o077
            self.cluster.locks[host] = threading.Lock()
        for host in (*SERVERS, *SENTINELS):
            (self.run_dir / "hosts" / host).mkdir(parents=True, exist_ok=True)
        self.address = {net.address[h]: h for h in (*SERVERS, *SENTINELS)}

    # --- start ------------------------------------------------------------------------------

    def start_server(self, host: str, primary: str | None) -> None:
        """Start a server: the primary (``primary`` None) or a replica of ``primary``."""
        net = self.cluster.net
        conf = server_conf(
            net.address[host],
            PORT,
            self.run_dir / "hosts" / host,
            self.run_dir / "logs" / f"{host}-server.log",
            self.password,
            None if primary is None else (net.address[primary], PORT),
        )
        self.cluster.start(host, stdin=conf)

    def start_sentinel(self, host: str, first: bool = False) -> None:
        """Start a Sentinel; ``first``: write its configuration (later starts keep the one it
        rewrote, which knows the current primary)."""
        net = self.cluster.net
        conf = self.run_dir / "hosts" / host / "sentinel.conf"
        if first or not conf.exists():
            write_private(
                conf,
                sentinel_conf(
                    net.address[host],
                    SENTINEL_PORT,
                    self.run_dir / "hosts" / host,
                    self.run_dir / "logs" / f"{host}-sentinel.log",
                    (net.address["r1"], PORT),
                    self.password,
                    self.sentinel_password,
                    self.down_after_ms,
                ),
            )
        self.cluster.start(host)

    def start(self) -> None:
        self.start_server("r1", None)
        self.wait(lambda: self.answers("r1"), 30, "r1 to answer")
        for host in SERVERS[1:]:
            self.start_server(host, "r1")
        self.wait(lambda: self.in_sync("r1"), 60, "replicas in sync")
        for host in SENTINELS:
            self.start_sentinel(host, first=True)
        self.wait(self.healthy, HEALTHY_WAIT_S, "the Sentinels to agree")

    def stop(self, timeout: float = 30) -> dict[str, bool]:
        return {h: self.cluster.procs[h].stop(timeout=timeout) for h in (*SENTINELS, *SERVERS)}

    # --- who is who -------------------------------------------------------------------------

    def server(self, host: str, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            self.cluster.net.address[host],
            PORT,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def sentinel(self, host: str, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            self.cluster.net.address[host],
            SENTINEL_PORT,
            password=self.sentinel_password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def answers(self, host: str) -> bool:
        with contextlib.closing(self.server(host)) as client:
            return bool(client.ping())

    def named_primary(self) -> str | None:
        """The primary most live Sentinels name (None while they do not agree)."""
        named: list[str] = []
        for host in SENTINELS:
            if not self.cluster.procs[host].alive():
                continue
            with contextlib.suppress(redis.RedisError, OSError), self.sentinel(host) as client:
                addr, _ = client.sentinel_get_master_addr_by_name(MASTER)
                named.append(self.address.get(str(addr), str(addr)))
        if not named:
            return None
        best = max(set(named), key=named.count)
        return best if named.count(best) >= 2 else None

    def replicas_of(self, primary: str) -> list[str]:
        return [h for h in SERVERS if h != primary]

    def replica_reader(self) -> redis.Redis:
        """A client of one replica the Sentinels see up with its link to the primary up (the
        collector reads there; see ``faults_checks.Collector``), a different one each time."""
        found: list[str] = []
        for host in SENTINELS:
            if not self.cluster.procs[host].alive():
                continue
            with contextlib.suppress(redis.RedisError, OSError), self.sentinel(host) as client:
                for r in client.sentinel_slaves(MASTER):
                    fine = not (r.get("is_sdown") or r.get("is_odown"))
                    if fine and r.get("master-link-status") == "ok":
                        found.append(self.address.get(str(r.get("ip")), ""))
                break
        found = [h for h in found if h]
        if not found:
            raise redis.ConnectionError("no replica in sync to read from")
        self._reader = (getattr(self, "_reader", -1) + 1) % len(found)
        host = found[self._reader]
        return redis.Redis(
            self.cluster.net.address[host],
            PORT,
            password=self.password,
            socket_timeout=5,
            socket_connect_timeout=3,
            decode_responses=True,
        )

    # --- health -----------------------------------------------------------------------------

    def in_sync(self, primary: str) -> bool:
        """``primary`` is master with both other servers online and caught up."""
        with self.server(primary) as client:
            info = client.info("replication")
        if info.get("role") != "master":
            return False
        offset = int(info.get("master_repl_offset", 0))
        online = [
            v
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        ]
        return len(online) >= len(SERVERS) - 1 and all(caught_up(v, offset) for v in online)

    def healthy(self) -> bool:
        """Every process up, one primary that every Sentinel names, with both replicas in sync,
        every Sentinel seeing both replicas and both other Sentinels."""
        self.problem = self._problem()
        return not self.problem

    def _problem(self) -> str:
        down = [h for h in (*SERVERS, *SENTINELS) if not self.cluster.procs[h].alive()]
        if down:
            return f"down: {', '.join(down)}"
        primary = self.named_primary()
        if primary is None:
            return "the Sentinels name no primary together"
        if not self.in_sync(primary):
            return f"{primary}'s replicas not both online and caught up"
        for host in SENTINELS:
            with self.sentinel(host) as client:
                state = client.sentinel_master(MASTER)
                replicas = client.sentinel_slaves(MASTER)
            named = self.address.get(str(state.get("ip")))
            if named != primary:
                return f"{host} names {named}"
            flags = str(state.get("flags", ""))
            if any(f in flags for f in ("s_down", "o_down", "failover")):
                return f"{host} sees the primary {flags}"
            if int(state.get("num-other-sentinels", 0)) < 2:
                return f"{host} knows {state.get('num-other-sentinels')} other Sentinels"
            up = [r for r in replicas if not (r.get("is_sdown") or r.get("is_odown"))]
            if len(up) < 2:
                return f"{host} sees {len(up)} replicas up"
        return ""

    @staticmethod
    def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError, ValueError):
                if check():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what}: not within {timeout:.0f} s")

    def wait_healthy(self, timeout: float = HEALTHY_WAIT_S) -> None:
        try:
            self.wait(self.healthy, timeout, "the Redis topology healthy again")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} ({getattr(self, 'problem', '')})") from None

    def revive(self) -> list[str]:
        """Start any server or Sentinel that is down (a replica of the named primary)."""
        started = []
        primary = self.named_primary()
        for host in SERVERS:
            if not self.cluster.procs[host].alive():
                self.start_server(host, primary if primary != host else None)
                started.append(host)
        for host in SENTINELS:
            if not self.cluster.procs[host].alive():
                self.start_sentinel(host)
                started.append(host)
        return started


class Prober:
    """Writes one key through Sentinel every 100 ms and keeps the times writes succeeded, so
    the time from a primary kill to the first write that succeeds can be read afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok: list[float] = []
        self.failures = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults-prober", daemon=True)

    def start(self) -> Prober:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        from workers.core.connection import connect

        client = connect(self.url, 0.0, socket_timeout=0.5, socket_connect_timeout=0.5)
        n = 0
        while not self.stop_event.wait(0.1):
            n += 1
            try:
                client.set("faults:probe", n, ex=60)
                self.ok.append(time.monotonic())
            except (redis.RedisError, OSError):
                self.failures += 1

    def first_after(self, t: float) -> float | None:
        i = bisect.bisect_right(self.ok, t)
        return self.ok[i] if i < len(self.ok) else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank], 2)


def resume_report(kills: list[tuple[float, float]], prober: Prober, writes: list[float]) -> Any:
    """Seconds from each primary kill (monotonic, wall) to the prober's first successful write
    and to watchkeeper's own first write (the first stream entry written after it, by its id's
    time), with p50/p99."""
    probe, system = [], []
    for t_mono, t_wall in kills:
        first = prober.first_after(t_mono)
        if first is not None:
            probe.append(first - t_mono)
        i = bisect.bisect_right(writes, t_wall)
        if i < len(writes):
            system.append(writes[i] - t_wall)
    return {
        "primary_kills": len(kills),
        "probe_write_s": {"p50": percentile(probe, 50), "p99": percentile(probe, 99),
                          "max": round(max(probe), 2) if probe else None, "n": len(probe)},
        "watchkeeper_write_s": {"p50": percentile(system, 50), "p99": percentile(system, 99),
                                "max": round(max(system), 2) if system else None,
                                "n": len(system)},
        "goal_p99_s": 15,
        "down_after_ms": DOWN_AFTER_MS,
    }  # fmt: skip


class TopologyFaults:
    """The four new fault kinds (and the primary's restart), one at a time under the
    topology's lock, each ending with the topology healthy."""

    def __init__(self, topology: Topology, log: Callable[[str, str, str], None]) -> None:
        self.topo = topology
        self.log = log
        self.lock = topology.cluster.locks["redis"]
        self.kills: list[tuple[float, float]] = []
        self.variants: dict[str, int] = {"sentinels": 0, "clients": 0}
        self.failovers = 0

    def _primary(self) -> str:
        primary = self.topo.named_primary()
        if primary is None:
            raise RuntimeError("the Sentinels name no primary")
        return primary

    def _failover_from(self, old: str, timeout: float = 60) -> str:
        self.topo.wait(
            lambda: self.topo.named_primary() not in (None, old), timeout, f"a failover from {old}"
        )
        self.failovers += 1
        return self._primary()

    def primary_kill(self, down: float) -> None:
        with self.lock:
            self.topo.wait_healthy()
            old = self._primary()
            self.log("primary_kill", old, "SIGKILL the primary")
            self.kills.append((time.monotonic(), time.time()))
            self.topo.cluster.procs[old].kill(signal.SIGKILL)
            self.topo.cluster.procs[old].reap()
            new = self._failover_from(old)
            time.sleep(down)
            self.topo.start_server(old, new)  # back as a replica of the new primary
            self.topo.wait_healthy()

    def split_brain(self, variant: str, hold: float) -> None:
        with self.lock:
            self.topo.wait_healthy()
            old = self._primary()
            net = self.topo.cluster.net
            if variant == "sentinels":
                peers = [*SENTINELS, *self.topo.replicas_of(old)]
                self.log("split_brain", old, "cut from the Sentinels and replicas")
            else:
                peers = list(CLIENT_HOSTS)
                self.log("split_brain", old, f"cut from its clients for {hold:.1f} s")
            self.variants[variant] += 1
            net.cut(old, peers)
            try:
                if variant == "sentinels":
                    self._failover_from(old)
                    self.topo.wait(
                        lambda: self._refuses_writes(old), 30, "the old primary refusing writes"
                    )
                time.sleep(hold)
            finally:
                net.cut(old, peers, cut=False)
            self.topo.wait_healthy()

    def _refuses_writes(self, host: str) -> bool:
        """The cut-off old primary answers a write with NOREPLICAS (or is a replica)."""
        with self.topo.server(host) as client:
            try:
                client.set("faults:split", "1", ex=60)
            except redis.ResponseError as exc:
                return str(exc).startswith(("NOREPLICAS", "READONLY"))
        return False

    def replica_kill(self, down: float, pick: int) -> None:
        with self.lock:
            self.topo.wait_healthy()
            primary = self._primary()
            victim = self.topo.replicas_of(primary)[pick % 2]
            self.log("replica_kill", victim, f"SIGKILL a replica, down {down:.1f} s")
            self.topo.cluster.procs[victim].kill(signal.SIGKILL)
            self.topo.cluster.procs[victim].reap()
            time.sleep(down)
            self.topo.start_server(victim, self._primary())
            self.topo.wait_healthy()

    def sentinel_kill(self, victim: str, down: float) -> None:
        with self.topo.cluster.locks[victim]:
            self.log("sentinel_kill", victim, f"SIGKILL a Sentinel, down {down:.1f} s")
            self.topo.cluster.procs[victim].kill(signal.SIGKILL)
            self.topo.cluster.procs[victim].reap()
            time.sleep(down)
            self.topo.start_sentinel(victim)

    def primary_restart(self, down: float) -> None:
        """The plain run's ``redis_restart`` on Sentinel: the primary stopped with SIGTERM
        (it waits for its replicas to catch up), started again as whatever Sentinel says."""
        with self.lock:
            self.topo.wait_healthy()
            old = self._primary()
            self.log("redis_restart", old, f"SIGTERM the primary, down {down:.1f} s")
            self.topo.cluster.procs[old].stop(timeout=20)
            time.sleep(down)
            now = self.topo.named_primary()
            self.topo.start_server(old, None if now in (None, old) else now)
            self.topo.wait_healthy()
