"""Periodic maintenance, every MOONSHOT_CLEANUP_INTERVAL: every declared cleanup step in turn.

Steps are declared by the packages whose keys they keep bounded
(``workers.core.maintenance.declare_cleanup``); one failing step is logged and does not stop
the others.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from workers.core.maintenance import CLEANUP_STEPS, PeriodicEntry, declare_periodic
from workers.core.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)


def run_cleanup(rt: Runtime) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for step in CLEANUP_STEPS:
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


declare_periodic(
    PeriodicEntry(
        "maintenance:cleanup",
        "tasks.cleanup.cleanup",
        lambda settings: settings.moonshot_cleanup_interval,
    )
)
