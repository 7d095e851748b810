"""Beat's dispatch pass: which schedule entries to send now, decided in Redis, once.

Celery's interval schedule keeps due times in each beat's memory and shelve file: a new hourly
source waited an hour, a changed sources file needed a restart, two beats sent every poll twice
and a worker outage filled the broker queue. Here the due times are the per-source state in
Redis (``next_check``, set by each poll on Redis's clock, backoff included) and one Lua call
per pass (``lua/dispatch.lua``) picks the entries that are due and marks each "queued" in the
same atomic step. So:

* a source is dispatched when its state says it is due — at once when it is new or its
  definition changed (its fingerprint differs from the one recorded at its last dispatch);
* an entry whose previous task still waits in the queue (its marker ``queued:{entry}``), whose
  source is being polled (its lock) or is paused is not dispatched, and nothing is dispatched
  while the broker queue holds ``WATCHKEEPER_MAX_QUEUE_LENGTH`` messages; skips are counted;
* only the beat holding the dispatch lock (``beat:lock``, refreshed every pass) dispatches, and
  even two beats passing at once cannot both mark one entry.

A poll clears its marker when it claims the source (``claim.lua``, atomic with taking the lock);
a periodic task clears its marker when it starts (``install``). A marker expires after
two periods of its entry (at most ``WATCHKEEPER_QUEUED_MAX_AGE``), as does its message, so a
message lost or held by a dead worker delays its entry at most that long and a second live
message never exists; until the beat confirms the message was sent, the marker lives only
``PENDING_TTL`` seconds, so a beat dying between marking and sending delays it only that long.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from workers.core import keys
from workers.core.maintenance import PERIODIC
from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.polling.locks import compare_delete
from workers.polling.state import state_ttl
from workers.store.scripts import Script

log = logging.getLogger(__name__)

_DISPATCH = Script("workers.polling", "dispatch")
_CONFIRM = Script("workers.polling", "queued_confirm")
_LOCK = Script("workers.polling", "beat_lock")

MIN_WAIT = 5
"""Seconds a dispatched message may wait at least, whatever its entry's period."""

PENDING_TTL = 30
"""Seconds a marker lives between the pass that set it and the confirmation that its message
was sent: the longest a beat killed in between can hold its entry back."""


def entry_name(kind: str, name: str) -> str:
    """A source's schedule entry: ``feed:bbc`` (its kind, its name)."""
    return f"{kind}:{name}"


def queued_key(settings: Settings, kind: str, name: str) -> str:
    return keys.QUEUED.key(settings, entry_name(kind, name))


def clear_queued(client: Any, key: str, task_id: str) -> None:
    """Delete a marker if it still names this task (a newer dispatch's marker is kept)."""
    compare_delete(client, key, task_id)


@dataclass(frozen=True)
class Entry:
    """One thing beat dispatches: a source's poll, or a periodic task (cleanup, flushes).

    ``state_key`` holds its due time (``next_check``); ``marker`` its "queued" marker;
    ``busy_key``, when set, is a lock that means "running now"; ``advance`` (periodic entries)
    moves ``next_check`` on at dispatch — a source's poll sets its own (interval, or backoff
    after errors). Key names are built once, when the schedule is (re)built, not every pass."""

    name: str
    task: str
    args: tuple[Any, ...]
    every: float
    fingerprint: str
    state_key: str
    marker: str
    busy_key: str | None
    advance: float | None
    ttl: int

    def wait(self, settings: Settings) -> int:
        """Seconds its message may wait in the queue: two periods (at least ``MIN_WAIT``, at
        most ``WATCHKEEPER_QUEUED_MAX_AGE``). Its marker lives as long and the message expires
        with it, so there is never more than one live message per entry, and one taken by a
        worker that died before starting it (waiting out the visibility timeout) holds its
        entry back two periods, not an hour."""
        return int(min(settings.queued_max_age, max(MIN_WAIT, 2 * self.every)))

    def options(self, settings: Settings) -> dict[str, Any]:
        """The message's options: it expires with its marker."""
        return {"expires": self.wait(settings)}


