"""A real Redis Sentinel topology for tests and benchmarks: one primary, replicas, Sentinels.

``server_conf`` and ``sentinel_conf`` write the configuration both the fault run (one host per
process, in network namespaces) and ``LocalTopology`` (every process on 127.0.0.1, on free
ports: the integration tests and ``bench/capacity.py --sentinel``) start from:

* every server persists to an append-only file, and refuses writes when fewer than
  ``min_replicas`` replicas have acknowledged within ``max_lag`` seconds
  (``min-replicas-to-write``): a primary cut off from its replicas stops accepting writes
  before the Sentinels elect another, so no two primaries take writes at once;
* the Sentinels fail over after ``down_after_ms`` (5,000 here; Sentinel's own default is
  30,000) and need two of three to agree.

A server's password (``requirepass`` and ``masterauth``) is given on its standard input, so it
is in no file and on no command line. A Sentinel must have a configuration file it can rewrite
(it records the topology there), and that file holds the password it authenticates to the
servers with (``sentinel auth-pass``): it is written mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

MASTER = "wkmaster"
DOWN_AFTER_MS = 5000
MAX_LAG_S = 2


def redis_binary() -> str:
    """The machine's redis-server (a Sentinel is the same binary with ``--sentinel``)."""
    for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(path):
            return path
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server on this machine (.ci/install-faults-deps)")
    return found


def server_conf(
    bind: str,
    port: int,
    directory: Path,
    logfile: Path,
    password: str = "",
    primary: tuple[str, int] | None = None,
    min_replicas: int = 1,
    max_lag: int = MAX_LAG_S,
) -> bytes:
    """One server's configuration (its standard input); ``primary`` makes it a replica."""
    lines = [
        f"bind {bind}",
        f"port {port}",
        f"dir {directory}",
        f"logfile {logfile}",
        "daemonize no",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"min-replicas-to-write {min_replicas}",
        f"min-replicas-max-lag {max_lag}",
        "shutdown-timeout 5",
    ]
    if password:
        lines += [f"requirepass {password}", f"masterauth {password}"]
    if primary is not None:
        lines.append(f"replicaof {primary[0]} {primary[1]}")
    return ("\n".join(lines) + "\n").encode()


def sentinel_conf(
    bind: str,
    port: int,
    directory: Path,
    logfile: Path,
    primary: tuple[str, int],
    password: str = "",
    sentinel_password: str = "",
    down_after_ms: int = DOWN_AFTER_MS,
    quorum: int = 2,
) -> str:
    """One Sentinel's configuration file (it rewrites it as the topology changes)."""
    lines = [
        f"bind {bind}",
        f"port {port}",
        f"dir {directory}",
        f"logfile {logfile}",
        "daemonize no",
        f"sentinel monitor {MASTER} {primary[0]} {primary[1]} {quorum}",
        f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
        f"sentinel failover-timeout {MASTER} {max(10_000, 4 * down_after_ms)}",
        f"sentinel parallel-syncs {MASTER} 2",
    ]
    if password:
        lines.append(f"sentinel auth-pass {MASTER} {password}")
    if sentinel_password:
        lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"]
    return "\n".join(lines) + "\n"


CAUGHT_UP_BYTES = 1 << 20


def caught_up(replica: dict[str, Any], primary_offset: int) -> bool:
    """A replica (a row of ``INFO replication``) acknowledged within the last two seconds and
    is less than 1 MiB of the replication stream behind (under writes it is always a little
    behind: replicas acknowledge once a second)."""
    lag = int(replica.get("lag", 0) or 0)
    return lag <= 2 and primary_offset - int(replica.get("offset", 0) or 0) < CAUGHT_UP_BYTES


