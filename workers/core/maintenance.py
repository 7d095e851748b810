"""Periodic work declared by the packages that need it: cleanup steps and beat entries.

A cleanup step is ``step(rt) -> dict`` of counts, run in turn by the cleanup task every
MOONSHOT_CLEANUP_INTERVAL; one failing step is logged and does not stop the others. A periodic
entry is a task run every ``every(settings)`` seconds, added to the beat schedule (held back
while its queue already holds ``waiting`` messages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.core.registry import Registry

if TYPE_CHECKING:
    from workers.core.runtime import Runtime
    from workers.core.settings import Settings

CleanupStep = Callable[["Runtime"], dict[str, Any]]


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    task: str
    every: Callable[[Settings], float]
    queue: str = ""
    """The broker queue its task is routed to, when ``waiting`` is set."""
    waiting: int = 0
    """Beat publishes no run while ``queue`` already holds this many messages (0: no limit):
    a task whose worker is not running (delivery) must not grow its queue, where expired
    messages stay until consumed, by one message per expiry of its queued marker."""


CLEANUP_STEPS: Registry[CleanupStep] = Registry("cleanup step")
PERIODIC: Registry[PeriodicEntry] = Registry("periodic entry")


def declare_cleanup(step: CleanupStep) -> CleanupStep:
    return CLEANUP_STEPS.add(step.__name__, step)


def declare_periodic(entry: PeriodicEntry) -> PeriodicEntry:
    return PERIODIC.add(entry.name, entry)
