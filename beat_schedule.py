"""The one place the schedule is built, from the registries — one entry per source (its kind's
task) plus the periodic entries the stages declare — and the beat scheduler that dispatches it.

``celery -A workers beat`` runs ``DispatchScheduler`` (set as the app's ``beat_scheduler``):
every ``WATCHKEEPER_DISPATCH_INTERVAL`` it re-reads the sources file if it changed, takes or
refreshes the dispatch lock in Redis, and — holding it — runs one dispatch pass
(``workers.polling.dispatch``): due times come from each source's state in Redis, not from
this process, so a new or changed source is polled within one pass, a second beat stands by
instead of dispatching twice, and nothing is kept in a local schedule file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from celery.beat import Scheduler

from workers.core.connection import get_client
from workers.core.maintenance import PERIODIC
from workers.core.settings import Settings
from workers.core.sources_file import ConfigError, SourcesConfig, load_config
from workers.polling.dispatch import (
    Entry,
    dispatch_pass,
    due_entries,
    hold_lock,
    message,
    periodic_entry,
    release_lock,
    source_entry,
)
from workers.polling.kinds import kind_of

log = logging.getLogger(__name__)


FULL_PASS_EVERY = 60.0
"""Seconds between full passes (every entry's state read, the due set rebuilt); the passes in
between read only the entries the due set says are due. A full pass also follows a changed
sources file and the taking of the dispatch lock."""

SHOWN = 10
"""Entry names a "sent" log line shows at most."""


def _names(entries: Sequence[Entry]) -> str:
    shown = ", ".join(e.name for e in entries[:SHOWN])
    return shown + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def schedule_entries(settings: Settings, config: SourcesConfig) -> list[Entry]:
    """What beat dispatches for this sources file and these settings."""
    entries = [source_entry(settings, s, kind_of(s).task) for s in config.sources]
    entries += [periodic_entry(settings, p.name, p.task, p.every(settings)) for p in PERIODIC]
    return entries


def build_schedule(settings: Settings, config: SourcesConfig) -> dict[str, dict[str, Any]]:
    """The schedule as a Celery ``beat_schedule`` mapping (for reading; beat dispatches the
    entries themselves): task, period, args and message options of each entry."""
    return {
        e.name: {
            "task": e.task,
            "schedule": e.every,
            "args": e.args,
            "options": e.options(settings),
        }
        for e in schedule_entries(settings, config)
    }


class SourcesFile:
    """The sources file as beat sees it: re-read when its size, mtime or inode change; a file
    that no longer loads is reported once and the last good one kept."""

    def __init__(self, path: Path, config: SourcesConfig | None = None) -> None:
        self.path = path
        self.config = config if config is not None else load_config(path)
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (-1, -1, -1)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> bool:
        """True when a changed file was loaded."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            self.config = load_config(self.path)
        except ConfigError as exc:
            log.error(
                "[beat] %s is invalid; still dispatching the last good version: %s",
                self.path,
                "; ".join(exc.problems),
            )
            return False
        except OSError as exc:
            log.error("[beat] %s: %s; still dispatching the last good version", self.path, exc)
            return False
        return True


class DispatchScheduler(Scheduler):  # type: ignore[misc]
    """Celery's beat loop, with each tick one dispatch pass under the dispatch lock."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.settings: Settings = app.watchkeeper_settings
        self.sources = SourcesFile(
            Path(app.watchkeeper_config_path), getattr(app, "watchkeeper_config", None)
        )
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: bool | None = None  # unknown until the first pass
        self._client: redis.Redis | None = None
        self._problem = ""
        self._use(schedule_entries(self.settings, self.sources.config))
        kwargs["max_interval"] = self.settings.dispatch_interval
        super().__init__(app, *args, **kwargs)

    def _use(self, entries: list[Entry]) -> None:
        """A new schedule: the next pass is a full one (new and changed entries are found by
        reading every entry's state, and the due set is rebuilt without removed ones)."""
        self.entries = entries
        self._by_name = {e.name: e for e in entries}
        self._full_due = 0.0

    def setup_schedule(self) -> None:
        """Nothing to load: the schedule is the sources file, the due times are in Redis."""

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = get_client(self.settings)
        return self._client

    def tick(self, *args: Any, **kwargs: Any) -> float:
        started = time.monotonic()
        if self.sources.reload():
            self._use(schedule_entries(self.settings, self.sources.config))
            log.info("[beat] sources file reloaded: %d sources", len(self.sources.config.sources))
        try:
            self._pass()
            self._problem = ""
        except (redis.RedisError, OSError) as exc:
            problem = f"[beat] dispatch pass failed (retrying every pass): {exc}"
            if problem != self._problem:
                log.error("%s", problem)
            self._problem = problem
        return max(0.0, self.settings.dispatch_interval - (time.monotonic() - started))

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
        if not held:
            return
        queue = str(self.app.conf.task_default_queue)
        due = (
            None if self._full_due <= time.monotonic() else due_entries(self.client, self.settings)
        )
        full = due is None
        if due is None:
            entries = self.entries
        else:  # only what the due set says is due: a pass costs what is due
            entries = [self._by_name[n] for n in due if n in self._by_name]
        result = dispatch_pass(
            self.client, self.settings, queue, entries, self._send, full, self.holder
        )
        if result.fenced:  # the server we reached now has another holder (a failover)
            log.warning("[beat] %s no longer holds the dispatch lock; standing by", self.holder)
            self.held = False
            return
        if full:
            self._full_due = time.monotonic() + FULL_PASS_EVERY
        if result.sent:
            log.info(
                "[beat] sent %d entries in %d messages: %s",
                len(result.sent),
                result.messages,
                _names(result.sent),
            )

    def _send(self, entries: Sequence[Entry], task_ids: Sequence[str]) -> None:
        """One entry's own task, or several due sources' polls as one batch task. Results are
        never read, so none is subscribed to (Celery's default subscribes the sender to each
        task's result channel: a Redis subscribe and unsubscribe per message)."""
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
