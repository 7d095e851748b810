"""Creates the Celery app and wires it: settings, broker, task modules, schedule, signals.

Nothing else lives here. Bad settings or an invalid sources file stop start-up with one line
per problem and exit status 2 — never a traceback, never a worker running half-configured.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from celery import Celery

from beat_schedule import build_schedule
from workers import memory
from workers.config import ConfigError, find_config, load_config
from workers.redis import RedisUnavailable, check_reachable, resolve_url
from workers.settings import Settings, SettingsError

TASK_MODULES = [
    "tasks.cleanup",
    "tasks.feeds",
    "tasks.http_logs",
    "tasks.scrape",
    "tasks.locations",
]


def _fail(message: str) -> NoReturn:
    print(f"watchkeeper: {message}", file=sys.stderr)
    raise SystemExit(2)


def celery_config(settings: Settings, url: str) -> dict[str, object]:
    """Celery settings for runs measured in weeks; each line says why."""
    return {
        "broker_url": url,
        # kombu's redis+socket:// form also selects Celery's Redis backend over the socket.
        "result_backend": url,
        # Results are rarely read; those that are expire within the hour, never pile up.
        "task_ignore_result": True,
        "result_expires": settings.result_expires,
        # A task is acked only when done, and re-queued if its worker dies mid-run, so a
        # crash loses nothing (the memory guard quarantines tasks that kill workers repeatedly).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message per pool process at a time: a long task never hoards others behind it.
        "worker_prefetch_multiplier": 1,
        # Events on, so Flower and `celery events` see tasks without extra flags.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Unacked messages return after this; it must exceed the longest task time limit or a
        # running task would be delivered a second time.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        # Every task is bounded in time as well as memory.
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, int(settings.task_time_limit * 0.9)),
        # Backstop for slow leaks in third-party code: replace a pool child after N tasks.
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "beat_schedule_filename": str(settings.home_path / "celerybeat-schedule"),
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
    }


def create_app() -> Celery:
    try:
        settings = Settings.from_env()
        config = load_config(find_config(None, settings.config))
        settings.home_path.mkdir(parents=True, exist_ok=True)
        url = resolve_url(settings)
        check_reachable(url)
    except (SettingsError, RedisUnavailable) as exc:
        _fail(str(exc))
    except ConfigError as exc:
        _fail("invalid sources file:\n" + "\n".join(exc.problems))
    celery = Celery("watchkeeper", include=TASK_MODULES, set_as_current=True)
    celery.conf.update(celery_config(settings, url))
    celery.conf.beat_schedule = build_schedule(settings, config)
    memory.install(celery, settings)
    return celery


app = create_app()
