"""Redis Sentinel (issue 20): every client follows a failover without a restart.

A real topology on 127.0.0.1 — one primary, two replicas, three Sentinels, redis-server
processes on free ports started by the module's fixture (``bench/sentinel_topology.py``), the
servers and the Sentinels with different passwords — and real clients: redis-py through
``connect``, a prefork Celery worker in a subprocess, the TCP listener's asyncio writer, the
CLI. Failovers are real: ``SENTINEL FAILOVER`` and SIGKILL of the primary. Each costs several
seconds (Sentinel's down-after is 5 s), so the module makes as few as prove the point.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.sentinel_topology import LocalTopology, redis_binary
from tests.support.helpers import ROOT, wait_for
from workers.core import keys
from workers.core.connection import RedisUnavailable, check_reachable, connect, get_client
from workers.core.settings import Settings
from workers.tcp.listener import BackgroundListener

DATA_PW = "data-pw-7s1"
SENTINEL_PW = "sentinel-pw-9q2"


@pytest.fixture(scope="module")
def topology() -> Iterator[LocalTopology]:
    try:
        redis_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    topo = LocalTopology(password=DATA_PW, sentinel_password=SENTINEL_PW).start()
    try:
        yield topo
    finally:
        topo.stop()


def healthy(topo: LocalTopology) -> None:
    """Every server up, both replicas in sync with the primary (between tests)."""
    for i, proc in enumerate(topo.servers):
        if not proc.alive():
            topo.restart(i)
    topo.wait(lambda: topo.replication_ok(2), 60, "replicas in sync")


def env_for(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHKEEPER_", "MOONSHOT_")) and k != "REDIS_URL"
    }
    config = tmp_path / "sources.toml"
    config.write_text('[[feeds]]\nname = "f"\nurl = "http://127.0.0.1:9/"\n')
    env.update(
        REDIS_URL=url,
        WATCHKEEPER_CONFIG=str(config),
        WATCHKEEPER_HOME=str(tmp_path / "home"),
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def run(env: dict[str, str], *argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


# --- clients ----------------------------------------------------------------------------------


def test_a_client_follows_sentinel_failover_and_a_killed_primary(topology: LocalTopology) -> None:
    healthy(topology)
    client = connect(topology.url())
    client.set("wk:test:before", "1")
    first = client.connection_pool.master_address  # type: ignore[attr-defined]
    topology.failover()
    assert client.incr("wk:test:n") >= 1  # the same client object, no restart
    second = client.connection_pool.master_address  # type: ignore[attr-defined]
    assert second != first and client.get("wk:test:before") == "1"

    index = topology.kill_primary()
    started = time.monotonic()
    assert client.set("wk:test:after-kill", "1")  # waits through the failover, then writes
    assert time.monotonic() - started < 30
    assert client.connection_pool.master_address not in (second, None)  # type: ignore[attr-defined]
    assert client.get("wk:test:before") == "1"
    topology.restart(index)
    client.close()


def test_a_primary_refusing_writes_for_want_of_replicas_is_left_for_sentinels_pick(
    topology: LocalTopology,
) -> None:
    """NOREPLICAS (min-replicas-to-write) makes the client ask Sentinel again, and the same
    client writes as soon as the primary may take writes again."""
    healthy(topology)
    primary = topology.client(topology.primary_port())
    client = connect(topology.url(), failover_wait=1.0)
    client.set("wk:test:x", "1")
    primary.config_set("min-replicas-to-write", 3)  # more than it has: refuses every write
    try:
        with pytest.raises(redis.ConnectionError, match="NOREPLICAS"):
            client.set("wk:test:x", "2")
    finally:
        primary.config_set("min-replicas-to-write", 1)
    assert client.set("wk:test:x", "3") and client.get("wk:test:x") == "3"


def test_separate_passwords_reach_servers_and_sentinels(topology: LocalTopology) -> None:
    healthy(topology)
    wrong = topology.url().replace(SENTINEL_PW, "nope")
    with pytest.raises(RedisUnavailable) as err:
        check_reachable(wrong, timeout=2)
    assert "nope" not in str(err.value) and SENTINEL_PW not in str(err.value)
    settings = Settings.from_env(
        {"REDIS_URL": topology.url().split("?")[0], "WATCHKEEPER_SENTINEL_PASSWORD": SENTINEL_PW}
    )
    client = get_client(settings)
    assert client.ping()
    client.close()


# --- Celery -----------------------------------------------------------------------------------


def _succeeded(log: Path, task_id: str) -> bool:
    return f"{task_id}] succeeded" in log.read_text(errors="replace")


def _send(env: dict[str, str]) -> str:
    code = "from workers import app; print(app.send_task('tasks.cleanup.cleanup').id)"
    sent = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    return sent.stdout.strip()


def test_a_prefork_worker_follows_failovers_without_restart(
    topology: LocalTopology, tmp_path: Path
) -> None:
    healthy(topology)
    env = env_for(tmp_path, topology.url())
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "prefork",
             "--concurrency", "1", "-l", "info", "--without-mingle", "--without-gossip"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        task = _send(env)
        wait_for(lambda: _succeeded(log, task), 90, message="a task before any failover")
        topology.failover()
        task = _send(env)
        wait_for(lambda: _succeeded(log, task), 90, message="a task after SENTINEL FAILOVER")
        index = topology.kill_primary()
        task = _send(env)  # the message waits for the new primary, then the worker runs it
        wait_for(lambda: _succeeded(log, task), 90, message="a task after a primary kill")
        topology.restart(index)
        assert worker.poll() is None, log.read_text()[-3000:]
        assert DATA_PW not in log.read_text() and SENTINEL_PW not in log.read_text()
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_a_broker_channel_closed_after_its_connection_raises_a_connection_error(
    topology: LocalTopology,
) -> None:
    """kombu, closing a channel after a failover, restores unacked messages through a new pool
    of a connection it already let go of: kombu's own channel died of an AttributeError there,
    which stopped the worker ("Unrecoverable error", seen in the fault run)."""
    from kombu.connection import Connection

    from workers.core import broker
    from workers.core.sentinel import parse

    target = parse(topology.url())
    options = broker.celery_options(target, 60)
    with Connection(
        options["broker_url"],
        transport=broker.TRANSPORT,
        transport_options=options["broker_transport_options"],
    ) as conn:
        channel = conn.channel()
        channel._pool = None
        channel.connection.client = None  # what kombu's close leaves behind
        with pytest.raises(redis.ConnectionError):
            channel._get_pool()


# --- the TCP listener -------------------------------------------------------------------------


def _send_lines(port: int, start: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(f"sentinel line {n} end\n".encode() for n in range(start, count)))


def _lines_in(client: redis.Redis, settings: Settings) -> list[str]:
    entries = client.xrange(keys.STREAM.key(settings, "logs"))
    return [f["line"] for _, f in entries if f.get("source") == "tcp"]


def test_the_tcp_listener_loses_no_line_across_a_primary_kill(
    topology: LocalTopology, tmp_path: Path
) -> None:
    healthy(topology)
    settings = Settings.from_env(env_for(tmp_path, topology.url(), WATCHKEEPER_TCP_PACK_LINES="1"))
    client = connect(topology.url())
    client.delete(keys.STREAM.key(settings, "logs"))
    with BackgroundListener(settings, topology.url()) as listener:
        _send_lines(listener.port, 0, 500)
        wait_for(lambda: len(_lines_in(client, settings)) == 500, 30, message="500 lines")
        index = topology.kill_primary()
        _send_lines(listener.port, 500, 1000)  # read while there is no primary: held, resent
        wait_for(lambda: len(_lines_in(client, settings)) >= 1000, 60, message="1000 lines")
        topology.restart(index)
        assert listener.call(lambda: listener.listener.writer.holding) == 0
    lines = _lines_in(client, settings)
    assert sorted(lines) == sorted(f"sentinel line {n} end" for n in range(1000))


# --- nothing is told before a replica has it ---------------------------------------------------


class ReplicasSilenced:
    """Both replicas killed, and the primary told to take writes anyway (no
    ``min-replicas-to-write``): writes succeed but no replica confirms them — the window in
    which a primary's death would lose them."""

    def __init__(self, topo: LocalTopology) -> None:
        self.topo = topo

    def __enter__(self) -> ReplicasSilenced:
        healthy(self.topo)
        primary = self.topo.primary_port()
        self.primary = self.topo.client(primary)
        self.primary.config_set("min-replicas-to-write", 0)
        self.stopped = [i for i, p in enumerate(self.topo.servers) if p.port != primary]
        for i in self.stopped:
            self.topo.servers[i].kill()
        return self

    def __exit__(self, *exc: object) -> None:
        for i in self.stopped:
            self.topo.restart(i)
        self.primary.config_set("min-replicas-to-write", 1)
        healthy(self.topo)


