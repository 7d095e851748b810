"""Runs in the worker's main process: the hard stop of pool children, and the node's memory
record published to Redis once a second."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from workers.core.settings import Settings
from workers.guard.measure import Reading, _round, over_limit, read_memory
from workers.guard.stats import args_summary
from workers.guard.task_guard import PUBLISH_INTERVAL, TaskGuard, _store
from workers.store.series import Every

log = logging.getLogger("watchkeeper.memory")


def _running_request(pid: int) -> Any:
    from celery.worker import state

    for _ in range(3):
        try:
            return next((r for r in list(state.active_requests) if r.worker_pid == pid), None)
        except RuntimeError:  # the set changed while copied; try again
            continue
    return None


@dataclass
class Watchdog:
    """Runs in the worker's main process: hard stop of pool children, node memory records."""

    settings: Settings
    node: str
    pool: str
    child_pids: Callable[[], list[int]]
    enforce: bool
    task_guard: TaskGuard | None = None
    killed: set[int] = field(default_factory=set)
    last_seen: dict[int, float] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _series: Every | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wk-memory-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError, psutil.Error):
            self.publish()

    def _run(self) -> None:
        next_publish = 0.0
        while not self._stop.wait(self.settings.memory_check_interval):
            try:
                if self.enforce:
                    self.check()
                if time.monotonic() >= next_publish:
                    next_publish = time.monotonic() + PUBLISH_INTERVAL
                    self.publish()
            except Exception:  # the watchdog must outlive any one bad reading or Redis error
                log.exception("[memory] watchdog check failed")

    def _children(self) -> dict[int, psutil.Process]:
        pids = set(self.child_pids())
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
                self.last_seen.pop(pid, None)
        self.killed &= pids
        for pid in pids - self._procs.keys():
            with contextlib.suppress(psutil.Error):
                self._procs[pid] = psutil.Process(pid)
        return dict(self._procs)

    def check(self) -> None:
        hard = self.settings.memory_hard_mb
        for pid, proc in self._children().items():
            if pid in self.killed:
                continue
            try:
                reading = over_limit(proc, hard)
            except psutil.Error:
                continue
            if reading is None:
                continue
            self.last_seen[pid] = reading.private_mb
            self.stop_child(pid, reading)

    def stop_child(self, pid: int, reading: Reading) -> None:
        """SIGKILL a child above the hard limit; count the kill against its task first."""
        request = _running_request(pid)
        kills: int | str = "?"
        name = request.name if request is not None else None
        store = _store()
        if request is not None:
            try:
                kills = store.record_kill(
                    request.id,
                    request.name,
                    args_summary(request.argsrepr, request.kwargsrepr),
                    reading.private_mb,
                    "hard",
                )
            except redis.RedisError as exc:
                log.warning("[memory] cannot count the kill of %s[%s]: %s", name, request.id, exc)
        self.killed.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        what = f"mid-task {name}" if name else "while idle"
        log.warning(
            "[memory] child %d stopped %s: %s > hard %dMB (kill %s/%d)",
            pid,
            what,
            reading.describe(),
            self.settings.memory_hard_mb,
            kills,
            self.settings.max_worker_kills,
        )
        with contextlib.suppress(redis.RedisError):
            store.count(self.node, "recycles:hard")

    def publish(self) -> None:
        children = []
        now = time.time()
        for pid, proc in self._children().items():
            try:
                reading = read_memory(proc, with_uss=True)
                started = proc.create_time()
            except psutil.Error:
                continue
            self.last_seen[pid] = reading.private_mb
            children.append(
                {
                    "pid": pid,
                    "rss_mb": round(reading.rss_mb, 1),
                    "uss_mb": _round(reading.uss_mb),
                    "started": started,
                }
            )
        me = read_memory(psutil.Process(), with_uss=True)
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "rss_mb": round(me.rss_mb, 1),
            "uss_mb": _round(me.uss_mb),
            "pool": self.pool,
            "guard": "enforcing" if self.enforce else "reporting",
            "children": children,
            "updated": now,
        }
        if self.task_guard is not None:
            record["tasks"] = self.task_guard.tasks
        store = _store()
        store.publish_parent(self.node, record, [c["pid"] for c in children])
        if self._series is None:
            self._series = Every(self.settings.memory_series_interval)
        if self._series.due():
            store.add_point(self.node, record)
