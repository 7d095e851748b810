"""Real worker processes for tests: ``celery -A workers worker`` started as a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.helpers import wait_for
from tests.support.processes import start_celery, stop


@dataclass
class SubprocessWorker:
    proc: subprocess.Popen[bytes]
    node: str
    queue: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, app: Any, name: str, *args: Any) -> Any:
        return app.send_task(name, args=list(args), queue=self.queue)


@contextlib.contextmanager
def subprocess_worker(
    redis_url: str,
    client: Any,
    tmp_path: Path,
    pool: str = "prefork",
    concurrency: int = 1,
    include: str = "tests.support.leaky_tasks",
    **limits: int,
) -> Iterator[SubprocessWorker]:
    """A real ``celery -A workers worker`` process on its own queue, loading the user module
    ``include`` (``-I``); ``limits`` become WATCHKEEPER_<NAME> variables."""
    tag = uuid.uuid4().hex[:8]
    queue, node = f"wk-memtest-{tag}", f"memtest-{tag}@localhost"
    env = {
        "REDIS_URL": redis_url,
        "WATCHKEEPER_HOME": str(tmp_path / "home"),
        "WATCHKEEPER_CONFIG": os.environ["WATCHKEEPER_CONFIG"],
        **{f"WATCHKEEPER_{k.upper()}": str(v) for k, v in limits.items()},
    }
    log_path = tmp_path / f"worker-{tag}.log"
    args = ["worker", "--pool", pool, "-c", str(concurrency), "-Q", queue, "-n", node]
    args += ["-I", include, "--loglevel", "INFO"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    proc = start_celery(args, env, log_path)
    worker = SubprocessWorker(proc, node, queue, log_path)
    try:
        wait_for(
            lambda: proc.poll() is not None or client.hexists(f"wk:mem:node:{node}", "parent"),
            60,
            message="worker start",
        )
        assert proc.poll() is None, worker.log()
        yield worker
    finally:
        stop(proc)
