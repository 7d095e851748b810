"""Delivery as Celery tasks: a periodic run for every sink, and a run as soon as items arrive.

``deliver`` runs every WATCHKEEPER_NOTIFY_INTERVAL (beat) and whenever ``notify_new_items`` is
told a stream got entries (at most one request per 250 ms, through a ``SET NX PX`` flag), so an
item is usually notified well within a second of being written. One run reads every sink's
streams (each under its read lock), then lets every destination of every sink send what it owes
in parallel threads (each under its own lock, within WATCHKEEPER_NOTIFY_RUN_BUDGET), so a slow
destination delays neither the other destinations nor the other sinks. One broken sink is
logged and the others still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import shared_task

from tasks.notify import locks
from tasks.notify.config import NotifyConfig, Sink, notify_config
from tasks.notify.deliver import deliver_destination, with_redis
from tasks.notify.outbox import claim, sink_keys
from workers.core import keys
from workers.core.maintenance import PeriodicEntry, declare_periodic
from workers.core.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)

KICK_MS = 250
MAX_THREADS = 8


class SourceTags(Mapping[str, tuple[str, ...]]):
    """Each source's ``tags`` (kinds without tags have none), looked up in the source registry
    by name as items name their sources — never every source read for one delivery run."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._seen: dict[str, tuple[str, ...]] = {}

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name not in self._seen:
            source = self.rt.sources.get(name)
            if source is None:
                raise KeyError(name)
            self._seen[name] = tuple(getattr(source, "tags", ()) or ())
        return self._seen[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)


def source_tags(rt: Runtime) -> Mapping[str, tuple[str, ...]]:
    return SourceTags(rt)


def read_sink(
    rt: Runtime, sink: Sink, ncfg: NotifyConfig, tags: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    token = locks.acquire(rt.redis, rt.settings, sink.name, "read")
    if token is None:
        return {"busy": 1}
    try:
        return with_redis(rt, lambda: claim(rt, sink, ncfg.filters, tags))
    finally:
        with_redis(rt, lambda: locks.release(rt.redis, rt.settings, sink.name, "read", token))


def deliver_all(rt: Runtime, budget: float | None = None) -> dict[str, Any]:
    """One delivery run over every configured sink; returns counts per sink."""
    config = rt.config()
    ncfg = notify_config(config)
    if not ncfg.sinks:
        return {}
    tags = source_tags(rt)
    results: dict[str, Any] = {}
    for sink in ncfg.sinks:
        try:
            results[sink.name] = {"read": read_sink(rt, sink, ncfg, tags)}
        except Exception as exc:  # one broken sink must not stop the others
            log.exception("[notify] sink %r: reading failed", sink.name)
            results[sink.name] = {"error": f"{type(exc).__name__}: {exc}"}
    deadline = time.monotonic() + (rt.settings.notify_run_budget if budget is None else budget)
    pairs = [(sink, dest) for sink in ncfg.sinks for dest in sink.destinations]
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(pairs))) as pool:
        futures = {
            (sink.name, dest.label): pool.submit(
                deliver_destination, rt, sink, dest, sink_keys(rt.settings, sink), deadline
            )
            for sink, dest in pairs
        }
    for (name, label), future in futures.items():
        try:
            results[name].setdefault("destinations", {})[label] = future.result()
        except Exception as exc:  # one broken destination must not stop the others
            log.error("[notify] sink %r → %s: delivery failed: %s", name, label, exc)
            results[name].setdefault("destinations", {})[label] = {"error": str(exc)}
    return results


@shared_task(name="tasks.notify.deliver")
def deliver() -> dict[str, Any]:
    """A delivery run (from beat every WATCHKEEPER_NOTIFY_INTERVAL, or triggered)."""
    return deliver_all(get_runtime())


def notify_new_items(rt: Runtime, stream: str) -> bool:
    """Called by a writer right after it appended entries to ``stream``: request a delivery
    run now when a sink takes that stream (at most one request per 250 ms)."""
    try:
        sinks = notify_config(rt.config()).taking(stream)
    except Exception:  # an unreadable sources file is reported elsewhere; never block a writer
        return False
    if not sinks:
        return False
    if not rt.redis.set(keys.NOTIFY_KICK.key(rt.settings), "1", nx=True, px=KICK_MS):
        return False
    deliver.apply_async(expires=max(1.0, rt.settings.notify_interval * 5))
    return True


def periodic_entries() -> PeriodicEntry:
    return declare_periodic(
        PeriodicEntry("notify:deliver", "tasks.notify.deliver", lambda s: s.notify_interval)
    )


periodic_entries()
