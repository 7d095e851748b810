"""The one place the schedule is built, from the registries — one entry per source (its kind's
task) plus the periodic entries the stages declare — and the beat scheduler that dispatches it.

``celery -A workers beat`` runs ``DispatchScheduler`` (set as the app's ``beat_scheduler``):
every ``WATCHKEEPER_DISPATCH_INTERVAL`` it applies its sources file to the source registry if
the file changed, follows the registry (one read when nothing changed; only what changed
otherwise), takes or refreshes the dispatch lock in Redis, and — holding it — runs one
dispatch pass (``workers.polling.dispatch``): due times come from each source's state in
Redis, not from this process, so a new or changed source — whoever added it: a file, the CLI,
an OPML import — is polled within one pass, a second beat stands by instead of dispatching
twice, and nothing is kept in a local schedule file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis
from celery.beat import Scheduler

from workers.core import keys
from workers.core.connection import get_client
from workers.core.maintenance import PERIODIC
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.core.source_registry import ChangeTracker, Definition, SourceRegistry
from workers.core.sources_file import ConfigError, Source
from workers.ops.sources.apply import apply_file
from workers.polling.dispatch import (
    Entry,
    PassResult,
    dispatch_pass,
    hold_lock,
    message,
    periodic_entry,
    read_due,
    release_lock,
    source_entry,
)
from workers.polling.kinds import KINDS, kind_of

log = logging.getLogger(__name__)


FULL_PASS_EVERY = 60.0
"""Seconds a sweep takes: every entry's state read again and its due time rewritten, a slice
in each pass (``WATCHKEEPER_DISPATCH_CHUNK`` entries a script call), so over a million sources
no pass reads them all; the passes otherwise read only the entries the due set says are due,
and the sources that changed. A whole full pass at once (the due set rebuilt) follows a reload
of the whole registry, the taking of the dispatch lock and a due set Redis lost."""

FULL_PASS_LOGGED = 10000
"""A full pass over more entries than this is logged with its duration."""

SWEEP_RATE = 5000
"""Entries a sweep reads per second at most: over 300,000 sources a sweep takes longer than
``FULL_PASS_EVERY`` (a million: 200 s) rather than holding Redis longer each pass."""

MIN_SLEEP = 0.05
"""Seconds beat sleeps at least between passes: it wakes when the next entry falls due (the
due set's earliest time ahead) or after ``WATCHKEEPER_DISPATCH_INTERVAL``, whichever is first,
so a source is dispatched within about this of its due time, not within a whole interval."""

DUE_SHARE = 0.5
"""Share of the dispatch interval a pass may spend reading the due set chunk after chunk (a
backlog after an outage); what is left is read by the next pass."""

SHOWN = 10
"""Entry names a "sent" log line shows at most."""


def _names(entries: Sequence[Entry]) -> str:
    shown = ", ".join(e.name for e in entries[:SHOWN])
    return shown + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def schedule_entries(settings: Settings, sources: Iterable[Source]) -> list[Entry]:
    """What beat dispatches for these sources and these settings."""
    entries = [source_entry(settings, s, kind_of(s).task) for s in sources]
    entries += [periodic_entry(settings, p.name, p.task, p.every(settings)) for p in PERIODIC]
    return entries


def build_schedule(settings: Settings, sources: Iterable[Source]) -> dict[str, dict[str, Any]]:
    """The schedule as a Celery ``beat_schedule`` mapping (for reading; beat dispatches the
    entries themselves): task, period, args and message options of each entry."""
    return {
        e.name: {
            "task": e.task,
            "schedule": e.every,
            "args": e.args,
            "options": e.options(settings),
        }
        for e in schedule_entries(settings, sources)
    }


class SourcesFile:
    """This beat's sources file (None: it has none and applies nothing): applied to the
    registry at start and whenever its size, mtime or inode change. A file that no longer
    loads or names another owner's source is reported once; the registry keeps what it has."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._applied: tuple[int, int, int] | None = None
        self.applied_once = False

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat() if self.path is not None else None
        except OSError:
            return (-1, -1, -1)
        return (st.st_mtime_ns, st.st_size, st.st_ino) if st else (-1, -1, -1)

    def again(self) -> None:
        """Apply at the next check even if unchanged (the registry was lost)."""
        self._applied = None

    def apply_if_changed(self, client: redis.Redis, settings: Settings) -> bool:
        """True when the file was (re)applied. Redis errors propagate: tried again next pass."""
        if self.path is None:
            return False
        stamp = self._stamp()
        if stamp == self._applied:
            return False
        first = not self.applied_once
        self._applied, self.applied_once = stamp, True
        try:
            applied = apply_file(client, settings, self.path, automatic=True)
        except ConfigError as exc:
            log.error(
                "[beat] %s not applied; the registry keeps what it has: %s",
                self.path,
                "; ".join(exc.problems),
            )
            return False
        except OSError as exc:
            log.error("[beat] %s: %s; the registry keeps what it has", self.path, exc)
            return False
        except redis.RedisError:
            self._applied = None  # try again next pass
            raise
        lines = applied.report()
        if applied.state == "stale":
            log.warning("[beat] %s", lines[0])
        elif not first:
            log.info("[beat] sources file reloaded: %s", "\n".join(lines))
        else:
            log.info("[beat] sources file applied: %s", "\n".join(lines))
        return applied.state == "applied"


class DispatchScheduler(Scheduler):  # type: ignore[misc]
    """Celery's beat loop, with each tick one dispatch pass under the dispatch lock."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.settings: Settings = app.watchkeeper_settings
        path = getattr(app, "watchkeeper_config_path", None)
        self.file = SourcesFile(Path(path) if path is not None else None)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: bool | None = None  # unknown until the first pass
        self._client: redis.Redis | None = None
        self._runtime: Runtime | None = None
        self._tracker: ChangeTracker | None = None
        self._problem = ""
        self._periodic = schedule_entries(self.settings, ())
        self._waiting = {p.name: (p.queue, p.waiting) for p in PERIODIC if p.waiting > 0}
        self._held_back: set[str] = set()  # entries not published: their queue is full
        self._by_name: dict[str, Entry] = {e.name: e for e in self._periodic}
        self._source_entry: dict[str, str] = {}  # source name → its entry's name
        self._changed: set[str] = set()  # entries changed since the last pass
        self._invalid: dict[str, str] = {}  # source name → its problem (logged once)
        self._full_due = 0.0
        self._sweep: list[str] = []  # entry names the sweep under way has still to read
        self._swept_at = 0.0
        self._wait: float | None = None  # seconds until the next entry falls due
        kwargs["max_interval"] = self.settings.dispatch_interval
        super().__init__(app, *args, **kwargs)

    @property
    def entries(self) -> list[Entry]:
        return list(self._by_name.values())

    def setup_schedule(self) -> None:
        """Nothing to load: the schedule is the source registry, the due times are in Redis."""

    @property
    def runtime(self) -> Runtime:
        """Beat's runtime: its file's sections (sinks), loaded — and hooked — per version."""
        if self._runtime is None:
            self._runtime = Runtime(self.settings, self.client, self.file.path)
        return self._runtime

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = get_client(self.settings)
        return self._client

    def tick(self, *args: Any, **kwargs: Any) -> float:
        started = time.monotonic()
        try:
            self._follow()
            self._pass()
            if self.file.path is not None:  # the stages' config hooks, once per version of
                self.runtime.config()  # the file: e.g. a new sink's groups, before its first items
            self._problem = ""
        except (redis.RedisError, OSError) as exc:
            problem = f"[beat] dispatch pass failed (retrying every pass): {exc}"
            if problem != self._problem:
                log.error("%s", problem)
            self._problem = problem
        left = self.settings.dispatch_interval - (time.monotonic() - started)
        if self._wait is not None:
            left = min(left, self._wait - (time.monotonic() - started))
        return max(MIN_SLEEP, left)

    def _follow(self) -> None:
        """Apply the sources file if it changed, then take what changed in the registry: one
        read when nothing did; a source added, changed or removed becomes, changes or leaves
        its entry and is decided in this pass."""
        self.file.apply_if_changed(self.client, self.settings)
        if self._tracker is None:
            self._tracker = ChangeTracker(SourceRegistry(self.client, self.settings))
        epoch = self._tracker.epoch
        update = self._tracker.poll()
        if update.full:
            self._by_name = {e.name: e for e in self._periodic}
            self._source_entry, self._invalid = {}, {}
            self._full_due = 0.0  # a full pass: every entry's state, the due set rebuilt
            if epoch is not None and epoch != self._tracker.epoch and self.file.path:
                self.file.again()  # the registry is new (Redis lost its data): apply again
        for name, definition in update.changed.items():
            self._replace(name, definition)
        if update.full:
            log.info("[beat] source registry read: %d sources", len(self._source_entry))

    def _replace(self, name: str, definition: Definition | None) -> None:
        old = self._source_entry.pop(name, None)
        if old is not None:
            self._by_name.pop(old, None)
        self._invalid.pop(name, None)
        if definition is None:
            return
        try:
            source = definition.build()
            if source.kind not in KINDS:
                raise ConfigError("", [f"source '{name}': kind: {source.kind!r} not installed"])
        except ConfigError as exc:
            self._invalid[name] = "; ".join(exc.problems)
            log.warning("[beat] %r is not scheduled: %s", name, self._invalid[name])
            return
        entry = source_entry(self.settings, source, kind_of(source).task)
        self._by_name[entry.name] = entry
        self._source_entry[name] = entry.name
        self._changed.add(entry.name)

    def _pass(self) -> None:
        held, holder = hold_lock(self.client, self.settings, self.holder)
        if held != self.held:
            if held:
                log.info("[beat] %s dispatches (holds the dispatch lock)", self.holder)
            else:
                log.info("[beat] standing by: %s holds the dispatch lock", holder)
        if held and not self.held:
            self._full_due = 0.0  # taking over: start from every entry's state
        self.held = held
        changed, self._changed = self._changed, set()
        if not held:
            return
        self._wait = None
        if self._full_due == 0.0:  # start, reload, takeover: every entry now, the due set rebuilt
            self._full_pass()
            return
        started = time.monotonic()
        while True:  # what the due set says is due, and what changed: a pass costs only that
            due = read_due(self.client, self.settings)
            if due.names is None:  # Redis lost the due set: only a full pass knows
                self._full_pass()
                return
            self._wait = due.wait()
            unknown = [n for n in due.names if n not in self._by_name]
            if unknown:  # removed (or not valid here): they leave the due set
                self.client.zrem(keys.BEAT_DUE.key(self.settings), *unknown)
            names = dict.fromkeys([*due.names, *sorted(changed)])
            changed = set()
            entries = [self._by_name[n] for n in names if n in self._by_name]
            result = self._dispatch(entries, full=False)
            if result is None:
                return
            more = len(due.names) >= self.settings.dispatch_chunk and result.sent
            if not more or time.monotonic() - started > DUE_SHARE * self.settings.dispatch_interval:
                if more:
                    self._wait = 0.0
                break
        self._sweep_slice()

    def _keep(self) -> bool:
        """Refresh the dispatch lock in the middle of a long pass: still this beat's?"""
        return hold_lock(self.client, self.settings, self.holder)[0]

    def _full_pass(self) -> None:
        """Every entry now, the due set rebuilt (in chunks: many short script calls)."""
        started, entries = time.monotonic(), self.entries
        if self._dispatch(entries, full=True) is not None and len(entries) > FULL_PASS_LOGGED:
            log.info(
                "[beat] full pass: %d entries in %.1f s",
                len(entries),
                time.monotonic() - started,
            )

    def _sweep_slice(self) -> None:
        """This pass's slice of the sweep: every entry read once per ``FULL_PASS_EVERY``."""
        now = time.monotonic()
        if now - self._swept_at < self.settings.dispatch_interval:
            return  # passes come as often as entries fall due: the sweep goes by the clock
        if not self._sweep and self._full_due <= now:
            self._sweep = list(self._by_name)
            self._full_due = now + FULL_PASS_EVERY
        if not self._sweep:
            return
        per_second = min(len(self._by_name) / FULL_PASS_EVERY, SWEEP_RATE)
        elapsed = min(now - self._swept_at, 2 * self.settings.dispatch_interval)
        self._swept_at = now
        size = max(1, math.ceil(per_second * elapsed))
        names, self._sweep = self._sweep[-size:], self._sweep[:-size]
        entries = [self._by_name[n] for n in names if n in self._by_name]
        self._dispatch(entries, full=False, sweep=True)

    def _dispatch(self, entries: list[Entry], full: bool, sweep: bool = False) -> PassResult | None:
        """One dispatch pass over these entries; None when it was fenced off."""
        queue = str(self.app.conf.task_default_queue)
        result = dispatch_pass(
            self.client,
            self.settings,
            queue,
            entries,
            self._send,
            full,
            self.holder,
            sweep=sweep,
            keep=self._keep,
        )
        if result.fenced:  # the server we reached now has another holder (a failover)
            log.warning("[beat] %s no longer holds the dispatch lock; standing by", self.holder)
            self.held = False
            return None
        if full:
            self._full_due = time.monotonic() + FULL_PASS_EVERY
            self._sweep = []
        self._log_sent(result)
        return result

    def _log_sent(self, result: PassResult) -> None:
        sent = [e for e in result.sent if e.name not in self._held_back]
        if sent:
            log.info(
                "[beat] sent %d entries in %d messages: %s",
                len(sent),
                result.messages - (len(result.sent) - len(sent)),
                _names(sent),
            )

    def _send(self, entries: Sequence[Entry], task_ids: Sequence[str]) -> None:
        """One entry's own task, or several due sources' polls as one batch task. Results are
        never read, so none is subscribed to (Celery's default subscribes the sender to each
        task's result channel: a Redis subscribe and unsubscribe per message)."""
        if len(entries) == 1 and self._queue_holds_enough(entries[0].name):
            return  # a run already waits: its marker holds the entry back until it expires
        task, args, task_id, options = message(self.settings, entries, task_ids)
        self.app.send_task(
            task,
            args=args,
            task_id=task_id,
            producer=self.producer,
            headers={"celery_beat_task": True},
            ignore_result=True,
            **options,
        )

    def _queue_holds_enough(self, name: str) -> bool:
        """Whether a periodic entry's queue already holds its ``waiting`` messages (logged when
        that starts and ends: ``status`` shows the queue's length)."""
        if name not in self._waiting:
            return False
        queue, waiting = self._waiting[name]
        length = int(self.client.llen(queue))
        full = length >= waiting
        if full != (name in self._held_back):
            if full:
                self._held_back.add(name)
                log.info(
                    "[beat] %s: %d runs wait in queue %r; none added until it is consumed",
                    name,
                    length,
                    queue,
                )
            else:
                self._held_back.discard(name)
                log.info("[beat] %s: queue %r consumed again", name, queue)
        return full

    def close(self) -> None:
        if self.held and self._client is not None:
            with contextlib.suppress(redis.RedisError):  # else it expires by itself
                release_lock(self._client, self.settings, self.holder)
            self.held = False
        super().close()

    @property
    def info(self) -> str:
        return (
            f"    . dispatch -> every {self.settings.dispatch_interval:g}s, "
            f"{len(self.entries)} entries, due times in Redis"
        )
