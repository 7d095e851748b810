"""Runs where tasks run (a prefork child, or a solo/threads worker): measures every task,
warns, and recycles a child through billiard's own path."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from workers.core.runtime import get_runtime
from workers.core.settings import Settings
from workers.guard.measure import Reading, SelfMemory, read_memory
from workers.guard.stats import MemoryStore, TaskMemory

log = logging.getLogger("watchkeeper.memory")

PUBLISH_INTERVAL = 1.0


def _store() -> MemoryStore:
    rt = get_runtime()
    return MemoryStore(rt.redis, rt.settings)


@dataclass
class TaskGuard:
    """Runs where tasks run: a prefork child, or the worker itself with solo/threads."""

    settings: Settings
    node: str
    recycles: bool
    exclusive: bool
    proc: psutil.Process = field(default_factory=psutil.Process)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    tasks: int = 0
    last_task: str | None = None
    last: Reading = field(default_factory=lambda: Reading(0.0))
    recycle_at: Reading | None = None
    recycling: bool = False
    _before: dict[str, tuple[float, float]] = field(default_factory=dict)
    _pending: dict[str, TaskMemory] = field(default_factory=dict)
    _warnings: int = 0
    _dirty: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _self: SelfMemory = field(default_factory=SelfMemory)

    def before(self, task_id: str) -> None:
        if len(self._before) > 1000:  # a task whose postrun never came; keep this bounded
            self._before.clear()
        self._before[task_id] = (self._self.rss_mb(), self._self.peak_mb())

    def after(self, task_id: str, name: str) -> None:
        self.recycle_at = None
        rss = self._self.rss_mb()
        before, high_before = self._before.pop(task_id, (rss, math.inf))
        peak: float | None = None
        if self.exclusive:
            high = self._self.peak_mb()
            peak = high if high > high_before else None
        with self._lock:
            stats = self._pending.get(name)
            if stats is None:
                stats = self._pending[name] = TaskMemory()
            stats.add(before, rss, peak)
            self.tasks += 1
            self.last_task = name
            self._dirty = True
        self.last = Reading(rss)
        if rss > self.settings.memory_warn_mb:
            self._above_warn(name)

    def _above_warn(self, name: str) -> None:
        s = self.settings
        reading = read_memory(self.proc, with_uss=True)
        if reading.private_mb <= s.memory_warn_mb:
            self.last = reading
            return
        collected = gc.collect()
        reading = read_memory(self.proc, with_uss=True)
        self.last = reading
        log.warning(
            "[memory] child %d %s > warn %dMB after %s; gc collected %d objects",
            self.pid,
            reading.describe(),
            s.memory_warn_mb,
            name,
            collected,
        )
        with self._lock:
            self._warnings += 1
        if self.recycles and reading.private_mb > s.memory_recycle_mb:
            self.recycle_at = reading

    def billiard_mem_kb(self) -> int:
        """Stands in for ``billiard.pool.mem_rss`` in the child (called after each result).

        Returns the current private memory in KiB: above ``max_memory_per_child`` (set to the
        recycle threshold) billiard ends this child with ``EX_RECYCLE``.
        """
        reading = self.recycle_at
        if reading is None:
            return max(1, math.floor(self.last.private_mb * 1024))
        self.recycling = True
        log.warning(
            "[memory] child %d recycling: %s > %dMB",
            self.pid,
            reading.describe(),
            self.settings.memory_recycle_mb,
        )
        with contextlib.suppress(redis.RedisError):
            self.flush()
            _store().count(self.node, "recycles:memory")
        return math.ceil(reading.private_mb * 1024) + 1

    def record(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "tasks": self.tasks,
            "started": self.started,
            "last_task": self.last_task,
            "rss_mb": round(self.last.rss_mb, 1),
            "updated": time.time(),
        }

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            pending, self._pending = self._pending, {}
            warnings, self._warnings = self._warnings, 0
            self._dirty = False
        store = _store()
        store.flush(self.node, self.pid, self.record(), pending)
        if warnings:
            store.count(self.node, "warnings", warnings)

    def start_reporter(self) -> None:
        threading.Thread(target=self._report, name="wk-memory-reporter", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _report(self) -> None:
        failed = False
        while not self._stop.wait(PUBLISH_INTERVAL):
            try:
                self.flush()
                failed = False
            except redis.RedisError as exc:
                if not failed:
                    log.warning("[memory] child %d cannot publish statistics: %s", self.pid, exc)
                failed = True