def test_the_tcp_listener_holds_lines_no_replica_has_confirmed(
    topology: LocalTopology, tmp_path: Path
) -> None:
    env = env_for(tmp_path, topology.url(), WATCHKEEPER_REPLICA_WAIT_MS="200")
    settings = Settings.from_env(env)
    client = connect(topology.url())
    client.delete(keys.STREAM.key(settings, "logs"))
    with BackgroundListener(settings, topology.url()) as listener:
        with ReplicasSilenced(topology):
            _send_lines(listener.port, 0, 300)
            wait_for(lambda: len(_lines_in(client, settings)) == 300, 30, message="300 lines")
            # written, but not confirmed: still held (and resent, written once, until then)
            time.sleep(1.0)
            assert listener.call(lambda: listener.listener.writer.holding) == 300
            assert "NotReplicated" in (listener.stats.last_write_error or "")
        wait_for(
            lambda: listener.call(lambda: listener.listener.writer.holding) == 0,
            60,
            message="the lines let go once a replica has them",
        )
    assert sorted(_lines_in(client, settings)) == sorted(
        f"sentinel line {n} end" for n in range(300)
    )


def test_a_sink_sends_nothing_before_a_replica_has_the_entries(
    topology: LocalTopology, tmp_path: Path, hook: Any
) -> None:
    from tasks.notify.config import notify_config
    from tasks.notify.outbox import claim
    from tasks.notify.tasks import deliver_all
    from tests.support.notify import add_alerts, alert, fast, pump
    from workers.core.runtime import Runtime
    from workers.store.replicas import NotReplicated

    config = tmp_path / "notify.toml"
    config.write_text(f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
    env = env_for(tmp_path, topology.url(), WATCHKEEPER_REPLICA_WAIT_MS="200")
    env["WATCHKEEPER_CONFIG"] = str(config)
    rt = fast(Runtime(Settings.from_env(env), connect(topology.url()), config), notify_redis_wait=1)
    rt.redis.delete(keys.STREAM.key(rt.settings, "alerts"))
    deliver_all(rt)  # the sink's group, at the end of the stream
    with ReplicasSilenced(topology):
        add_alerts(rt, [alert(n) for n in range(3)])
        for _ in range(2):  # the read lock is not confirmed: the sink reads nothing, sends nothing
            result = deliver_all(rt)
            assert result["ops"]["read"] == {"busy": 1}, result
        ncfg = notify_config(rt.config())
        with pytest.raises(NotReplicated):  # and the read itself waits for a replica
            claim(rt, ncfg.sinks[0], ncfg.filters, {})
        assert hook.accepted == []
    pump(lambda: deliver_all(rt), lambda: len(hook.accepted) >= 3, 60, message="3 messages")
    deliver_all(rt)
    assert sorted(hook.titles()) == ["Alert 0", "Alert 1", "Alert 2"]
    assert len(set(hook.idem_keys())) == 3 and len(hook.accepted) == 3


def test_a_flush_sends_no_location_batch_before_a_replica_has_its_lease(
    topology: LocalTopology, tmp_path: Path
) -> None:
    from tasks.locations.batches import enqueue, flush
    from tasks.locations.buffer import LocKeys
    from tests.support.helpers import clear_watchkeeper_keys
    from workers.core.runtime import Runtime

    env = env_for(
        tmp_path,
        topology.url(),
        WATCHKEEPER_REPLICA_WAIT_MS="200",
        WATCHKEEPER_LOCATION_LEASE="1",
        WATCHKEEPER_LOCATION_BATCH="5",
    )
    rt = Runtime(Settings.from_env(env), connect(topology.url()), Path(env["WATCHKEEPER_CONFIG"]))
    clear_watchkeeper_keys(rt.redis)
    fields = {"source": "news", "title": "Flood in Lyon", "summary": "", "link": "https://x/"}
    enqueue(rt, [(f"1700000000000-{n}", dict(fields)) for n in range(5)])
    with ReplicasSilenced(topology):
        assert flush(rt) == []  # claimed, but the lease is on no replica: not sent
        assert rt.redis.zcard(LocKeys(rt.settings).lease) == 1
    time.sleep(1.5)  # the unconfirmed lease expires; the next flush reaps and claims again
    batches = flush(rt)
    assert len(batches) == 1
    clear_watchkeeper_keys(rt.redis)


# --- the CLI ----------------------------------------------------------------------------------


def test_status_shows_the_topology_and_warns_of_a_missing_replica(
    topology: LocalTopology, tmp_path: Path
) -> None:
    import json

    healthy(topology)
    env = env_for(tmp_path, topology.url())
    proc = run(env, "workers.cli", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    topo: dict[str, Any] = json.loads(proc.stdout)["redis"]["topology"]
    assert topo["mode"] == "sentinel" and topo["role"] == "master"
    assert topo["primary"].endswith(f":{topology.primary_port()}")
    assert topo["replicas_online"] == 2 and len(topo["replicas"]) == 2
    assert topo["sentinels_reachable"] == 3 and topo["warnings"] == []

    replica = next(p for p in topology.servers if p.port != topology.primary_port())
    replica.kill()
    try:
        proc = run(env, "workers.cli", "status")
        assert proc.returncode == 0, proc.stderr
        assert "WARNING: 1 of the 2 replicas Sentinel knows are online" in proc.stdout
        assert DATA_PW not in proc.stdout and SENTINEL_PW not in proc.stdout
    finally:
        topology.restart(topology.servers.index(replica))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [("workers.cli", "status"), ("celery", "-A", "workers", "worker")])
def test_no_reachable_sentinel_is_one_line_and_exit_2(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    url = f"sentinel://:pw-x@127.0.0.1:{_closed_port()},127.0.0.1:{_closed_port()}/wkmaster/0"
    proc = run(env_for(tmp_path, url), *argv)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "no Sentinel answered" in lines[0], proc.stderr
    assert lines[0].startswith("watchkeeper: Redis at sentinel://127.0.0.1:")
    assert "pw-x" not in proc.stderr and "Traceback" not in proc.stderr
