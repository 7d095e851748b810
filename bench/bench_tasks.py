"""Tasks the memory-guard benchmark runs, as a user's own module: ``from workers import app``.

Loaded by the benchmark's worker with ``-I bench.bench_tasks``.
"""

from __future__ import annotations

import os

from workers import app


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing: the memory guard's per-task overhead is all that is left to measure."""


@app.task(name="bench.echo", ignore_result=False)
def echo(value: int) -> dict[str, int]:
    return {"value": value, "pid": os.getpid()}
