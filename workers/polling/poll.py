"""The one poll loop every source kind runs: claim, collect, then one round trip that writes.

1. Claim: take the source's lock, read its state and Redis's time, and take the host's request
   slot for the first fetch, in one round trip. A
   scheduled poll of a source being polled elsewhere, paused, or not yet due (backing off) is
   skipped — not queued. Due times are on Redis's clock, shared by every worker.
2. Collect: the kind's work (fetch and parse a feed; crawl a site's pages). Any failure is
   this source's error, never raised: the others keep polling.
3. Write, in one round trip and in this order: dedup the items against the source's seen-set,
   append the new ones to the kind's stream and hand them to the kind's hand-off queue, all in
   one atomic call (``workers/store/lua/seen_add.lua``); store the state (validators only with
   the entries they cover, error streak, next due time); release the host slot and the lock.
   A poll therefore costs two round trips when its work is one request. A worker dying
   before this loses nothing: the next poll fetches the same items again; dying after it,
   nothing is written twice and nothing written is left behind.
4. Call the kind's ``written`` hook (location fallbacks of evicted alerts, session history).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery import current_task

from workers.core import keys
from workers.core.redact import redact_text
from workers.core.runtime import Runtime
from workers.core.sources_file import Source
from workers.polling.dispatch import clear_queued, queued_key
from workers.polling.errors import SourceError
from workers.polling.fetch import host_of
from workers.polling.freshness import next_wait
from workers.polling.kinds import POLL_HOOKS, Collected, SourceKind, kind_of
from workers.polling.locks import queue_release
from workers.polling.politeness import poll_slots, queue_release_slots
from workers.polling.state import SourceState, backoff_delay, claim, queue_save
from workers.store.scripts import execute
from workers.store.seen import Added, SeenSet
from workers.store.streams import CappedStream
from workers.store.streams import output_stream as store_output_stream

log = logging.getLogger(__name__)

MAX_MESSAGE = 500
"""Characters kept of one error or warning: they quote URLs a hostile source chooses."""


def seen_set(rt: Runtime, name: str) -> SeenSet:
    s = rt.settings
    return SeenSet(rt.redis, keys.SEEN.key(s, name), s.max_seen, s.seen_max_age)


def output_stream(rt: Runtime, name: str) -> CappedStream:
    return store_output_stream(rt.redis, rt.settings, name)


def poll_source(
    rt: Runtime,
    source: Source,
    kind: SourceKind,
    *,
    scheduled: bool = True,
    show_items: bool = False,
    queued: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """One poll of ``source``. ``scheduled=False`` (``watchkeeper poll``, "check now") ignores
    the due time and a pause, but never the lock. ``queued``: the dispatched task's marker
    (key, task id), cleared as the poll claims the source."""
    with poll_slots():
        return _poll(rt, source, kind, scheduled, show_items, queued)


def _poll(
    rt: Runtime,
    source: Source,
    kind: SourceKind,
    scheduled: bool,
    show_items: bool,
    queued: tuple[str, str] | None,
) -> dict[str, Any]:
    started, clock = time.time(), time.monotonic()
    token, state, now = claim(
        rt.redis, rt.settings, source.name, host_of(source.url), scheduled=scheduled, queued=queued
    )
    if token is None:
        if scheduled:
            return result(source, "skipped", started, reason="being polled by another worker")
        message = f"source '{source.name}': being polled by another worker"
        return result(source, "error", started, error=message)
    lock: str | None = token
    try:
        if scheduled and state.paused:
            return result(source, "skipped", started, reason="paused")
        if scheduled and not state.due(now):
            return result(source, "skipped", started, reason="not due", next_check=state.next_check)
        collected = _collect(rt, source, kind, state)
        elapsed = time.monotonic() - clock
        outcome, values, due_in, now_fields = _outcome(rt, source, state, collected, now, elapsed)
        values["last_elapsed_s"] = round(time.time() - started, 3)
        added = write(rt, source, kind, values, token, collected, now, due_in, now_fields)
        lock = None
        _after_poll(rt, source, kind, values, state.errors, len(added.new))
        if collected.status != "error":
            outcome["new"] = len(added.new)
            outcome["duplicate"] = len(collected.items) - len(added.new)
        outcome["elapsed_s"] = round(time.time() - started, 3)
        if kind.written is not None:
            outcome.update(kind.written(rt, source, collected, added) or {})
        if show_items and collected.status != "error":
            fresh = {index for index, _ in added.new}
            outcome["items"] = [
                {**item.fields, "new": index in fresh} for index, item in enumerate(collected.items)
            ]
        return outcome
    finally:
        if lock is not None:
            pipe = rt.redis.pipeline(transaction=False)
            queue_release_slots(pipe, rt.settings)
            queue_release(pipe, rt.settings, source.name, lock)
            execute(pipe)


def _after_poll(
    rt: Runtime, source: Source, kind: SourceKind, values: dict[str, Any], errors: int, new: int
) -> None:
    for hook in POLL_HOOKS:
        try:
            hook(rt, source, kind.stream, values, errors, new)
        except Exception:  # a follower's fault never fails the poll
            log.exception("[poll] %r: poll hook failed", source.name)


def _collect(rt: Runtime, source: Source, kind: SourceKind, state: SourceState) -> Collected:
    try:
        return kind.collect(rt, source, state)
    except Exception as exc:  # any failure is this source's error; others keep polling
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, SourceError):
            message = f"{type(exc).__name__}: {message}"
        return Collected(
            "error",
            error=message,
            http_status=getattr(exc, "status", None),
            retry_after=getattr(exc, "retry_after", None),
        )


def _outcome(
    rt: Runtime,
    source: Source,
    state: SourceState,
    collected: Collected,
    now: float,
    elapsed: float = 0.0,
) -> tuple[dict[str, Any], dict[str, Any], float, tuple[str, ...]]:
    """The poll's result, the state fields to store, when the source is due again (seconds
    from the write, on Redis's clock, counted from the poll's start ``elapsed`` ago) and the
    fields stamped with that time. After a success the wait is the interval, or what the source
    said within its clamps (``workers.polling.freshness``); after an error the backoff or the
    server's Retry-After. Either way ``next_check_reason`` says which."""
    error = redact_text(collected.error)[:MAX_MESSAGE] if collected.error else None
    values: dict[str, Any] = {
        "last_status": collected.status,
        "last_poll": now,
        "last_http_status": collected.http_status,
        "last_fetched": len(collected.items),
        "last_bad": collected.bad,
        "last_error": error or "",
        "last_warning": redact_text(collected.warning)[:MAX_MESSAGE] if collected.warning else "",
        **collected.values,
    }
    outcome = result(
        source,
        collected.status,
        now,
        fetched=len(collected.items),
        bad=collected.bad,
        error=error,
        **collected.extra,
    )
    if collected.status != "error":
        wait, reason = next_wait(rt.settings, source, collected.freshness, now)
        values.update(errors=0, last_ok=now, backoff_s=0, next_check_reason=reason)
        outcome.update(next_check=now + wait, next_check_reason=reason)
        return outcome, values, max(0.0, wait - elapsed), ()
    errors = state.errors + 1
    delay = backoff_delay(rt.settings, errors, collected.retry_after)
    reason = (
        f"retry-after {collected.retry_after:g}s"
        if collected.retry_after is not None
        else f"backoff (error {errors})"
    )
    log.warning(
        "[poll] source %r: %s (error %d, next try in %.0fs)", source.name, error, errors, delay
    )
    values.update(
        errors=errors,
        backoff_s=round(delay, 3),
        retry_after=collected.retry_after,
        last_new=0,
        last_duplicate=0,
        next_check_reason=reason,
    )
    outcome.update(next_check=now + delay, next_check_reason=reason)
    return outcome, values, delay, ("last_error_at",)


