"""`watchkeeper run --demo` as a new user runs it: embedded Redis, real prefork worker, beat,
listener, the local sample sources — then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.helpers import wait_for

pytestmark = pytest.mark.own_redis


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "WATCHKEEPER_CONFIG") and not k.startswith("PYTEST")
    }
    env["WATCHKEEPER_HOME"] = str(home)
    return env


def _cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(home),
        cwd=home.parent,
    )


def _processes_of(home: Path) -> list[psutil.Process]:
    """Every live process started for this home: by environment or by socket path."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            ours = str(home) in " ".join(proc.info["cmdline"] or []) or proc.environ().get(
                "WATCHKEEPER_HOME"
            ) == str(home)
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def status_of(home: Path) -> dict[str, Any]:
    return json.loads(_cli(home, "status", "--json").stdout)  # type: ignore[no-any-return]


def undeclared_keys(url: str) -> list[str]:
    """Keys under the prefix that no declaration in ``workers.core.keys`` matches."""
    from workers.core import keys
    from workers.core.connection import connect
    from workers.core.settings import Settings

    settings = Settings.from_env({})
    client = connect(url)
    try:
        return sorted(
            str(k)
            for k in client.scan_iter(match=settings.prefix + "*", count=1000)
            if keys.match(str(k), settings) is None
        )
    finally:
        client.close()


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_ctrl_c_leaves_no_process(tmp_path):
    home = tmp_path / "home"
    # Given `watchkeeper run --demo` started on a fresh home with no REDIS_URL
    run = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--demo", "--concurrency", "2"],
        env=_env(home),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Then alerts arrive and `tail alerts -n 5` shows them
        def alerts() -> list[dict[str, object]]:
            proc = _cli(home, "tail", "alerts", "-n", "5", "--json")
            return [json.loads(line) for line in proc.stdout.splitlines()]

        shown = wait_for(
            lambda: len(alerts()) == 5 and alerts(), timeout=120, interval=2, message="5 alerts"
        )
        assert all(a["source"] in ("demo-world", "demo-regional") for a in shown)
        # And `celery -A workers inspect ping` answers
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "workers", "inspect", "ping", "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=90,
            env=_env(home),
            cwd=tmp_path,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "pong" in ping.stdout
        # And `status --json` is one JSON object with the documented sections
        sections = {
            "redis",
            "sources",
            "workers",
            "locations",
            "tcp",
            "task_memory",
            "dead_letters",
        }
        status = json.loads(_cli(home, "status", "--json").stdout)
        assert sections <= status.keys()
        assert not [name for name in sections if "error" in status[name]]
        assert status["redis"]["streams"]["alerts"]["size"] >= 5
        assert "demo-world" in status["sources"]
        assert status["workers"]["nodes"], "the prefork worker reports its memory"
        # And the terminal rendering shows every section too
        text = _cli(home, "status").stdout
        assert all(f"== {name}" in text for name in sections)
        assert "demo-watches" in text
        # And every key the whole pipeline wrote to Redis is declared in the key registry
        wait_for(
            lambda: status_of(home)["sources"]["demo-watches"]["state"].get("last_ok"),
            timeout=60,
            interval=2,
            message="a scrape run",
        )
        url = json.loads((home / "run.json").read_text())["redis_url"]
        assert undeclared_keys(url) == []
    finally:
        # When the run gets Ctrl-C
        run.send_signal(signal.SIGINT)
        output = run.communicate(timeout=90)[0]
    assert run.returncode == 0, output
    # Then no watchkeeper, celery or redis-server process of that home is left
    wait_for(lambda: not _processes_of(home), timeout=30, message="no processes left")
    assert not (home / "run.json").exists()


def test_a_supervisor_killed_with_sigkill_takes_its_children_with_it(tmp_path):
    # Given `watchkeeper run` with worker (and its pool), beat and TCP listener running
    home = tmp_path / "home"
    config = tmp_path / "sources.toml"
    config.write_text(
        '[[feeds]]\nname = "f"\nurl = "http://127.0.0.1:9/"\ninterval = 60\n'
        '[tcp]\nhost = "127.0.0.1"\nport = 0\n'
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--config", str(config)],
        env=_env(home),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    supervisor = psutil.Process(run.pid)

    def started() -> list[psutil.Process]:
        kids = supervisor.children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in kids if p.is_running())
        whole = all(w in names for w in ("worker", "beat", "listen"))
        return kids if whole and len(kids) >= 4 else []

    children = wait_for(started, timeout=90, interval=0.5, message="worker, pool, beat, listener")
    # When the supervisor is killed outright
    run.kill()
    run.wait(timeout=10)
    # Then every child and grandchild stops, and no process of the home is left
    try:
        psutil.wait_procs(children, timeout=60)
        assert [p.pid for p in children if p.is_running() and p.status() != "zombie"] == []
        wait_for(lambda: not [p for p in _processes_of(home) if "redis" not in p.name()], 30)
    finally:
        # only the embedded Redis is left, for the next user of the home to adopt: be that user
        from workers.core.connection import EmbeddedRedis

        embedded = EmbeddedRedis(home)
        embedded.acquire()
        embedded.release()
    assert not _processes_of(home)
