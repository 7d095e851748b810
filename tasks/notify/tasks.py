"""Delivery as Celery tasks: a periodic run for every sink, and a run as soon as items arrive.

Delivery never shares pool processes with polls: ``tasks.notify.*`` are routed to their own
queue (``notify``, ``workers/celery_app.py``), consumed by a small worker of their own that
``watchkeeper run`` starts (``celery -A workers worker -Q notify``) — with time limits of its
own (WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT) that end a stuck child.

``deliver`` runs every WATCHKEEPER_NOTIFY_INTERVAL (beat) and whenever ``notify_new_items`` is
told a stream got entries (a run that starts after the write: at most one request per 250 ms,
and at most one such request waiting in the queue), so an item is usually notified well within
a second of being written. One run
reads every sink's streams (each under its read lock; a sink none of whose destinations keeps
up reads nothing more until one does: ``sinks_behind``), then starts each destination that owes
something due in a thread of its own (under the destination's lock), and waits for them up to
WATCHKEEPER_NOTIFY_RUN_WAIT. A destination still sending then — a slow receiver, bounded by its
send deadline — carries on in its thread while the run returns, so the pool process takes the
next run at once: a slow destination delays neither the other destinations nor the other
sinks, nor the next runs (which skip it while it sends, here or in another process). One broken
sink is logged and the others still run.

A sending thread outlives its run only within its own bounds (WATCHKEEPER_NOTIFY_RUN_BUDGET,
plus one send's deadline); a pool child that exits (recycled after its tasks) waits for them
first (``worker_process_shutdown``), up to ``SHUTDOWN_WAIT``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from celery import shared_task, signals

from tasks.notify import locks
from tasks.notify.config import Destination, NotifyConfig, Sink, notify_config
from tasks.notify.deliver import deliver_destination, with_redis
from tasks.notify.outbox import DEST_FIELD, claim, ensure_groups, sink_keys
from tasks.notify.status import QUEUE
from workers.core import keys
from workers.core.clock import redis_time
from workers.core.maintenance import PeriodicEntry, declare_periodic
from workers.core.runtime import Runtime, declare_config_hook, get_runtime
from workers.core.sources_file import SourcesConfig

log = logging.getLogger(__name__)

KICK_MS = 250
SHUTDOWN_WAIT = 60.0
"""Seconds an exiting pool child waits for its destinations still sending."""


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


class _Send:
    """One destination sending in a thread of this process."""

    def __init__(self, target: Callable[[], dict[str, int]]) -> None:
        self.result: dict[str, Any] = {"sending": 1}
        self.done = threading.Event()
        self._target = target
        self.thread = threading.Thread(target=self._run, name="notify-send", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._target()
        except Exception as exc:  # one broken destination must not stop the others
            log.error("[notify] delivery failed: %s: %s", type(exc).__name__, exc)
            self.result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            self.done.set()


class Senders:
    """The destinations sending in this process: at most one thread per destination."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], _Send] = {}
        self._pid = os.getpid()

    def start(self, key: tuple[str, str], target: Callable[[], dict[str, int]]) -> _Send | None:
        """Start ``target`` in a thread, unless this destination is still sending here."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are not here
                self._running, self._pid = {}, os.getpid()
            current = self._running.get(key)
            if current is not None and not current.done.is_set():
                return None
            send = _Send(target)
            self._running[key] = send
        send.thread.start()
        return send

    def busy(self) -> int:
        with self._lock:
            return sum(not s.done.is_set() for s in self._running.values())

    def join(self, timeout: float) -> int:
        """Wait for every destination still sending, up to ``timeout``; how many remain."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sends = list(self._running.values())
        for send in sends:
            send.done.wait(max(0.0, deadline - time.monotonic()))
        return sum(not s.done.is_set() for s in sends)


SENDERS = Senders()
_told: set[tuple[str, str]] = set()
_recorded: set[tuple[str, str, str]] = set()


