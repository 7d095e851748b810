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
* only the beat holding the dispatch lock (``beat:lock``, refreshed every pass) dispatches —
  the pass itself checks the lock in its atomic step, so a beat whose lock a Redis failover
  took back dispatches nothing on the new primary — and even two beats passing at once cannot
  both mark one entry;
* when many sources are due at once, they share tasks (``batch``): one message polls up to
  ``WATCHKEEPER_POLL_BATCH`` of them one after another, so Celery's fixed cost per task (the
  send, the worker's bookkeeping and ack, several round trips) is paid once per batch, not once
  per poll. A source whose last poll failed, was slow or never finished gets a task of its own.

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
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from workers.core import keys
from workers.core.dead_letters import Dispatch
from workers.core.maintenance import PERIODIC
from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.polling.locks import compare_delete
from workers.polling.state import entry_name, state_ttl
from workers.store import replicas
from workers.store.scripts import Script, execute

log = logging.getLogger(__name__)

_DISPATCH = Script("workers.polling", "dispatch")
_CONFIRM = Script("workers.polling", "queued_confirm")
_LOCK = Script("workers.polling", "beat_lock")
_DUE = Script("workers.polling", "due")

MIN_WAIT = 5
"""Seconds a dispatched message may wait at least, whatever its entry's period."""

KEEP_EVERY = 1.0
"""Seconds between refreshes of the dispatch lock during one long pass."""

PENDING_TTL = 30
"""Seconds a marker lives between the pass that set it and the confirmation that its message
was sent: the longest a beat killed in between can hold its entry back."""


def queued_key(settings: Settings, kind: str, name: str) -> str:
    return keys.QUEUED.key(settings, entry_name(kind, name))


def clear_queued(client: Any, key: str, task_id: str) -> None:
    """Delete a marker if it still names this task (a newer dispatch's marker is kept)."""
    compare_delete(client, key, task_id)


@dataclass(frozen=True, slots=True)
class KeyStarts:
    """The literal starts of an entry's key names (``wk:src:``), shared by every entry: an
    entry keeps only its name, and a million entries do not hold three million key strings."""

    state: str
    marker: str
    busy: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing beat dispatches: a source's poll, or a periodic task (cleanup, flushes).

    ``state_key`` holds its due time (``next_check``); ``marker`` its "queued" marker;
    ``busy_key``, when set, is a lock that means "running now"; ``advance`` (periodic entries)
    moves ``next_check`` on at dispatch — a source's poll sets its own (interval, or backoff
    after errors)."""

    name: str
    task: str
    kind: str
    """The source's kind ("feed"); empty for a periodic entry."""
    args: tuple[Any, ...]
    every: float
    fingerprint: str
    starts: KeyStarts
    advance: float | None
    ttl: int

    @property
    def _own(self) -> str:
        """What its state and lock keys are named after: its source, or the entry itself."""
        return str(self.args[0]) if self.kind else self.name

    @property
    def state_key(self) -> str:
        return self.starts.state + self._own

    @property
    def marker(self) -> str:
        return self.starts.marker + self.name

    @property
    def busy_key(self) -> str | None:
        return None if self.starts.busy is None else self.starts.busy + self._own

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


COMMON_DEFAULTS = {
    "interval_min": None,
    "interval_max": None,
    "honour_cache": True,
    "parser": "",  # a feed's parser choice; empty: the global setting
    "title": "",  # a feed's display title and site (OPML): shown, never fetched
    "site_url": "",
}


