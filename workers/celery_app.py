"""Creates the Celery app and wires it: settings, sources file, stages, schedule, memory guard.

A worker reads its sources from the source registry in Redis and needs no sources file: without
one it starts and polls whatever the registry holds (the file, when there is one, gives its
other sections — sinks, ``[tcp]``). Only beat applies a file to the registry, and beat refuses
to apply the bundled example (``WATCHKEEPER_CONFIG`` pointing at it): its sample sources must
never reach a shared Redis.

Creating the app reads the settings and the sources file and nothing else: Redis is reached —
and the embedded server started when ``REDIS_URL`` is unset — only when the app is first used
(a worker or beat starting, a connection opened, the result backend touched). So importing
``workers``, building an app in a test or validating a sources file does no network I/O.

Bad settings, an invalid sources file or an unreachable Redis stop ``celery -A workers
worker|beat`` with one line per problem and exit status 2 — never a traceback, never a worker
running half-configured.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from celery import Celery, signals

from tasks.notify.status import QUEUE as NOTIFY_QUEUE
from workers import stages
from workers.core import broker
from workers.core.connection import (
    RedisUnavailable,
    check_reachable,
    resolve_url,
    tls_options,
    url_for,
)
from workers.core.runtime import get_runtime
from workers.core.sentinel import is_sentinel
from workers.core.sentinel import parse as parse_sentinel
from workers.core.settings import Settings, SettingsError
from workers.core.sources_file import (
    ConfigError,
    SourcesConfig,
    is_bundled,
    load_config,
    no_file_config,
    no_sources_file,
    own_config,
)
from workers.guard import install as memory_guard
from workers.polling import dispatch

DEFAULT_QUEUE = "celery"
NOTIFY_TASK = "tasks.notify.deliver"
"""The delivery run (its time limits; annotations take task names, not patterns)."""


def _fail(message: str) -> NoReturn:
    print(f"watchkeeper: {message}", file=sys.stderr)
    raise SystemExit(2)


def celery_config(settings: Settings, url: str) -> dict[str, object]:
    """Celery settings for runs measured in weeks; each line says why."""
    config = _base_config(settings, url)
    if is_sentinel(url):
        # Broker and results through Sentinel, following a failover (workers/core/broker.py).
        config.update(broker.celery_options(parse_sentinel(url), settings.visibility_timeout))
    return config


def _base_config(settings: Settings, url: str) -> dict[str, object]:
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
        # A few messages reserved per pool process, so a process finishing a task starts the
        # next at once instead of waiting for an ack and a fetch (polls are short: at 1 the
        # pool sat half idle). Celery's default "fair" scheduling hands a reserved message
        # only to an idle process, so a long task never hoards others behind it.
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        # Task events off unless WATCHKEEPER_TASK_EVENTS=1: each is a Redis publish from the
        # worker's main loop, and they were the largest share of its time per poll. Flower
        # enables them itself at start (its default `--enable_events`), as does
        # `celery -A workers control enable_events`.
        "worker_send_task_events": bool(settings.task_events),
        "task_send_sent_event": bool(settings.task_events),
        # Unacked messages return after this; it must exceed the longest task time limit or a
        # running task would be delivered a second time.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        # Every task is bounded in time as well as memory.
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, int(settings.task_time_limit * 0.9)),
        # Deliveries never share a pool process with polls: their own queue, consumed only by
        # the delivery worker (`celery -A workers worker -Q notify`, which `watchkeeper run`
        # starts); a worker started without -Q consumes the default queue only. Their own time
        # limits end a stuck delivery child well before the polls' limit would.
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {"tasks.notify.*": {"queue": NOTIFY_QUEUE}},
        "task_annotations": {
            NOTIFY_TASK: {
                "time_limit": settings.notify_task_time_limit,
                "soft_time_limit": max(1, int(settings.notify_task_time_limit * 0.9)),
            }
        },
        # Backstop for slow leaks in third-party code: replace a pool child after N tasks.
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Beat dispatches from the per-source state in Redis under a Redis lock (see
        # beat_schedule.py): no local schedule file, no second beat dispatching twice.
        "beat_scheduler": "beat_schedule:DispatchScheduler",
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        # rediss://: both sides verify the server's certificate (options from the URL's query).
        "broker_use_ssl": tls_options(url),
        "redis_backend_use_ssl": tls_options(url),
    }


class WatchkeeperCelery(Celery):  # type: ignore[misc]
    """A Celery app that makes sure its Redis is there before the first connection.

    Every broker connection goes through ``_connection`` and the result backend through
    ``_get_backend``; both first call ``ensure_redis``, which starts or joins the embedded
    server when ``REDIS_URL`` is unset (a no-op afterwards and for an external Redis).
    """

    watchkeeper_settings: Settings
    watchkeeper_config_path: Path | None
    """This machine's sources file; None: the process serves the registry alone."""
    watchkeeper_config: SourcesConfig

    def _connection(self, url: Any, *args: Any, **kwargs: Any) -> Any:
        self.ensure_redis()
        return super()._connection(url, *args, **kwargs)

    def _get_backend(self) -> Any:
        self.ensure_redis()
        return super()._get_backend()

    refusal = ""
    """Why a beat of this app must not start (one line), or empty."""

    def ensure_redis(self) -> str:
        return resolve_url(self.watchkeeper_settings)

    @cached_property
    def Beat(self) -> Any:
        """Celery's beat, refusing to start before it opens a schedule or sends a task."""
        app = self

        class CheckedBeat(super().Beat):  # type: ignore[misc]
            def run(self) -> None:
                if app.refusal:
                    _fail(app.refusal)
                app.watchkeeper_settings.home_path.mkdir(parents=True, exist_ok=True)
                super().run()

        return CheckedBeat


