"""Periodic maintenance, every MOONSHOT_CLEANUP_INTERVAL: each stage's cleanup step in turn.

A step is a plain function ``step(runtime) -> dict`` returning counts for the log line; one
failing step is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task

from workers.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)

CleanupStep = Callable[[Runtime], dict[str, Any]]


def forget_removed_sources(rt: Runtime) -> dict[str, Any]:
    """Delete the per-source keys of sources no longer in the sources file.

    Their seen-sets would expire by age anyway; deleting them now returns the memory at once.
    """
    configured = {s.name for s in rt.config().sources}
    removed = 0
    for kind in ("src", "seen", "history"):
        pattern = rt.settings.key(kind, "*")
        for key in rt.redis.scan_iter(match=pattern, count=500):
            name = str(key)[len(rt.settings.key(kind, "")):]
            if name not in configured:
                removed += int(rt.redis.delete(key))
    return {"removed_source_keys": removed}


def cleanup_steps() -> list[CleanupStep]:
    """Every stage's cleanup, in order. Stages register by being listed here."""
    from workers.location_health import location_cleanup

    return [forget_removed_sources, location_cleanup]


def run_cleanup(rt: Runtime) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for step in cleanup_steps():
        try:
            results[step.__name__] = step(rt)
        except Exception as exc:  # one broken step must not stop the rest
            log.exception("[cleanup] %s failed", step.__name__)
            results[step.__name__] = {"error": f"{type(exc).__name__}: {exc}"}
    log.info("[cleanup] %s", results)
    return results


@shared_task(name="tasks.cleanup.cleanup")
def cleanup() -> dict[str, Any]:
    return run_cleanup(get_runtime())