_FIELDS: dict[type, tuple[str, ...]] = {}
_LEAVES = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """``dataclasses.asdict`` as JSON sees it (the same text once dumped), without its deep
    copies: a quarter of the cost, which counts when beat builds a million entries."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {n: plain(getattr(value, n)) for n in names}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def definition(source: Source) -> dict[str, Any]:
    """What a source's fingerprint covers: every field, the profile and clamps included — but
    a common field left at its default is left out, so adding such fields never makes every
    configured source due at once."""
    fields: dict[str, Any] = plain(source)
    for name, default in COMMON_DEFAULTS.items():
        if fields.get(name, default) == default:
            fields.pop(name, None)
    if source.request.empty:
        fields.pop("request", None)
    return fields


_STARTS: dict[tuple[str, bool], KeyStarts] = {}


def key_starts(settings: Settings, source: bool) -> KeyStarts:
    """The key starts of a source's entry or a periodic one, made once per prefix."""
    starts = _STARTS.get((settings.prefix, source))
    if starts is None:
        marker = keys.QUEUED.prefix_of(settings)
        if source:
            state = keys.SOURCE_STATE.prefix_of(settings)
            starts = KeyStarts(state, marker, keys.SOURCE_LOCK.prefix_of(settings))
        else:
            starts = KeyStarts(keys.BEAT_ENTRY.prefix_of(settings), marker, None)
        _STARTS[(settings.prefix, source)] = starts
    return starts


def source_entry(settings: Settings, source: Source, task: str) -> Entry:
    return Entry(
        name=entry_name(source.kind, source.name),
        task=task,
        kind=source.kind,
        args=(source.name,),
        every=source.interval,
        fingerprint=fingerprint(source.kind, task, definition(source)),
        starts=key_starts(settings, True),
        advance=None,
        ttl=state_ttl(settings, source),
    )


def periodic_entry(settings: Settings, name: str, task: str, every: float) -> Entry:
    return Entry(
        name=name,
        task=task,
        kind="",
        args=(),
        every=float(every),
        fingerprint=fingerprint(task, float(every)),
        starts=key_starts(settings, False),
        advance=float(every),
        ttl=int(max(settings.state_ttl, 2 * every)),
    )


@dataclass
class PassResult:
    """What one dispatch pass did: the entries sent and not sent, the messages sent (a batch
    of polls is one), the queue length the pass saw and the due entries it skipped, by reason
    (``skipped_queued``, ``skipped_polling``, ``skipped_queue_full``)."""

    sent: list[Entry]
    failed: list[Entry]
    queue_length: int
    messages: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    fenced: bool = False
    """The dispatch lock was not this beat's on the server the pass ran on: nothing sent."""


Send = Callable[[Sequence[Entry], Sequence[str]], None]
"""``send(entries, task_ids)``: publish one message for these entries (raises on failure) —
one entry's own task with its id, or several sources' polls as one batch (``message``)."""

BATCH_TASK = "workers.polling.poll_batch"

SPREAD = 4
"""Batches are made only when each pool process gets at least this many of them."""


def message(
    settings: Settings, entries: Sequence[Entry], task_ids: Sequence[str]
) -> tuple[str, list[Any], str, dict[str, Any]]:
    """What to publish for these entries: (task name, args, task id, options). One entry: its
    own task under its id. Several: the batch task, whose args are ``[kind, source name, task
    id]`` per source (each poll clears its own queued marker) and which expires with the first
    of its entries' markers."""
    if len(entries) == 1:
        entry = entries[0]
        return entry.task, list(entry.args), task_ids[0], entry.options(settings)
    polls = [[e.kind, *e.args, token] for e, token in zip(entries, task_ids, strict=True)]
    expires = min(e.wait(settings) for e in entries)
    return BATCH_TASK, [polls], uuid.uuid4().hex, {"expires": expires}