def create_app(settings: Settings | None = None, config_path: Path | None = None) -> Celery:
    """Build the app from settings and a sources file (raising their one-line errors)."""
    settings = Settings.from_env() if settings is None else settings
    path = own_config(None, settings.config) if config_path is None else config_path
    config = load_config(path) if path is not None else no_file_config()
    celery = WatchkeeperCelery(
        "watchkeeper", include=list(stages.TASK_MODULES), set_as_current=True
    )
    celery.watchkeeper_settings = settings
    celery.watchkeeper_config_path, celery.watchkeeper_config = path, config
    celery.conf.update(celery_config(settings, url_for(settings)))
    if settings.uses_sentinel:
        celery.amqp_cls = broker.AMQP_CLASS  # a lost broker connection is retried promptly
    memory_guard.install(celery, settings)
    dispatch.install(celery, lambda: get_runtime().redis, settings)
    _check_redis_at_start(celery)
    if path is not None and is_bundled(path):
        celery.refusal = no_sources_file()  # beat would apply the sample sources
    return celery


def _check_redis_at_start(celery: WatchkeeperCelery) -> None:
    """A worker or beat whose Redis cannot be reached stops at once with one line."""

    def check(sender: Any = None, instance: Any = None, **_: Any) -> None:
        if getattr(instance or sender, "app", None) is not celery:
            return
        try:
            check_reachable(
                celery.ensure_redis(), failover_wait=celery.watchkeeper_settings.failover_wait
            )
        except RedisUnavailable as exc:
            _fail(str(exc))

    for signal in (signals.celeryd_init, signals.beat_init):
        signal.connect(check, weak=False, dispatch_uid=f"wk-redis-check-{id(celery)}")


_app: Celery | None = None


def get_app() -> Celery:
    """The process's app, built from the environment on first use (``workers.app``)."""
    global _app
    if _app is None:
        try:
            _app = create_app()
        except SettingsError as exc:
            _fail(str(exc))
        except ConfigError as exc:
            _fail("invalid sources file:\n" + "\n".join(exc.problems))
    return _app