def write(
    rt: Runtime,
    source: Source,
    kind: SourceKind,
    values: dict[str, Any],
    token: str | None,
    collected: Collected,
    started: float = 0.0,
    due_in: float | None = None,
    now_fields: tuple[str, ...] = (),
) -> Added:
    """Dedup, append and hand off the items, store the state, release the host slots the poll
    holds and the lock: one round trip. Keys the seen-set touched since ``started`` (this
    poll) are never trimmed."""
    pipe = rt.redis.pipeline(transaction=False)
    items = [(item.key, item.fields) for item in collected.items]
    handoff = kind.handoff(rt, source) if kind.handoff is not None else None
    calls = 0
    if items:
        calls = seen_set(rt, source.name).queue_add_and_append(
            pipe,
            output_stream(rt, kind.stream),
            items,
            counts_key=keys.SOURCE_STATE.key(rt.settings, source.name),
            protect_since=started,
            handoff=handoff,
            payloads=[item.handoff for item in collected.items] if handoff else (),
        )
    else:
        values = {**values, "last_new": 0, "last_duplicate": 0}
    queue_save(pipe, rt.settings, source, values, due_in, now_fields)
    queue_release_slots(pipe, rt.settings)
    if token is not None:
        queue_release(pipe, rt.settings, source.name, token)
    return SeenSet.parse_add_and_append(execute(pipe)[:calls])


def result(
    source: Source,
    status: str,
    started: float,
    *,
    fetched: int = 0,
    new: int = 0,
    bad: int = 0,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "source": source.name,
        "status": status,
        "fetched": fetched,
        "new": new,
        "duplicate": fetched - new,
        "bad": bad,
        "error": error,
        "elapsed_s": round(max(0.0, time.time() - started), 3),
        **extra,
    }


def poll_now(rt: Runtime, source: Source, show_items: bool = False) -> dict[str, Any]:
    """One poll now (``watchkeeper poll``): ignores the backoff, never the lock."""
    return poll_source(rt, source, kind_of(source), scheduled=False, show_items=show_items)


def poll_by_name(
    rt: Runtime,
    kind: SourceKind,
    name: str,
    force: bool = False,
    task_id: str | None = None,
    resolved: Mapping[str, Source | None] | None = None,
) -> dict[str, Any]:
    """The body of every kind's scheduled-poll task: a source no longer in the source
    registry, or of another kind now, is skipped. ``force`` ("check now") ignores the due time.
    ``task_id``: the dispatch's id for this poll (its queued marker's value); by default the
    running task's (a batch passes each poll's own). ``resolved``: sources already read from
    the registry (a batch reads all of its own in one round trip)."""
    if task_id is None:
        task_id = getattr(current_task.request, "id", None) if current_task else None
    queued = (queued_key(rt.settings, kind.name, name), str(task_id)) if task_id else None
    source = resolved[name] if resolved is not None and name in resolved else rt.sources.get(name)
    if source is None or source.kind != kind.name:
        log.info("[poll] %r is no longer a configured %s; skipped", name, kind.name)
        if queued is not None:
            clear_queued(rt.redis, *queued)
        return {"source": name, "status": "skipped", "reason": f"not a configured {kind.name}"}
    outcome = poll_source(rt, source, kind, scheduled=not force, queued=queued)
    outcome.pop("items", None)
    return outcome
