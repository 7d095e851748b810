"""Helpers for notification tests: fast settings, a sources file with sinks, delivery runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from tasks.notify.streams import append
from workers.core.runtime import Runtime

FAST = {
    "notify_backoff_base": 0.05,
    "notify_backoff_max": 0.5,
    "notify_max_attempts": 4,
    "notify_timeout": 1.0,
    "notify_run_budget": 5.0,
    "notify_redis_wait": 20.0,
    "notify_run_wait": 15.0,  # a run returns when its sends are done: tests assert right after
}


def fast(rt: Runtime, **overrides: Any) -> Runtime:
    """The runtime with short backoffs and timeouts (and any other setting given)."""
    rt.settings = dataclasses.replace(rt.settings, **{**FAST, **overrides})
    return rt


def alert(n: int, title: str | None = None, source: str = "world", **extra: Any) -> dict[str, Any]:
    return {
        "source": source,
        "fetched_at": "2026-11-24T00:00:00+00:00",
        "title": title or f"Alert {n}",
        "link": f"https://example.org/{n}",
        "summary": f"Summary of alert {n}",
        "published": "2026-11-24T00:00:00+00:00",
        "key": f"k{n}",
        **extra,
    }


def add_alerts(rt: Runtime, alerts: list[dict[str, Any]], **kwargs: Any) -> list[str]:
    return append(rt.redis, rt.settings, "alerts", alerts, **kwargs)


def pump(
    run: Callable[[], Any],
    until: Callable[[], Any],
    timeout: float = 20.0,
    pause: float = 0.05,
    message: str = "condition",
) -> int:
    """Call ``run`` (a delivery run) repeatedly until ``until()`` holds; return the runs made."""
    deadline = time.monotonic() + timeout
    runs = 0
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        run()
        runs += 1
        time.sleep(pause)
    return runs
