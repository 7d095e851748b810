"""The one place the periodic schedule is built: one entry per source, plus maintenance.

Every entry expires just under its interval: if workers fall behind, a poll that could not start
before the next one is due is dropped by the worker rather than piling up in the queue.
"""

from __future__ import annotations

from typing import Any

from workers.config import SourcesConfig
from workers.settings import Settings

#: The task that polls each kind of source; it takes the source name.
SOURCE_TASKS = {
    "feed": "tasks.feeds.poll_feed",
    "http_log": "tasks.http_logs.poll_http_log",
    "site": "tasks.scrape.scrape_site",
}


def expires_for(interval: float) -> float:
    """Just under the interval: a backlog of one poll per source at most."""
    return max(0.5, interval * 0.9)


def entry(task: str, every: float, args: tuple[Any, ...] = ()) -> dict[str, Any]:
    return {"task": task, "schedule": float(every), "args": args,
            "options": {"expires": expires_for(every)}}


def build_schedule(settings: Settings, config: SourcesConfig) -> dict[str, dict[str, Any]]:
    """Beat's ``beat_schedule`` for this sources file and these settings."""
    schedule = {
        f"{source.kind}:{source.name}": entry(SOURCE_TASKS[source.kind], source.interval,
                                              (source.name,))
        for source in config.sources
    }
    schedule["maintenance:cleanup"] = entry("tasks.cleanup.cleanup",
                                            settings.moonshot_cleanup_interval)
    schedule["maintenance:locations"] = entry("tasks.locations.flush_locations",
                                              settings.location_flush_interval)
    return schedule