def write_private(path: Path, text: str) -> None:
    """A file only its owner reads (a Sentinel's, holding a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    port: int
    argv: list[str]
    stdin: bytes | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=0o077,  # what a Sentinel rewrites (its config: a password) stays private
            )
        if self.stdin is not None and self.popen.stdin is not None:
            self.popen.stdin.write(self.stdin)
            self.popen.stdin.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)


@dataclass
class LocalTopology:
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels on 127.0.0.1."""

    replicas: int = 2
    sentinels: int = 3
    password: str = ""
    sentinel_password: str = ""
    down_after_ms: int = DOWN_AFTER_MS
    min_replicas: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wk-sentinel-")))
    servers: list[Proc] = field(default_factory=list)
    watchers: list[Proc] = field(default_factory=list)

    host = "127.0.0.1"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalTopology:
        ports = [free_port() for _ in range(1 + self.replicas)]
        for i, port in enumerate(ports):
            self.servers.append(Proc(f"redis{i}", port, [redis_binary(), "-"]))
            self._start_server(i, None if i == 0 else (self.host, ports[0]))
        self.wait(lambda: self.replication_ok(self.replicas, ports[0]), 30, "replicas in sync")
        for i in range(self.sentinels):
            port = free_port()
            directory = self.root / f"sentinel{i}"
            conf = directory / "sentinel.conf"
            write_private(
                conf,
                sentinel_conf(
                    self.host,
                    port,
                    directory,
                    self.root / f"sentinel{i}.log",
                    (self.host, ports[0]),
                    self.password,
                    self.sentinel_password,
                    self.down_after_ms,
                ),
            )
            proc = Proc(f"sentinel{i}", port, [redis_binary(), str(conf), "--sentinel"])
            proc.start(self.root / f"sentinel{i}.out")
            self.watchers.append(proc)
        self.wait(self.sentinels_agree, 30, "Sentinels to see the primary and replicas")
        return self

    def _start_server(self, i: int, primary: tuple[str, int] | None) -> None:
        proc = self.servers[i]
        directory = self.root / proc.name
        directory.mkdir(parents=True, exist_ok=True)
        proc.stdin = server_conf(
            self.host,
            proc.port,
            directory,
            self.root / f"{proc.name}.log",
            self.password,
            primary,
            self.min_replicas,
        )
        proc.start(self.root / f"{proc.name}.out")
        self.wait(lambda: self._answers(proc.port), 30, f"{proc.name} to answer")

    def stop(self) -> None:
        for proc in [*self.watchers, *self.servers]:
            proc.kill(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses ------------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        """The ``sentinel://`` URL of this topology (the servers' password in its user info,
        the Sentinels' as ``sentinel_password``)."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{self.host}:{p.port}" for p in self.watchers)
        tail = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"sentinel://{auth}{hosts}/{MASTER}/{db}{tail}"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            self.host,
            port,
            password=self.password or None,
            socket_timeout=3,
            socket_connect_timeout=2,
            decode_responses=True,
        )

    def sentinel_client(self, i: int) -> redis.Redis:
        return redis.Redis(
            self.host,
            self.watchers[i].port,
            password=self.sentinel_password or None,
            socket_timeout=3,
            socket_connect_timeout=2,
            decode_responses=True,
        )

    def primary_port(self) -> int:
        """The primary's port, as the first Sentinel that answers says."""
        for i, proc in enumerate(self.watchers):
            if not proc.alive():
                continue
            with contextlib.suppress(redis.RedisError):
                _, port = self.sentinel_client(i).sentinel_get_master_addr_by_name(MASTER)
                return int(port)
        raise RuntimeError("no Sentinel answers")

    def index_of(self, port: int) -> int:
        return next(i for i, p in enumerate(self.servers) if p.port == port)

    # --- faults ---------------------------------------------------------------------------

    def failover(self, timeout: float = 60) -> int:
        """``SENTINEL FAILOVER``; wait until a new primary is in place with its replicas in
        sync; return its port."""
        before = self.primary_port()
        self.sentinel_client(0).sentinel_failover(MASTER)
        self.wait(lambda: self.primary_port() != before, timeout, "the failover")
        self.wait(lambda: self.replication_ok(self.replicas), timeout, "replicas in sync")
        return self.primary_port()

    def kill_primary(self) -> int:
        """SIGKILL the primary; return its index (restart it with ``restart``)."""
        index = self.index_of(self.primary_port())
        self.servers[index].kill(signal.SIGKILL)
        return index

    def restart(self, index: int) -> None:
        """Start a stopped server again, as a replica of the current primary."""
        self._start_server(index, (self.host, self.primary_port()))

    # --- health ---------------------------------------------------------------------------

    @staticmethod
    def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
                if check():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _answers(self, port: int) -> bool:
        client = self.client(port)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def replication_ok(self, replicas: int, port: int | None = None) -> bool:
        """The primary has ``replicas`` replicas online and caught up."""
        port = port or self.primary_port()
        info = self.client(port).info("replication")
        if info.get("role") != "master":
            return False
        offset = int(info.get("master_repl_offset", 0))
        online = [
            v
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        ]
        return len(online) >= replicas and all(caught_up(v, offset) for v in online)

    def sentinels_agree(self) -> bool:
        """Every live Sentinel knows the primary, its replicas and the other Sentinels."""
        live = [i for i, p in enumerate(self.watchers) if p.alive()]
        for i in live:
            master = self.sentinel_client(i).sentinel_master(MASTER)
            if int(master.get("num-slaves", 0)) < self.replicas:
                return False
            if int(master.get("num-other-sentinels", 0)) < len(live) - 1:
                return False
        return True
