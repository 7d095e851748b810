"""The fault-injection run's hosts: what runs in each namespace, and how it is started and killed.

* ``redis`` — the machine's ``redis-server`` (``/usr/bin/redis-server`` when present), AOF on,
  ``requirepass`` set. Its configuration is written to its standard input (``redis-server -``),
  so the password is in no file and on no command line.
* ``w1``, ``w2`` — ``celery -A workers worker -Q celery,notify`` (prefork: polls and deliveries).
  ``w2`` can be (re)started under
  libfaketime with its wall clock an hour ahead (a fixed offset, so its timers stay sane).
* ``beat``, ``beat2`` — ``celery -A workers beat``; the second is started and stopped by the run.
* ``tcp`` — ``watchkeeper listen``.

Every process is started with ``ip netns exec`` in its own session (so a whole host is one
process group), its output appended to ``logs/<host>.log``; every pid is remembered so the run
can prove at the end that none is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.faults_net import Network

ROOT = Path(__file__).resolve().parents[1]
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
SKEW = "+1h"


def redis_binary() -> str:
    """The machine's redis-server (not a Python package's copy of it)."""
    for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(path):
            return path
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("faults: no redis-server on this machine (.ci/install-faults-deps)")
    return found


def faketime_lib() -> str:
    for path in FAKETIME_LIBS:
        if os.path.exists(path):
            return path
    raise SystemExit("faults: libfaketime not found (run .ci/install-faults-deps)")


@dataclass
class Proc:
    """One program on one host; ``start`` may be called again after it died."""

    host: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    skewed: bool = False
    umask: int = -1
    """The program's umask (-1: inherited); a Sentinel's rewritten config must stay 0600."""

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(
        self, net: Network, env: dict[str, str], stdin: bytes | None = None, skew: bool = False
    ) -> int:
        self.starts += 1
        self.skewed = skew
        run_env = dict(env)
        if skew:
            run_env.update(LD_PRELOAD=faketime_lib(), FAKETIME=SKEW)
        with self.log.open("ab") as log:
            log.write(
                f"\n===== start {self.starts}{' (clock ' + SKEW + ')' if skew else ''} at "
                f"{time.strftime('%H:%M:%S')} =====\n".encode()
            )
            log.flush()
            self.popen = subprocess.Popen(
                [*net.exec_prefix(self.host), *self.argv],
                cwd=ROOT,
                env=run_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                start_new_session=True,
                umask=self.umask,
            )
        if stdin is not None and self.popen.stdin is not None:
            self.popen.stdin.write(stdin)
            self.popen.stdin.close()
        return self.popen.pid

    def pool(self) -> list[psutil.Process]:
        """The prefork pool children (for a worker)."""
        if not self.alive() or self.popen is None:
            return []
        try:
            return list(psutil.Process(self.popen.pid).children())
        except psutil.Error:
            return []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: the program and everything it forked."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float) -> bool:
        """SIGTERM, wait, then SIGKILL the group; True if it stopped on its own."""
        if not self.alive() or self.popen is None:
            self.reap()
            return True
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        self.kill(signal.SIGKILL)
        self.reap()
        return clean

    def reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)


@dataclass
class Cluster:
    """The run's processes, one lock per host so faults on one host never overlap."""

    net: Network
    env: dict[str, str]
    run_dir: Path
    redis_conf: bytes
    procs: dict[str, Proc] = field(default_factory=dict)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        for host in ("w1", "w2"):
            self.add(
                host,
                [
                    py, "-m", "celery", "-A", "workers", "worker", "--pool", "prefork",
                    "--concurrency", self.env["WATCHKEEPER_CONCURRENCY"], "--loglevel", "INFO",
                    "--hostname", f"{host}@faults", "--without-mingle",
                    # both queues: polls and deliveries (the `notify` queue a worker without -Q
                    # leaves to `watchkeeper run`'s delivery worker), so the worker faults also
                    # hit deliveries mid-send and "notified exactly once" is tested under them
                    "--queues", "celery,notify",
                ],
            )  # fmt: skip
        for host in ("beat", "beat2"):
            self.add(host, [py, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO"])
        self.add(
            "tcp",
            [
                py,
                "-m",
                "workers.cli",
                "listen",
                "--host",
                self.net.address["tcp"],
                "--port",
                "5140",
            ],
        )
        self.add("redis", [redis_binary(), "-"])
        # its data files hold the source registry (URLs with their tokens): owner only
        self.procs["redis"].umask = 0o077
        for host in ("w1", "w2", "beat", "beat2", "tcp", "redis"):
            (self.run_dir / "hosts" / host).mkdir(parents=True, exist_ok=True)
        for name in ("redis", "w1", "w2", "beat", "beat2", "tcp", "net-w1", "net-w2"):
            self.locks[name] = threading.Lock()

    def add(self, host: str, argv: list[str]) -> None:
        self.procs[host] = Proc(host, argv, self.run_dir / "logs" / f"{host}.log")

    def host_env(self, host: str) -> dict[str, str]:
        return {**self.env, "WATCHKEEPER_HOME": str(self.run_dir / "hosts" / host)}

    def start(self, host: str, skew: bool = False, stdin: bytes | None = None) -> int:
        """Start ``host``'s program; a Redis server gets its configuration on stdin."""
        proc = self.procs[host]
        if stdin is None and host == "redis":
            stdin = self.redis_conf
        pid = proc.start(self.net, self.host_env(host), stdin=stdin, skew=skew)
        self.pids.add(pid)
        return pid

    def note_pool(self) -> None:
        """Remember pool children's pids too, to prove at the end that none outlived us."""
        for host in ("w1", "w2"):
            self.pids.update(p.pid for p in self.procs[host].pool())

    def left(self, net: Network) -> list[int]:
        """Pids this run started that are still alive (not zombies) in one of its namespaces
        (a pid alive elsewhere was reused by the machine for something else)."""
        ours = net.inodes()
        out = []
        for pid in sorted(self.pids):
            with contextlib.suppress(psutil.Error, OSError):
                if (
                    psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                    and os.stat(f"/proc/{pid}/ns/net").st_ino in ours
                ):
                    out.append(pid)
        return out
