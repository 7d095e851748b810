"""Redis URLs (issue 12 #10, issue 20): TLS works for workers and the CLI; a bad Sentinel URL,
Cluster and unknown schemes, and an unwritable WATCHKEEPER_HOME, are one line and exit 2 —
never a traceback. (Sentinel itself: tests/integration/test_sentinel.py.)"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import wait_for
from tests.support.notify_receivers import free_port
from workers.core.connection import connect

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_REDIS = "/usr/bin/redis-server"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    config = tmp_path / "sources.toml"
    config.write_text('[[feeds]]\nname = "f"\nurl = "http://127.0.0.1:9/"\n')
    env.update(WATCHKEEPER_CONFIG=str(config), PYTHONPATH=str(ROOT), **extra)
    return env


def _run(env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sentinel://:pw@127.0.0.1:26379", "no master name"),
        ("redis+cluster://127.0.0.1:7000", "Redis Cluster is not supported"),
        ("amqp://guest:guest@127.0.0.1:5672//", "unsupported scheme 'amqp'"),
    ],
)
@pytest.mark.parametrize("argv", [("workers.cli", "status"), ("celery", "-A", "workers", "worker")])
def test_unsupported_redis_urls_are_one_line(tmp_path, url, why, argv):
    proc = _run(_env(tmp_path, REDIS_URL=url), *argv)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and why in lines[0] and lines[0].startswith("watchkeeper: REDIS_URL=")
    assert ":pw@" not in proc.stderr and "guest:guest" not in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [("workers.cli", "status"), ("workers.cli", "run"), ("celery", "-A", "workers", "worker")],
)
def test_an_unwritable_home_is_one_line(tmp_path, argv):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _run(_env(tmp_path, WATCHKEEPER_HOME=str(blocker / "home")), *argv)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"watchkeeper: WATCHKEEPER_HOME={blocker / 'home'}")
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A TLS-only redis-server with a certificate from a test CA; yields its rediss:// URL."""
    if not shutil.which("openssl") or not os.path.exists(SYSTEM_REDIS):
        pytest.skip("needs openssl and the system redis-server")
    d = tmp_path / "tls"
    d.mkdir()

    def sh(command: str) -> None:
        subprocess.run(shlex.split(command), cwd=d, check=True, capture_output=True)

    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=ca")
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out server.crt -days 1 -extfile ext.cnf"
    )
    port = free_port()
    server = subprocess.Popen(
        [SYSTEM_REDIS, "--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.crt",
         "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
        cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.crt'}"
    try:
        wait_for(lambda: _answers(url) or server.poll() is not None, timeout=20)
        if server.poll() is not None:
            pytest.skip("the system redis-server has no TLS support")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return bool(connect(url, socket_timeout=1).ping())
    except Exception:
        return False


def test_rediss_works_for_a_worker_and_the_cli(tmp_path, tls_redis):
    env = _env(tmp_path, REDIS_URL=tls_redis)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "solo", "-l", "info"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        send = "from workers import app; print(app.send_task('tasks.cleanup.cleanup').id)"
        sent = subprocess.run(
            [sys.executable, "-c", send], env=env, capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.stdout is not None:
            line = worker.stdout.readline()
            lines.append(line)
            if f"{task_id}] succeeded" in line:
                break
        assert any(f"{task_id}] succeeded" in line for line in lines), "".join(lines[-30:])
        status = _run(env, "workers.cli", "status", "--json")
        assert status.returncode == 0, status.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test alone (its settings are changed), with a password."""
    if not os.path.exists(SYSTEM_REDIS):
        pytest.skip("needs the system redis-server")
    port = free_port()
    server = subprocess.Popen(
        [SYSTEM_REDIS, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "pr1vate-pw",
         "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:pr1vate-pw@127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _answers(url) or server.poll() is not None, timeout=20)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    ("refuse", "restore", "why"),
    [
        ((("CONFIG", "SET", "maxmemory-policy", "noeviction"), ("CONFIG", "SET", "maxmemory", "1")),
         (("CONFIG", "SET", "maxmemory", "0"),), "command not allowed when used memory"),
        ((("REPLICAOF", "127.0.0.1", "9"),), (("REPLICAOF", "NO", "ONE"),), "read only replica"),
    ],
)  # fmt: skip
def test_redis_refusing_a_command_midway_is_one_line_not_a_traceback(
    tmp_path, private_redis, refuse, restore, why
):
    env = _env(tmp_path, REDIS_URL=private_redis, WATCHKEEPER_HOME=str(tmp_path / "home"))
    add = ("workers.cli", "sources", "add", "feed", "world", "https://example.org/world.rss")
    client = connect(private_redis)
    # Given a Redis that answers but refuses writes (out of memory, a read-only replica)
    for command in refuse:
        client.execute_command(*command)
    try:
        # When a command writes to it
        proc = _run(env, *add)
    finally:
        for command in restore:
            client.execute_command(*command)
    # Then it ends in one line naming Redis's answer, exit 2, no traceback and no password
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("watchkeeper: Redis: ") and why in lines[0]
    assert "Traceback" not in proc.stderr and "pr1vate-pw" not in proc.stderr
    # And once Redis takes writes again, the same command works
    assert _run(env, *add).returncode == 0
    client.close()
