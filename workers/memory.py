"""The memory guard: per-child limits that recycle, stop runaway tasks, and quarantine poison.

Stock Celery is not enough for weeks-long runs: ``worker_max_memory_per_child`` reads the
*peak* RSS (``ru_maxrss``) on Linux, so a child is recycled for a spike it already freed; it is
only checked after a task returns, so a task that balloons mid-run brings the kernel's OOM
killer down on the whole worker; and a task that kills its worker is redelivered forever.

What runs where:

* In each **pool child** (``TaskGuard``): memory before and after every task and the peak in
  between when the task raised the child's high-water mark, merged into per-task-name
  statistics by a reporter thread once a second (so a task pays microseconds, no Redis).
  After a task, above ``WATCHKEEPER_MEMORY_WARN_MB`` it logs, counts and runs
  ``gc.collect()``; above ``WATCHKEEPER_MEMORY_RECYCLE_MB`` it recycles through billiard's own
  path: billiard checks ``max_memory_per_child`` right after it has put the task's result on
  the result queue, and then exits the child with ``EX_RECYCLE`` once the parent has read
  that result, so the result is delivered and the task acked exactly once. That check reads
  ``billiard.pool.mem_rss`` (peak RSS on Linux); in the child the guard replaces it with its
  reading of *current* private memory (``worker_max_memory_per_child`` is set to the recycle
  threshold).
* In the **worker's main process** (``Watchdog`` thread): every
  ``WATCHKEEPER_MEMORY_CHECK_INTERVAL`` it reads each child's RSS (one ``statm`` read); a child
  above ``WATCHKEEPER_MEMORY_HARD_MB`` is stopped with SIGKILL at once. The parent does it, not
  a thread in the child, so a task holding the GIL in C code is stopped too. Billiard then
  reports the job lost, Celery requeues it (``task_acks_late`` + ``task_reject_on_worker_lost``)
  and the pool starts a fresh child. Once a second it publishes the node's memory to Redis.
* **Poison tasks**: every worker loss during a task (this guard's hard stop, SIGKILL, the OOM
  killer) is counted per task id in Redis. A redelivered message whose task has reached
  ``WATCHKEEPER_MAX_WORKER_KILLS`` is dead-lettered and revoked on receipt (acked, never run).

Memory is compared as USS (pages private to the child) where psutil provides it, so the
interpreter and modules shared with the parent after fork do not count against a child. USS
(≈0.2 ms, reads ``smaps``) is only read when RSS (≈10 µs) is above a threshold: USS ≤ RSS.

With the solo or threads pool there is no child to replace: the guard still measures, reports
and warns, and says once at start-up that recycling and the hard stop need the prefork pool.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis
from celery import Celery, signals
from celery.worker.request import Request

from workers.memory_stats import MemoryStore, TaskMemory, args_summary
from workers.runtime import get_runtime
from workers.settings import Settings

log = logging.getLogger("watchkeeper.memory")

MB = 1024 * 1024
PUBLISH_INTERVAL = 1.0
EX_RECYCLE = 0x9B  # billiard.pool.EX_RECYCLE: the child left on purpose, between tasks


@dataclass(frozen=True)
class Reading:
    """One process's memory. ``uss_mb`` is None when not read (or not available)."""

    rss_mb: float
    uss_mb: float | None = None

    @property
    def private_mb(self) -> float:
        return self.uss_mb if self.uss_mb is not None else self.rss_mb

    def describe(self) -> str:
        uss = f" uss={self.uss_mb:.1f}MB" if self.uss_mb is not None else ""
        return f"rss={self.rss_mb:.1f}MB{uss}"


def read_memory(proc: psutil.Process, with_uss: bool) -> Reading:
    rss = proc.memory_info().rss / MB
    if not with_uss:
        return Reading(rss)
    try:
        return Reading(rss, proc.memory_full_info().uss / MB)
    except (psutil.AccessDenied, AttributeError, NotImplementedError):
        return Reading(rss)


def over_limit(proc: psutil.Process, limit_mb: float) -> Reading | None:
    """The reading when ``proc``'s private memory exceeds ``limit_mb``, else None (cheaply)."""
    rss = proc.memory_info().rss / MB
    if rss <= limit_mb:
        return None
    reading = read_memory(proc, with_uss=True)
    return reading if reading.private_mb > limit_mb else None


