"""The one place the periodic schedule is built, from the registries: one entry per source
(its kind's task), plus the periodic entries the stages declare.

Every entry expires just under its interval: if workers fall behind, a poll that could not start
before the next one is due is dropped by the worker rather than piling up in the queue.
"""

from __future__ import annotations

from typing import Any

from workers.core.maintenance import PERIODIC
from workers.core.settings import Settings
from workers.core.sources_file import SourcesConfig
from workers.polling.kinds import kind_of


def expires_for(interval: float) -> float:
    """Just under the interval: a backlog of one poll per source at most."""
    return max(0.5, interval * 0.9)


def entry(task: str, every: float, args: tuple[Any, ...] = ()) -> dict[str, Any]:
    return {
        "task": task,
        "schedule": float(every),
        "args": args,
        "options": {"expires": expires_for(every)},
    }


def build_schedule(settings: Settings, config: SourcesConfig) -> dict[str, dict[str, Any]]:
    """Beat's ``beat_schedule`` for this sources file and these settings."""
    schedule = {
        f"{source.kind}:{source.name}": entry(kind_of(source).task, source.interval, (source.name,))
        for source in config.sources
    }
    for periodic in PERIODIC:
        schedule[periodic.name] = entry(periodic.task, periodic.every(settings))
    return schedule