def note_destinations(rt: Runtime, ncfg: NotifyConfig) -> None:
    """In the sending process: one log line per destination whose variable is unset here
    (once per process), and each destination's label recorded for processes without it."""
    for sink in ncfg.sinks:
        for dest in sink.destinations:
            if dest.unset and (sink.name, dest.raw) not in _told:
                _told.add((sink.name, dest.raw))
                log.warning(
                    "[notify] sink %r: environment variable %s is not set in this delivery "
                    "process: its messages wait (owed, in status) until it is",
                    sink.name,
                    dest.variable,
                )
            mark = (sink.name, dest.id, dest.label)
            if not dest.unset and mark not in _recorded:
                info = json.dumps({"raw": dest.raw, "label": dest.label})
                rt.redis.hset(sink_keys(rt.settings, sink).state, DEST_FIELD + dest.id, info)
                _recorded.add(mark)


def sinks_behind(
    rt: Runtime, pairs: list[tuple[Sink, Destination]], now: float | None = None
) -> set[str]:
    """Sinks none of whose destinations keeps up: each able to send here owes at least
    WATCHKEEPER_NOTIFY_BATCH messages due now (or none can send here). Such a sink reads no
    more of its streams until one catches up — the entries wait in the stream, so a backlog
    never floods the outbox past its cap — while a sink with one destination keeping up reads
    on (the others' backlog is held by the outbox cap, as for a destination that is down).
    ``now``: Redis's clock (the due scores are Redis ``TIME``; read here when not given)."""
    now = redis_time(rt.redis) if now is None else now
    pipe = rt.redis.pipeline(transaction=False)
    sendable = [(sink, dest) for sink, dest in pairs if not dest.unset]
    for sink, dest in sendable:
        key = keys.NOTIFY_DUE.key(rt.settings, sink.name, dest.id)
        pipe.zcount(key, "-inf", now + 1.0)
    keeping_up = {
        sink.name
        for (sink, _), owed in zip(sendable, pipe.execute(), strict=True)
        if int(owed) < rt.settings.notify_batch
    }
    return {sink.name for sink, _ in pairs} - keeping_up


def due_now(rt: Runtime, pairs: list[tuple[Sink, Destination]]) -> list[bool]:
    """Whether each destination owes a message due now — by Redis's clock, read in the same
    round trip (the scores are Redis ``TIME``) — one round trip for all."""
    pipe = rt.redis.pipeline(transaction=False)
    for sink, dest in pairs:
        pipe.zrange(keys.NOTIFY_DUE.key(rt.settings, sink.name, dest.id), 0, 0, withscores=True)
    pipe.time()
    *firsts, (seconds, micros) = pipe.execute()
    now = float(seconds) + float(micros) / 1e6
    return [bool(first) and float(first[0][1]) <= now + 1.0 for first in firsts]


def deliver_all(
    rt: Runtime, budget: float | None = None, wait: float | None = None
) -> dict[str, Any]:
    """One delivery run over every configured sink; returns counts per sink and destination
    (``sending``: still sending when the run returned, after ``wait`` seconds)."""
    config = rt.config()
    ncfg = notify_config(config)
    if not ncfg.sinks:
        return {}
    with_redis(rt, lambda: note_destinations(rt, ncfg))
    tags = source_tags(rt)
    pairs = [(sink, dest) for sink in ncfg.sinks for dest in sink.destinations]
    behind = with_redis(rt, lambda: sinks_behind(rt, pairs))
    results: dict[str, Any] = {}
    for sink in ncfg.sinks:
        if sink.name in behind:
            results[sink.name] = {"read": {"behind": 1}}
            continue
        try:
            results[sink.name] = {"read": read_sink(rt, sink, ncfg, tags)}
        except Exception as exc:  # one broken sink must not stop the others
            log.exception("[notify] sink %r: reading failed", sink.name)
            results[sink.name] = {"error": f"{type(exc).__name__}: {exc}"}
    seconds = rt.settings.notify_run_budget if budget is None else budget
    started: dict[tuple[str, str], _Send] = {}
    for (sink, dest), due in zip(pairs, with_redis(rt, lambda: due_now(rt, pairs)), strict=True):
        shown = results[sink.name].setdefault("destinations", {})
        if dest.unset:
            shown[dest.label] = {"unset": 1}  # logged once (note_destinations); messages wait
            continue
        if not due:
            shown[dest.label] = {"idle": 1}
            continue
        send = SENDERS.start((sink.name, dest.id), _sender(rt, sink, dest, seconds))
        if send is None:
            shown[dest.label] = {"busy": 1}  # still sending from an earlier run here
        else:
            started[(sink.name, dest.label)] = send
    until = time.monotonic() + (rt.settings.notify_run_wait if wait is None else wait)
    for (name, label), send in started.items():
        send.done.wait(max(0.0, until - time.monotonic()))
        results[name]["destinations"][label] = send.result
    return results


