"""Test-only tasks for the memory guard, loaded by a subprocess worker with
``-I tests.support.leaky_tasks``.

Never listed in ``TASK_MODULES``: production workers do not register them. Each task records
what it did in Redis (under ``wk:test:``, with a TTL) so a test can tell how often it ran.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
from celery import shared_task

from workers.core.runtime import get_runtime

LEAK_MB = 30
_TEST_TTL = 600
_leaked: list[bytes] = []


def _key(*parts: str) -> str:
    return "wk:test:" + ":".join(parts)


@shared_task(name="tests.leaky.leak", ignore_result=False, bind=True)
def leak(self: Any, call: int) -> dict[str, int]:
    """Keep 30 MB more on every call (written, so the pages are really resident)."""
    _leaked.append(b"\x01" * (LEAK_MB * 1024 * 1024))
    r = get_runtime().redis
    r.rpush(_key("calls"), self.request.id)
    r.expire(_key("calls"), _TEST_TTL)
    return {"call": call, "pid": os.getpid()}


@shared_task(name="tests.leaky.allocate_until_stopped", ignore_result=False, bind=True)
def allocate_until_stopped(self: Any, step_mb: int, safety_mb: int) -> str:
    """Allocate ``step_mb`` every 20 ms until stopped; give up (and say so) at ``safety_mb``.

    Records per run: when its own private memory first crossed the hard limit and its last
    heartbeat, so a test can bound how long it kept running after crossing.
    """
    rt = get_runtime()
    hard = rt.settings.memory_hard_mb
    run = int(rt.redis.incr(_key("alloc", "runs", self.request.id)))
    rt.redis.expire(_key("alloc", "runs", self.request.id), _TEST_TTL)
    beats = _key("alloc", self.request.id, str(run))
    me = psutil.Process()
    held: list[bytes] = []
    crossed = False
    while True:
        held.append(b"\x02" * (step_mb * 1024 * 1024))
        private = me.memory_full_info().uss / (1024 * 1024)
        now = f"{time.time():.3f}"
        fields = {"last": now, "mem_mb": f"{private:.1f}", "pid": str(os.getpid())}
        if private > hard and not crossed:
            crossed = True
            fields["crossed"] = now
        rt.redis.hset(beats, mapping=fields)
        rt.redis.expire(beats, _TEST_TTL)
        if private > safety_mb:
            return "not stopped"
        time.sleep(0.02)


@shared_task(name="tests.leaky.echo", ignore_result=False)
def echo(value: int) -> dict[str, int]:
    return {"value": value, "pid": os.getpid()}


@shared_task(name="tests.leaky.noop")
def noop() -> None:
    """Does nothing: the memory guard's per-task overhead is all that is left to measure."""


@shared_task(name="tests.leaky.sleep", ignore_result=False, bind=True)
def sleep(self: Any, seconds: float) -> int:
    """Record which child runs it, then sleep: a test kills that child from outside."""
    r = get_runtime().redis
    r.rpush(_key("sleep", self.request.id), os.getpid())
    r.expire(_key("sleep", self.request.id), _TEST_TTL)
    time.sleep(seconds)
    return os.getpid()