def fingerprint(*parts: Any) -> str:
    """A short stable digest of an entry's definition; a change makes the entry due now."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def source_entry(settings: Settings, source: Source, task: str) -> Entry:
    return Entry(
        name=entry_name(source.kind, source.name),
        task=task,
        args=(source.name,),
        every=source.interval,
        fingerprint=fingerprint(source.kind, task, dataclasses.asdict(source)),
        state_key=keys.SOURCE_STATE.key(settings, source.name),
        marker=queued_key(settings, source.kind, source.name),
        busy_key=keys.SOURCE_LOCK.key(settings, source.name),
        advance=None,
        ttl=state_ttl(settings, source),
    )


def periodic_entry(settings: Settings, name: str, task: str, every: float) -> Entry:
    return Entry(
        name=name,
        task=task,
        args=(),
        every=float(every),
        fingerprint=fingerprint(task, float(every)),
        state_key=keys.BEAT_ENTRY.key(settings, name),
        marker=keys.QUEUED.key(settings, name),
        busy_key=None,
        advance=float(every),
        ttl=int(max(settings.state_ttl, 2 * every)),
    )


@dataclass
class PassResult:
    """What one dispatch pass did."""

    sent: list[Entry]
    failed: list[Entry]
    queue_length: int


Send = Callable[[Entry, str], None]
"""``send(entry, task_id)``: publish the entry's task with this id (raises on failure)."""


def dispatch_pass(
    client: redis.Redis, settings: Settings, queue: str, entries: Sequence[Entry], send: Send
) -> PassResult:
    """Mark the due entries queued (one Lua call), send their tasks, then confirm the sent
    ones' markers and clear the failed ones' (so the next pass tries them again)."""
    if not entries:
        return PassResult([], [], int(client.llen(queue)))
    base = uuid.uuid4().hex[:24]
    tokens = [f"{base}{i:08x}" for i in range(len(entries))]  # task ids, unique per pass
    names: list[str] = [queue, keys.BEAT_STATS.key(settings)]
    args: list[Any] = [settings.max_queue_length, PENDING_TTL, settings.state_ttl]
    for entry, token in zip(entries, tokens, strict=True):
        names += [entry.state_key, entry.marker, entry.busy_key or entry.marker]
        args += [
            entry.fingerprint,
            token,
            "" if entry.advance is None else repr(entry.advance),
            entry.ttl,
        ]
    chosen, length, _now = _DISPATCH(client, names, args)
    result = PassResult([], [], int(length))
    confirm: dict[str, tuple[str, int]] = {}
    for index in chosen:
        entry, token = entries[int(index) - 1], tokens[int(index) - 1]
        try:
            send(entry, token)
        except Exception as exc:  # one failed publish never stops the others
            log.warning("[beat] %s: could not send %s: %s", entry.name, entry.task, exc)
            result.failed.append(entry)
            compare_delete(client, entry.marker, token)
        else:
            result.sent.append(entry)
            confirm[entry.marker] = (token, entry.wait(settings))
    if confirm:
        _CONFIRM(client, list(confirm), [v for pair in confirm.values() for v in pair])
    return result


def hold_lock(client: redis.Redis, settings: Settings, holder: str) -> tuple[bool, str]:
    """Take or refresh the dispatch lock: (this beat holds it, who holds it)."""
    held, who = _LOCK(
        client, [keys.BEAT_LOCK.key(settings)], [holder, int(settings.beat_lock_ttl * 1000)]
    )
    return bool(int(held)), str(who)


def release_lock(client: redis.Redis, settings: Settings, holder: str) -> None:
    """Let go of the dispatch lock at shutdown, so a standby beat takes over at once."""
    compare_delete(client, keys.BEAT_LOCK.key(settings), holder)


def install(celery: Celery, client: Callable[[], redis.Redis], settings: Settings) -> None:
    """Clear a periodic task's marker when the task starts (polls clear theirs as they claim
    their source). ``client`` gives the Redis client of the process running the task."""
    tasks = {periodic.task: periodic.name for periodic in PERIODIC}

    def on_prerun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        name = tasks.get(getattr(sender, "name", ""))
        if name is None or not task_id:
            return
        try:
            clear_queued(client(), keys.QUEUED.key(settings, name), task_id)
        except redis.RedisError as exc:  # the marker then expires by itself
            log.warning("[beat] %s: could not clear its queued marker: %s", name, exc)

    signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid=f"wk-queued-{id(celery)}")