class SelfMemory:
    """This process's current RSS and its lifetime peak, in microseconds, for every task.

    psutil costs ~10 µs a reading and a no-op task's whole cost is ~1 ms, so the per-task
    path reads ``/proc/self/statm`` through a descriptor kept open (``pread`` regenerates it)
    and the peak from ``getrusage`` (``ru_maxrss``, ~1 µs). The peak is the process's
    high-water mark: a task's own peak is known exactly when the task raised it, which is the
    case that matters (a task that balloons); otherwise it is not reported.
    """

    def __init__(self) -> None:
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / MB
        self._maxrss_mb = 1 / MB if sys.platform == "darwin" else 1 / 1024
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._proc = psutil.Process()

    def rss_mb(self) -> float:
        if self._fd is not None:
            try:
                return int(os.pread(self._fd, 256, 0).split()[1]) * self._page_mb
            except (OSError, ValueError, IndexError):
                self._fd = None
        return float(self._proc.memory_info().rss) / MB

    def peak_mb(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * self._maxrss_mb


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
        log.warning("[memory] child %d %s > warn %dMB after %s; gc collected %d objects",
                    self.pid, reading.describe(), s.memory_warn_mb, name, collected)
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
        log.warning("[memory] child %d recycling: %s > %dMB", self.pid, reading.describe(),
                    self.settings.memory_recycle_mb)
        with contextlib.suppress(redis.RedisError):
            self.flush()
            _store().count(self.node, "recycles:memory")
        return math.ceil(reading.private_mb * 1024) + 1

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "tasks": self.tasks, "started": self.started,
                "last_task": self.last_task, "rss_mb": round(self.last.rss_mb, 1),
                "updated": time.time()}

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
                kills = store.record_kill(request.id, request.name,
                                          args_summary(request.argsrepr, request.kwargsrepr),
                                          reading.private_mb, "hard")
            except redis.RedisError as exc:
                log.warning("[memory] cannot count the kill of %s[%s]: %s", name, request.id, exc)
        self.killed.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        what = f"mid-task {name}" if name else "while idle"
        log.warning("[memory] child %d stopped %s: %s > hard %dMB (kill %s/%d)", pid, what,
                    reading.describe(), self.settings.memory_hard_mb, kills,
                    self.settings.max_worker_kills)
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
            children.append({"pid": pid, "rss_mb": round(reading.rss_mb, 1),
                             "uss_mb": _round(reading.uss_mb), "started": started})
        me = read_memory(psutil.Process(), with_uss=True)
        record: dict[str, Any] = {
            "pid": os.getpid(), "rss_mb": round(me.rss_mb, 1), "uss_mb": _round(me.uss_mb),
            "pool": self.pool, "guard": "enforcing" if self.enforce else "reporting",
            "children": children, "updated": now,
        }
        if self.task_guard is not None:
            record["tasks"] = self.task_guard.tasks
        _store().publish_parent(self.node, record, [c["pid"] for c in children])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class GuardedRequest(Request):  # type: ignore[misc]
    """Celery's request, counting a worker lost during this task against the task's id."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if type(exc).__name__ == "WorkerLostError":
            _note_worker_lost(self, exc)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)


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
        kills = store.record_kill(request.id, request.name,
                                  args_summary(request.argsrepr, request.kwargsrepr),
                                  watchdog.last_seen.get(pid), "lost")
        store.count(watchdog.node, "recycles:lost")
    except redis.RedisError as exc2:
        log.warning("[memory] cannot count the lost worker of %s[%s]: %s", request.name,
                    request.id, exc2)
        return
    log.warning("[memory] child %s lost mid-task %s: %s (kill %d/%d)", pid, request.name, exc,
                kills, watchdog.settings.max_worker_kills)


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
        store.dead_letter(request.id, request.name,
                          args_summary(request.argsrepr, request.kwargsrepr), kills, node)
    except redis.RedisError as exc:  # without Redis the task runs: losing work is worse
        log.warning("[memory] cannot check the kill count of %s[%s]: %s", request.name,
                    request.id, exc)
        return
    from celery.worker import state

    state.revoked.add(request.id)  # Celery then acks it and marks it REVOKED, never running it
    log.error("[memory] task %s[%s] took its worker down %s times (max %d): dead-lettered, "
              "not run again", request.name, request.id, kills.get("count"),
              guard.settings.max_worker_kills)


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
        log.warning("[memory] pool %r: the guard measures, reports and warns only; recycling "
                    "at WATCHKEEPER_MEMORY_RECYCLE_MB=%d and the hard stop at "
                    "WATCHKEEPER_MEMORY_HARD_MB=%d need --pool prefork", pool_name,
                    guard.settings.memory_recycle_mb, guard.settings.memory_hard_mb)
        guard.task_guard = TaskGuard(guard.settings, node, recycles=False,
                                     exclusive=pool_name == "solo")
        guard.task_guard.start_reporter()
    guard.watchdog = Watchdog(guard.settings, node, pool_name,
                              _pool_pids(sender.pool) if prefork else list,
                              enforce=prefork, task_guard=guard.task_guard)
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


def _on_process_shutdown(pid: int | None = None, exitcode: int | None = None,
                         **_: Any) -> None:
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
    celery.Task.Request = "workers.memory:GuardedRequest"
    for signal_, handler in (
            (signals.worker_ready, _on_worker_ready),
            (signals.worker_shutdown, _on_worker_shutdown),
            (signals.worker_process_init, _on_process_init),
            (signals.worker_process_shutdown, _on_process_shutdown),
            (signals.task_received, _on_task_received),
            (signals.task_prerun, _on_prerun),
            (signals.task_postrun, _on_postrun)):
        signal_.connect(handler, weak=False, dispatch_uid=f"wk-memory-{handler.__name__}")
