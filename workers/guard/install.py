"""Wires the memory guard into a Celery app: signal handlers, billiard's memory reading,
and the request class that counts lost workers against their task."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import redis
from celery import Celery, signals
from celery.worker.request import Request

from workers.core.settings import Settings
from workers.guard.prefork import freeze_before_fork
from workers.guard.stats import args_summary
from workers.guard.task_guard import TaskGuard, _store
from workers.guard.watchdog import Watchdog

log = logging.getLogger("watchkeeper.memory")

EX_RECYCLE = 0x9B  # billiard.pool.EX_RECYCLE: the child left on purpose, between tasks


class GuardedRequest(Request):  # type: ignore[misc]
    """Celery's request, counting a worker lost during this task against the task's id."""

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if type(exc).__name__ == "WorkerLostError":
            _note_worker_lost(self, exc)
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )


# --- wiring ----------------------------------------------------------------------------


@dataclass
class _Guard:
    settings: Settings
    watchdog: Watchdog | None = None
    task_guard: TaskGuard | None = None


_guard: _Guard | None = None


def _note_worker_lost(request: Any, exc: Any) -> None:
    guard = _guard
    watchdog = guard.watchdog if guard is not None else None
    if watchdog is None:
        return
    pid = request.worker_pid
    if pid in watchdog.killed:  # this guard's own hard stop, counted when it was made
        return
    try:
        store = _store()
        kills = store.record_kill(
            request.id,
            request.name,
            args_summary(request.argsrepr, request.kwargsrepr),
            watchdog.last_seen.get(pid),
            "lost",
        )
        store.count(watchdog.node, "recycles:lost")
    except redis.RedisError as exc2:
        log.warning(
            "[memory] cannot count the lost worker of %s[%s]: %s", request.name, request.id, exc2
        )
        return
    log.warning(
        "[memory] child %s lost mid-task %s: %s (kill %d/%d)",
        pid,
        request.name,
        exc,
        kills,
        watchdog.settings.max_worker_kills,
    )


def _on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Quarantine a redelivered task that has taken its worker down too often."""
    guard = _guard
    if guard is None or request is None:
        return
    if not (request.delivery_info or {}).get("redelivered"):
        return  # a first delivery has never killed a worker: no Redis round trip
    store = _store()
    try:
        kills = store.kills(request.id)
        if int(kills.get("count", 0)) < guard.settings.max_worker_kills:
            return
        node = getattr(sender, "hostname", "") or ""
        store.dead_letter(
            request.id,
            request.name,
            args_summary(request.argsrepr, request.kwargsrepr),
            kills,
            node,
            {"args": request.args, "kwargs": request.kwargs},
        )
    except redis.RedisError as exc:  # without Redis the task runs: losing work is worse
        log.warning(
            "[memory] cannot check the kill count of %s[%s]: %s", request.name, request.id, exc
        )
        return
    from celery.worker import state

    state.revoked.add(request.id)  # Celery then acks it and marks it REVOKED, never running it
    log.error(
        "[memory] task %s[%s] took its worker down %s times (max %d): dead-lettered, not run again",
        request.name,
        request.id,
        kills.get("count"),
        guard.settings.max_worker_kills,
    )


def _pool_pids(pool: Any) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        procs = getattr(getattr(pool, "_pool", None), "_pool", None)
        if procs is None:
            return [p.pid for p in psutil.Process().children()]
        return [p.pid for p in list(procs) if p.pid]

    return pids


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    guard = _guard
    if guard is None or sender is None:
        return
    pool = type(sender.pool)
    prefork = pool.__module__.endswith(".prefork")
    pool_name = pool.__module__.rsplit(".", 1)[-1]
    node = sender.hostname
    if not prefork:
        log.warning(
            "[memory] pool %r: the guard measures, reports and warns only; recycling "
            "at WATCHKEEPER_MEMORY_RECYCLE_MB=%d and the hard stop at "
            "WATCHKEEPER_MEMORY_HARD_MB=%d need --pool prefork",
            pool_name,
            guard.settings.memory_recycle_mb,
            guard.settings.memory_hard_mb,
        )
        guard.task_guard = TaskGuard(
            guard.settings, node, recycles=False, exclusive=pool_name == "solo"
        )
        guard.task_guard.start_reporter()
    guard.watchdog = Watchdog(
        guard.settings,
        node,
        pool_name,
        _pool_pids(sender.pool) if prefork else list,
        enforce=prefork,
        task_guard=guard.task_guard,
    )
    guard.watchdog.start()


def _on_worker_shutdown(**_: Any) -> None:
    guard = _guard
    if guard is None:
        return
    if guard.watchdog is not None:
        guard.watchdog.stop()
        guard.watchdog = None
    if guard.task_guard is not None:
        guard.task_guard.stop()
        with contextlib.suppress(redis.RedisError):
            guard.task_guard.flush()
        guard.task_guard = None


def _on_process_init(sender: Any = None, **_: Any) -> None:
    """In a fresh prefork child: measure its tasks and take over billiard's memory reading."""
    guard = _guard
    import billiard
    import billiard.pool

    if guard is None or billiard.current_process().name == "MainProcess":
        return  # the solo pool sends this signal in the worker itself
    guard.watchdog = None  # the parent's, inherited through fork; it has no thread here
    task_guard = TaskGuard(guard.settings, str(sender or ""), recycles=True, exclusive=True)
    guard.task_guard = task_guard
    if hasattr(billiard.pool, "mem_rss"):
        billiard.pool.mem_rss = task_guard.billiard_mem_kb
    else:
        task_guard.recycles = False
        log.error("[memory] billiard.pool.mem_rss not found: recycling disabled in this child")
    task_guard.start_reporter()


def _on_process_shutdown(pid: int | None = None, exitcode: int | None = None, **_: Any) -> None:
    guard = _guard
    task_guard = guard.task_guard if guard is not None else None
    if task_guard is None:
        return
    task_guard.stop()
    with contextlib.suppress(redis.RedisError):
        task_guard.flush()
        if exitcode == EX_RECYCLE and not task_guard.recycling:
            _store().count(task_guard.node, "recycles:max_tasks")


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    guard = _guard
    if guard is not None and guard.task_guard is not None and task_id:
        guard.task_guard.before(task_id)


def _on_postrun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    guard = _guard
    if guard is not None and guard.task_guard is not None and task_id:
        guard.task_guard.after(task_id, getattr(sender, "name", None) or "?")


def install(celery: Celery, settings: Settings) -> None:
    """Wire the guard into ``celery`` (a no-op with ``WATCHKEEPER_MEMORY_GUARD=0``)."""
    global _guard
    if not settings.memory_guard:
        return
    _guard = _Guard(settings)
    celery.conf.worker_max_memory_per_child = settings.memory_recycle_mb * 1024
    celery.Task.Request = "workers.guard.install:GuardedRequest"
    for signal_, handler in (
        (signals.worker_ready, _on_worker_ready),
        (signals.worker_shutdown, _on_worker_shutdown),
        (signals.worker_process_init, _on_process_init),
        (signals.worker_process_shutdown, _on_process_shutdown),
        (signals.task_received, _on_task_received),
        (signals.task_prerun, _on_prerun),
        (signals.task_postrun, _on_postrun),
        (signals.celeryd_after_setup, freeze_before_fork),
    ):
        signal_.connect(handler, weak=False, dispatch_uid=f"wk-memory-{handler.__name__}")