def _sender(rt: Runtime, sink: Sink, dest: Destination, seconds: float) -> Callable[[], Any]:
    def run() -> dict[str, int]:
        deadline = time.monotonic() + seconds
        return deliver_destination(rt, sink, dest, sink_keys(rt.settings, sink), deadline)

    return run


@shared_task(name="tasks.notify.deliver")
def deliver() -> dict[str, Any]:
    """A delivery run (from beat every WATCHKEEPER_NOTIFY_INTERVAL, or triggered)."""
    rt = get_runtime()
    rt.redis.delete(keys.NOTIFY_PENDING.key(rt.settings))  # a new request may queue a run
    return deliver_all(rt)


def notify_new_items(rt: Runtime, stream: str) -> bool:
    """Called by a writer right after it appended entries to ``stream``: when a sink takes
    that stream, make sure a delivery run starts after this write — one already waiting in the
    queue will (its marker is deleted when it starts, before it reads); else request one, at
    once, or 250 ms after the previous request (so a busy writer requests at most four a
    second). Never more than one requested run waits, and none is added to a queue where a run
    already waits (its marker expired with no delivery worker to start it): no delivery worker
    must not grow the queue. Returns whether a run was requested."""
    try:
        sinks = notify_config(rt.config()).taking(stream)
    except Exception:  # an unreadable sources file is reported elsewhere; never block a writer
        return False
    if not sinks:
        return False
    # the marker lives until the run starts (or, were its message lost, QUEUED_MAX_AGE: beat's
    # runs every WATCHKEEPER_NOTIFY_INTERVAL carry on meanwhile)
    pending = keys.NOTIFY_PENDING.key(rt.settings)
    if not rt.redis.set(pending, "1", nx=True, ex=rt.settings.queued_max_age):
        return False
    if rt.redis.llen(QUEUE):  # a run waits (no delivery worker?): it starts after this write
        return False  # and clears the marker; one more would only grow the queue
    at_once = rt.redis.set(keys.NOTIFY_KICK.key(rt.settings), "1", nx=True, px=KICK_MS)
    deliver.apply_async(
        expires=rt.settings.queued_max_age, countdown=None if at_once else KICK_MS / 1000
    )
    return True


def create_groups(rt: Runtime, config: SourcesConfig) -> None:
    """When any process loads a sources file (a poll worker, beat, the CLI, the delivery
    worker), every sink's consumer groups are created — idempotently, at the end of each
    stream on Redis's side — so a sink sees every item written after its file was first
    loaded, even before its first delivery run."""
    for sink in notify_config(config).sinks:
        ensure_groups(rt, sink, sink_keys(rt.settings, sink))


declare_config_hook("notify:groups", create_groups)


@signals.worker_process_shutdown.connect
def _finish_sending(**_: Any) -> None:
    """A pool child exiting (recycled) lets its destinations finish their sends first."""
    left = SENDERS.join(SHUTDOWN_WAIT)
    if left:
        log.warning("[notify] exiting with %d destination(s) still sending", left)


def periodic_entries() -> PeriodicEntry:
    """Beat's run every WATCHKEEPER_NOTIFY_INTERVAL — none added while one already waits in
    the ``notify`` queue (no delivery worker running: the queue stays at one message)."""
    return declare_periodic(
        PeriodicEntry(
            "notify:deliver",
            "tasks.notify.deliver",
            lambda s: s.notify_interval,
            queue=QUEUE,
            waiting=1,
        )
    )


periodic_entries()
