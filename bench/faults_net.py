"""The fault-injection run's network: one namespace per host, joined by veth links to a switch.

Every host (Redis, two workers, beat, a second beat, the TCP listener, the sources, the
observer) is a network namespace with one interface, ``eth0``, whose peer sits on a bridge in
a switch namespace. Both ends of every link are created inside namespaces, so the machine's own
network namespace is never touched: no address, route or interface is added to it. A partition
of one host is ``ip link set <its switch port> down``.

Namespaces are named ``wkf<pid>-<host>`` after the process that made them, so a later run can
remove those of a run that died without cleaning up (its pid is gone) and never touches those
of a run still going. Processes inside are started with ``ip netns exec`` (which execs, so the
pid is the program's own); the controlling process moves itself with ``setns`` (``enter``).
A partition between two groups of hosts (``cut``: a Redis primary from its Sentinels and
replicas, or from its clients) is blackhole routes at both ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
PREFIX = "wkf"
SWITCH = "sw"
BRIDGE = "br0"


class NetError(RuntimeError):
    """A namespace or link could not be made; the message names the command."""


def ip(*args: str, check: bool = True) -> str:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


@dataclass
class Network:
    """The hosts of one run and their addresses on a private /24 that lives only in them."""

    hosts: Iterable[str]
    subnet: str = "10.213.77"
    owner: int = field(default_factory=os.getpid)
    address: dict[str, str] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"{PREFIX}{self.owner}-{host}"

    def port(self, host: str) -> str:
        """The host's interface on the switch (names are per namespace, so short ones do)."""
        return f"p-{host}"[:15]

    def create(self) -> Network:
        sweep_dead_runs()
        sw = self.ns(SWITCH)
        ip("netns", "add", sw)
        ip("-n", sw, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", sw, "link", "set", BRIDGE, "up")
        for n, host in enumerate(self.hosts, start=2):
            name = self.ns(host)
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
            ip(
                "-n",
                sw,
                "link",
                "add",
                self.port(host),
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                name,
            )
            ip("-n", sw, "link", "set", self.port(host), "master", BRIDGE)
            ip("-n", sw, "link", "set", self.port(host), "up")
            self.address[host] = f"{self.subnet}.{n}"
            ip("-n", name, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
        return self

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) the host's only link: a partition from everything else."""
        ip("-n", self.ns(SWITCH), "link", "set", self.port(host), "up" if up else "down")

    def cut(self, host: str, peers: Iterable[str], cut: bool = True) -> None:
        """Cut (or heal) ``host`` from ``peers`` only, both ways: a blackhole route to each
        peer in ``host``'s namespace and one back in each peer's. Packets on established
        connections vanish silently, as in a real partition; the rest of the network, and
        ``host``'s links to everyone else, are untouched."""
        verb = "add" if cut else "del"
        for peer in peers:
            for a, b in ((host, peer), (peer, host)):
                ip("-n", self.ns(a), "route", verb, "blackhole", f"{self.address[b]}/32",
                   check=cut)  # fmt: skip

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def names(self) -> list[str]:
        return [self.ns(h) for h in [SWITCH, *self.hosts]]

    def inodes(self) -> set[int]:
        """Our namespaces' identities (what ``/proc/<pid>/ns/net`` of a process in one is)."""
        out = set()
        for name in self.names():
            with contextlib.suppress(OSError):
                out.add(os.stat(os.path.join(NETNS_DIR, name)).st_ino)
        return out

    def pids(self) -> dict[str, list[int]]:
        """Processes still inside each of our namespaces."""
        return {name: netns_pids(name) for name in self.names() if netns_exists(name)}

    def destroy(self) -> list[str]:
        """Kill whatever is still inside our namespaces (ours: we made them) and remove them."""
        killed = kill_inside(self.names())
        for name in self.names():
            if netns_exists(name):
                ip("netns", "del", name, check=False)
        return killed


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_pids(name: str) -> list[int]:
    """Processes in namespace ``name`` but this one (the controller lives in one) and the
    ``ip`` asking (it runs where the controller is)."""
    proc = subprocess.Popen(["ip", "netns", "pids", name], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    return [int(p) for p in out.split() if p.isdigit() and int(p) not in (os.getpid(), proc.pid)]


def kill_inside(names: list[str]) -> list[str]:
    """SIGKILL every process in the given namespaces (but this one); describe each killed."""
    killed: list[str] = []
    for _ in range(3):
        found = False
        for name in names:
            if not netns_exists(name):
                continue
            for pid in netns_pids(name):
                found = True
                with contextlib.suppress(psutil.Error):
                    killed.append(
                        f"{name}: pid {pid} {' '.join(psutil.Process(pid).cmdline())[:120]}"
                    )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not found:
            break
        time.sleep(0.5)
    return killed


def sweep_dead_runs() -> list[str]:
    """Remove namespaces left by a run whose process is gone (killed before its cleanup)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            m = re.fullmatch(rf"{PREFIX}(\d+)-.+", name)
            if m and not psutil.pid_exists(int(m.group(1))):
                kill_inside([name])
                ip("netns", "del", name, check=False)
                removed.append(name)
    return removed


def enter(name: str) -> None:
    """Move the calling thread into namespace ``name``; threads it starts later follow it,
    and sockets it opens stay in it whichever thread uses them."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetError(f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
