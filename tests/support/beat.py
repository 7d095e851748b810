"""Real ``celery -A workers beat`` processes for tests, and a record of the tasks they send."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import signals

from tests.support.helpers import wait_for
from tests.support.processes import start_celery, stop


@dataclass
class BeatProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)


@contextlib.contextmanager
def beat_process(
    redis_url: str, config: Path, tmp_path: Path, **settings: Any
) -> Iterator[BeatProcess]:
    """``celery -A workers beat`` on ``config``; ``settings`` become WATCHKEEPER_<NAME>. Each
    beat gets its own home and ``--schedule`` file, as beats on different machines would."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "REDIS_URL": redis_url,
        "WATCHKEEPER_CONFIG": str(config),
        "WATCHKEEPER_HOME": str(tmp_path / f"home-{tag}"),
        **{f"WATCHKEEPER_{k.upper()}": str(v) for k, v in settings.items()},
    }
    schedule, log_path = str(tmp_path / f"celerybeat-{tag}"), tmp_path / f"beat-{tag}.log"
    args = ["beat", "--loglevel", "INFO", "--schedule", schedule]
    beat = BeatProcess(start_celery(args, env, log_path), log_path)
    try:
        wait_for(
            lambda: beat.proc.poll() is not None or "beat: Starting" in beat.log(),
            60,
            message="beat start",
        )
        assert beat.proc.poll() is None, beat.log()
        yield beat
    finally:
        beat.stop()


@dataclass
class Dispatches:
    """Tasks started by the test's in-thread worker: (task name, first argument, time)."""

    runs: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, source: str) -> list[float]:
        with self.lock:
            return [at for _, arg, at in self.runs if arg == source]


@contextlib.contextmanager
def recorded_dispatches() -> Iterator[Dispatches]:
    seen = Dispatches()

    def record(sender: Any = None, args: Any = None, **_: Any) -> None:
        with seen.lock:
            seen.runs.append((getattr(sender, "name", ""), str((args or [""])[0]), time.time()))

    uid = f"test-dispatches-{id(seen)}"
    signals.task_prerun.connect(record, weak=False, dispatch_uid=uid)
    try:
        yield seen
    finally:
        signals.task_prerun.disconnect(dispatch_uid=uid)


def queued_messages(
    client: Any, queue: str = "celery", live_only: bool = True
) -> list[tuple[str, str]]:
    """(task name, first argument or "") of every live message waiting in a Celery queue
    (Redis transport, JSON serializer, protocol 2: the body is ``[args, kwargs, embed]``); a
    message past its ``expires`` is dropped unrun by any worker, so it is not counted."""
    out = []
    now = datetime.now(UTC)
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        expires = message["headers"].get("expires")
        if live_only and expires and datetime.fromisoformat(expires) <= now:
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], str(args[0]) if args else ""))
    return out
