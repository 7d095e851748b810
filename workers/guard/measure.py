"""Reading a process's memory: RSS cheaply, USS (private pages) when it matters."""

from __future__ import annotations

import logging
import os
import resource
import sys
from dataclasses import dataclass

import psutil

log = logging.getLogger("watchkeeper.memory")

MB = 1024 * 1024


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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
