"""Two machines on one Redis, each with its own WATCHKEEPER_HOME, only one with a sources
file: a source added from the command line on one is polled by the other's worker in the
next beat pass, and applying the file never removes what the CLI or an OPML import added."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.beat import beat_process
from tests.support.helpers import ROOT, HTTPFixtureServer, wait_for
from tests.support.processes import start_celery, stop
from workers import cli
from workers.core.connection import EmbeddedRedis, connect

PASS = 0.5

RSS = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>one</title></item></channel></rss>"
)


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis both machines reach and nothing else consumes from (the test's own)."""
    embedded = EmbeddedRedis(tmp_path / "shared-redis")
    url = embedded.acquire()
    try:
        yield url
    finally:
        embedded.release()


def machine_env(redis_url: str, home: Path, config: Path | None) -> dict[str, str]:
    """One machine's environment: its own home; a sources file or none at all."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "REDIS_URL": redis_url,
        "WATCHKEEPER_HOME": str(home),
        "WATCHKEEPER_CONFIG": str(config) if config else "",
        "WATCHKEEPER_HOST_DELAY": "0",
    }


def watchkeeper(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        cwd=cwd,
    )


def test_a_source_added_on_one_machine_is_polled_by_the_other_machines_worker(
    shared_redis: str, tmp_path: Path, http_server: HTTPFixtureServer, monkeypatch: Any
) -> None:
    for path in ("/a", "/added", "/imported"):
        http_server.static(path, RSS, headers={"Content-Type": "application/rss+xml"})
    client = connect(shared_redis)
    # Given machine A with a sources file (one feed) running beat …
    config = tmp_path / "a" / "watchkeeper.toml"
    config.parent.mkdir()
    config.write_text(f'[[feeds]]\nname = "a"\nurl = "{http_server.url("/a")}"\ninterval = "1h"\n')
    env_a = machine_env(shared_redis, tmp_path / "a" / "home", config)
    # … and machine B with no sources file anywhere, running the only worker
    b_dir = tmp_path / "b"
    env_b = machine_env(shared_redis, b_dir / "home", None)
    worker_env = {k: v for k, v in env_b.items() if k != "WATCHKEEPER_CONFIG"}
    worker_env["WATCHKEEPER_CONFIG"] = ""
    log_b = tmp_path / "worker-b.log"
    worker = start_celery(
        ["worker", "--pool", "solo", "--loglevel", "INFO", "-n", "b@machine-b",
         "--without-heartbeat", "--without-gossip", "--without-mingle"],
        worker_env,
        log_b,
    )  # fmt: skip
    try:
        with beat_process(shared_redis, config, tmp_path / "a", dispatch_interval=PASS):
            # Then B's worker, which has no file, polls A's feed from the registry
            wait_for(lambda: http_server.hits("/a") >= 1, 90, message="A's feed polled by B")
            assert worker.poll() is None, log_b.read_text()
            # When a source is added through the CLI on machine A (its code, in this process
            # with A's environment), while the dispatch passes are watched
            with PassWatch(client) as watch:
                for name, value in env_a.items():
                    monkeypatch.setenv(name, value)
                code = cli.main(
                    ["sources", "add", "feed", "added", http_server.url("/added"),
                     "--interval", "1h"]
                )  # fmt: skip
                assert code == 0
                added_at = watch.now()
                wait_for(lambda: client.hget("wk:src:added", "dispatched_at"), 60, message="sent")
                dispatched = float(client.hget("wk:src:added", "dispatched_at") or 0)
                wait_for(lambda: len(watch.after(added_at)) >= 2, 30, message="two passes")
            # Then it was dispatched by the first pass that started after the add (or, when a
            # pass was under way as it was added, the one after), and B's worker polls it
            assert dispatched in watch.after(added_at)[:2], (dispatched, watch.stamps[-6:])
            wait_for(lambda: http_server.hits("/added") >= 1, 60, message="added source polled")
            wait_for(lambda: client.hget("wk:src:added", "last_status") == "ok", 30)
            # When machine B, without a file, imports an OPML file …
            opml = b_dir / "feeds.opml"
            opml.write_text(
                '<opml version="2.0"><body><outline text="Imported" xmlUrl="'
                + http_server.url("/imported")
                + '"/></body></opml>'
            )
            imported = watchkeeper(env_b, b_dir, "sources", "import-opml", str(opml))
            assert imported.returncode == 0, imported.stderr
            # … and machine A applies its file, changed
            config.write_text(config.read_text().replace('"1h"', '"2h"'))
            applied = watchkeeper(env_a, tmp_path / "a", "sources", "apply", str(config))
            assert applied.returncode == 0, applied.stderr
            # (A's beat may have applied the changed file first: then the diff is empty)
            assert "0 to add, " in applied.stdout and ", 0 to remove" in applied.stdout
            assert '"interval":"2h"' in client.hget("wk:sources", "a")
            # Then the CLI's and the OPML import's sources are still there, and polled
            wait_for(lambda: http_server.hits("/imported") >= 1, 60, message="imported polled")
            listed = watchkeeper(env_b, b_dir, "sources", "list")
            assert [line.split()[:3] for line in listed.stdout.splitlines()[2:]] == [
                ["a", "feed", f"file:{config}"],
                ["added", "feed", "cli"],
                ["imported", "feed", "opml"],
            ]
    finally:
        stop(worker)
        client.close()
    # And no worker ran on machine A: every poll was B's
    assert "Task tasks.feeds.poll_feed" in log_b.read_text()


class PassWatch:
    """Records the stamp (Redis time) of every dispatch pass, from a thread."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

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

    def __enter__(self) -> PassWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)
