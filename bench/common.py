"""Shared bench plumbing: a Redis to measure against, machine facts, writing results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@contextmanager
def bench_redis() -> Iterator[str]:
    """REDIS_URL when set, else a private embedded Redis stopped afterwards."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from workers.core.connection import EmbeddedRedis

    embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="wk-bench-")))
    try:
        yield embedded.acquire()
    finally:
        embedded.release()


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, "machine": machine()}, indent=2) + "\n")
    return path


def stop_run_process(proc: subprocess.Popen[Any] | None) -> list[str]:
    """Ctrl-C for a ``watchkeeper run`` (its warm shutdown); its group killed if it hangs."""
    problems: list[str] = []
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            problems.append("watchkeeper run did not stop within 90 s; killed its group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return problems