def group(settings: Settings, entries: Sequence[Entry], shared: Sequence[bool]) -> list[list[int]]:
    """Which dispatched entries (indices) go in one message: those that may share a task in
    batches of at most ``WATCHKEEPER_POLL_BATCH``, but spread over at least four times the pool
    (a few due sources still poll in parallel, one per task, and no pool process gets much
    more than its share); every other entry alone."""
    alone = [[i] for i, ok in enumerate(shared) if not ok]
    together = [i for i, ok in enumerate(shared) if ok]
    spread = SPREAD * max(1, settings.concurrency)
    size = max(1, min(settings.poll_batch, len(together) // spread))
    batches = [together[i : i + size] for i in range(0, len(together), size)]
    return batches + alone


@dataclass(frozen=True)
class Due:
    """One read of the due set: the names due now (None: there is no due set — Redis lost
    its data — and only a full pass knows), Redis's time then, and the earliest due time
    still ahead (None: nothing ahead)."""

    names: list[str] | None
    now: float
    ahead: float | None

    def wait(self) -> float | None:
        """Seconds until the next entry falls due (None: none ahead)."""
        return None if self.ahead is None else max(0.0, self.ahead - self.now)


def read_due(client: redis.Redis, settings: Settings, limit: int | None = None) -> Due:
    """The due set, read on Redis's clock: at most ``limit`` names (the earliest due first;
    None: ``WATCHKEEPER_DISPATCH_CHUNK``)."""
    count = settings.dispatch_chunk if limit is None else limit
    exists, names, now, ahead = _DUE(client, [keys.BEAT_DUE.key(settings)], [count])
    return Due(
        [str(name) for name in names] if int(exists) else None,
        float(now),
        float(ahead) if ahead not in ("", b"", None) else None,
    )


def due_entries(client: redis.Redis, settings: Settings) -> list[str] | None:
    """The names of every schedule entry due now, from the due set, on Redis's clock; None
    when there is no due set (Redis lost its data): then only a full pass knows."""
    return read_due(client, settings, -1).names


def _add(
    settings: Settings,
    names: list[str],
    args: list[Any],
    entries: Sequence[Entry],
    tokens: Sequence[str],
) -> None:
    """The keys and arguments of these entries in one dispatch script call."""
    for entry, token in zip(entries, tokens, strict=True):
        names += [entry.state_key, entry.marker, entry.busy_key or entry.marker]
        args += [
            entry.fingerprint,
            token,
            "" if entry.advance is None else repr(entry.advance),
            entry.ttl,
            entry.name,
            entry.wait(settings),
        ]


def dispatch_pass(
    client: redis.Redis,
    settings: Settings,
    queue: str,
    entries: Sequence[Entry],
    send: Send,
    full: bool = True,
    holder: str = "",
    *,
    check: bool = False,
    sweep: bool = False,
    keep: Callable[[], bool] | None = None,
) -> PassResult:
    """Mark the due entries queued (one Lua call), send their tasks — several due sources in one
    message when they may share a task — then confirm the sent ones' markers and clear the
    failed ones' (so the next pass tries them again). ``full``: ``entries`` are all there are,
    and the due set is rebuilt from their states; otherwise they are the ones it says are due
    (``due_entries``), and a pass costs what is due, not what is configured. ``holder``: the
    beat's id; the pass dispatches nothing unless the dispatch lock names it (checked in the
    same atomic step, on whichever server is primary now). ``check``: "check now" of one entry
    (``check_now``). ``sweep``: a slice of a full pass (each entry's due time rewritten from
    its state, nothing else dropped from the due set).

    The entries are decided ``WATCHKEEPER_DISPATCH_CHUNK`` at a time, one script call each (a
    full pass over a million sources is many short calls, never one that holds Redis for
    seconds); each chunk sees the queue as the previous ones left it. ``keep``, called between
    chunks at most once a second, refreshes the dispatch lock for a pass that outlasts it (a
    million entries take longer than ``WATCHKEEPER_BEAT_LOCK_TTL``); False ends the pass."""
    base = ("check-" if check else "") + uuid.uuid4().hex[:24]
    tokens = [f"{base}{i:08x}" for i in range(len(entries))]  # task ids, unique per pass
    due_set = keys.BEAT_DUE.key(settings)
    head: list[str] = [queue, keys.BEAT_STATS.key(settings), due_set, keys.BEAT_LOCK.key(settings)]
    slow = repr(float(settings.poll_batch_slow))
    picked: list[tuple[Entry, str]] = []
    shared: list[Any] = []
    result = PassResult([], [], 0)
    chunk = max(1, settings.dispatch_chunk)
    kept = time.monotonic()
    for lo in range(0, max(1, len(entries)), chunk):
        if keep is not None and lo and time.monotonic() - kept >= KEEP_EVERY:
            kept = time.monotonic()
            if not keep():
                result.fenced = True
                break
        mode = "check" if check else "sweep" if sweep or (full and lo) else "1" if full else "0"
        names = list(head)
        args: list[Any] = [settings.max_queue_length, PENDING_TTL, settings.state_ttl]
        args += [slow, mode, holder]
        _add(settings, names, args, entries[lo : lo + chunk], tokens[lo : lo + chunk])
        chosen, length, _now, chunk_shared, skips, fenced = _DISPATCH(client, names, args)
        result.queue_length = int(length)
        if int(fenced):
            result.fenced = True
            break
        picked += [(entries[lo + int(k) - 1], tokens[lo + int(k) - 1]) for k in chosen]
        shared += chunk_shared
        for i in range(0, len(skips), 2):
            reason = str(skips[i])
            result.skipped[reason] = result.skipped.get(reason, 0) + int(skips[i + 1])
    confirm: dict[str, tuple[str, int]] = {}
    for indices in group(settings, [e for e, _ in picked], [int(s) == 1 for s in shared]):
        batch = [picked[i][0] for i in indices]
        ids = [picked[i][1] for i in indices]
        try:
            send(batch, ids)
        except Exception as exc:  # one failed publish never stops the others
            label = batch[0].name if len(batch) == 1 else f"{len(batch)} polls"
            log.warning("[beat] %s: could not send: %s", label, exc)
            result.failed += batch
            for entry, token in zip(batch, ids, strict=True):
                compare_delete(client, entry.marker, token)
            client.zadd(due_set, {entry.name: 0 for entry in batch})  # due again next pass
        else:
            result.sent += batch
            result.messages += 1
            for entry, token in zip(batch, ids, strict=True):
                confirm[entry.marker] = (token, entry.wait(settings))
    if confirm:
        _CONFIRM(client, list(confirm), [v for pair in confirm.values() for v in pair])
    return result


CHECK_OUTCOMES = {
    "sent": "poll queued",
    "failed": "could not send the poll (see the log)",
    "skipped_queued": "a poll is already queued",
    "skipped_polling": "it is being polled now",
    "skipped_queue_full": "not sent: the broker queue is full",
}
"""What "check now" did, as the dashboard says it."""


def check_now(
    client: redis.Redis, settings: Settings, queue: str, entry: Entry, dispatch: Dispatch
) -> str:
    """Poll one source now ("check now"): what happened, one of ``CHECK_OUTCOMES``.

    The same step as beat's dispatch (``dispatch.lua``, in ``check`` mode): the poll is sent
    whatever the source's due time or pause (the task is forced), but not while a poll of it is
    queued or running or the broker queue is at ``WATCHKEEPER_MAX_QUEUE_LENGTH``; it sets the
    source's queued marker as beat does, so however often it is clicked, and whatever beat
    does meanwhile, one poll waits in the queue (of a paused source, a scheduled poll queued
    before the pause does not count: it will skip the source). ``dispatch`` sends a task by name
    with its message options (``app.send_task``)."""

    def send(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
        task, args, task_id, options = message(settings, batch, task_ids)
        dispatch(task, args, {"force": True}, task_id=task_id, queue=queue, **options)

    result = dispatch_pass(client, settings, queue, [entry], send, False, check=True)
    if result.sent:
        return "sent"
    if result.failed:
        return "failed"
    return next(iter(result.skipped), "failed")


def hold_lock(client: redis.Redis, settings: Settings, holder: str) -> tuple[bool, str]:
    """Take or refresh the dispatch lock: (this beat holds it, who holds it).

    With Sentinel, the lock counts only once a replica has it (``WAIT`` on the connection that
    took it): a lock a failover could take back would let a standby take it too, on the new
    primary, while this beat still dispatched — two holders."""
    pipe = client.pipeline(transaction=False)
    _LOCK.queue(pipe, [keys.BEAT_LOCK.key(settings)], [holder, int(settings.beat_lock_ttl * 1000)])
    waited = replicas.queue_wait(pipe, settings)
    replies = execute(pipe)
    held, who = replies[0]
    if waited and int(held):
        try:
            replicas.check(replies[-1], settings, "the dispatch lock")
        except replicas.NotReplicated as exc:
            log.warning("[beat] %s: not dispatching this pass", exc)
            return False, str(who)
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
