"""Location batching as plain functions: enqueue, flush (claim batches), process one batch.

The Celery tasks in ``tasks.locations`` only call these. Every path that gives an alert its
location ends in ``LocationStore.finish``, which locates an alert at most once however many
workers race (see ``tasks.locations.buffer``). Failure handling:

* a retryable resolver error (429 honouring Retry-After, 5xx, timeout, a malformed response)
  retries the whole batch with backoff — WATCHKEEPER_LOCATION_RETRY_BACKOFF doubling — up to
  MOONSHOT_MAX_RETRIES, then abandons it: every alert gets the gazetteer's answer with
  ``location_method = "fallback"`` and the batch counts as failed;
* a fatal error (401/403, other 4xx) falls back at once and is shown in status;
* ids the API left out or answered malformed are retried alone (the batch shrinks to them),
  then fall back with reason ``missing_id`` / ``malformed_item``; ids it added are ignored;
* an alert whose feed gave a point is located by that point (method ``feed``) wherever it
  is found — at hand-over, in a batch, or when it would otherwise fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.locations.buffer import IDS_PER_CALL, LocationStore, Pending, coordinates_of
from tasks.locations.model import Location, Resolver, ResolverError, ResolveResult
from tasks.locations.resolvers import make_resolver
from tasks.locations.resolvers.gazetteer import get_gazetteer
from workers.core.runtime import Runtime
from workers.store import replicas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one attempt at a batch; ``retry_in`` is set when status is "retry"."""

    status: str  # succeeded | retry | failed | gone
    located: int = 0
    fell_back: int = 0
    retry_in: float = 0.0


def point(coordinates: tuple[float, float]) -> Location:
    return Location("", "", "", coordinates[0], coordinates[1], "point")


def locate_by_feed(store: LocationStore, items: Sequence[Pending]) -> list[str]:
    """Alerts whose feed gave a point: located by it, method "feed", no resolver."""
    return store.finish(
        [(a.id, point(a.coordinates), "feed", "") for a in items if a.coordinates is not None]
    )


def fall_back(store: LocationStore, ids: Sequence[str], reason: str) -> int:
    """Give still-unlocated ``ids`` the gazetteer's answer, method "fallback" (their feed's
    point when they have one); return how many this call located."""
    gaz = get_gazetteer()
    done = 0
    for start in range(0, len(ids), IDS_PER_CALL):
        items = store.pending(ids[start : start + IDS_PER_CALL])
        done += len(locate_by_feed(store, items))
        done += len(
            store.finish(
                [
                    (a.id, gaz.locate(a.text), "fallback", reason)
                    for a in items
                    if a.coordinates is None
                ]
            )
        )
    return done


def handed_over(
    store: LocationStore, placed: Sequence[str], evicted: Sequence[str]
) -> dict[str, int]:
    """After alerts entered the buffer: locate those whose feed gave a point at once, fall back
    those the buffer evicted to stay within its cap."""
    located = len(locate_by_feed(store, store.pending(placed))) if placed else 0
    fell_back = fall_back(store, evicted, "buffer_full") if evicted else 0
    return {"feed": located, "evicted": fell_back}


def enqueue(rt: Runtime, alerts: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Buffer alerts, locate feed-placed ones at once, fall back the evicted."""
    store = LocationStore(rt.redis, rt.settings)
    evicted = store.enqueue(alerts)
    placed = [a for a, fields in alerts if coordinates_of(fields) is not None]
    counts = handed_over(store, placed, evicted)
    return {**counts, "buffered": len(alerts) - len(placed) - counts["evicted"]}


def claim_flush_flag(rt: Runtime) -> bool:
    """True for the one caller that may enqueue a flush now (a short-lived Redis flag)."""
    store = LocationStore(rt.redis, rt.settings)
    if int(rt.redis.zcard(store.keys.buffer)) < rt.settings.location_batch:
        return False
    ttl = max(5, rt.settings.location_flush_interval)
    return bool(rt.redis.set(store.keys.flush_flag, "1", nx=True, ex=ttl))


def expire_buffer_age(store: LocationStore) -> int:
    """Fall back buffered alerts older than MOONSHOT_MAX_BUFFER_AGE (reason buffer_age)."""
    total = 0
    while ids := store.older_than(store.keys.buffer, store.settings.moonshot_max_buffer_age):
        total += fall_back(store, ids, "buffer_age")
        store.client.zrem(store.keys.buffer, *ids)
    return total


def flush(rt: Runtime, max_batches: int | None = None) -> list[str]:
    """Return expired leases, age the buffer, and claim batches; return their batch ids."""
    settings = rt.settings
    store = LocationStore(rt.redis, settings)
    rt.redis.delete(store.keys.flush_flag)
    _, _, evicted = store.reap()
    if evicted:
        fall_back(store, evicted, "buffer_full")
    expire_buffer_age(store)
    limit = max_batches or settings.moonshot_max_buffer_size // settings.location_batch + 1
    batches = []
    for _ in range(limit):
        batch_id, ids = store.claim()
        if not ids:
            break
        batches.append(batch_id)
    if batches:
        # With Sentinel, a lease counts once a replica has it: one a failover took back would
        # return its alerts to the buffer while a worker resolved them (a second API call).
        # Unconfirmed, the batches are not sent; their leases expire and they come back.
        try:
            replicas.confirm(rt.redis, settings, "location batches")
        except replicas.NotReplicated as exc:
            log.warning("[location] %s: %d batches left to their leases", exc, len(batches))
            return []
    return batches


def process_batch(rt: Runtime, batch_id: str, resolver: Resolver | None = None) -> BatchOutcome:
    """Resolve one claimed batch; say whether to retry it, and after how long."""
    store = LocationStore(rt.redis, rt.settings)
    ids = store.members(batch_id)
    if ids is None:  # its lease expired and the reaper returned it; someone else has it
        return BatchOutcome("gone")
    pending = store.pending(ids)
    by_feed = locate_by_feed(store, pending)
    items = [(a.id, a.text) for a in pending if a.coordinates is None]
    if not items:
        store.release(batch_id, "batches_succeeded")
        return BatchOutcome("succeeded", located=len(by_feed))
    resolver = resolver or make_resolver(rt.settings)
    store.count(f"calls:{resolver.method}")
    try:
        result = resolver.resolve(items)
    except ResolverError as exc:
        store.count(f"errors:{exc.reason}")
        store.record_error(f"{resolver.method}: {exc}")
        wanted = [i for i, _ in items]
        if exc.retryable:
            return _retry_or_abandon(store, batch_id, wanted, exc.reason, exc.retry_after)
        return _abandon(store, batch_id, wanted, exc.reason)
    return _apply(store, batch_id, items, result, resolver.method)


def _apply(
    store: LocationStore,
    batch_id: str,
    items: Sequence[tuple[str, str]],
    result: ResolveResult,
    method: str,
) -> BatchOutcome:
    wanted = {i for i, _ in items}
    located = store.finish(
        [(i, loc, method, "") for i, loc in result.located.items() if i in wanted]
    )
    missing = [i for i in result.missing if i in wanted]
    malformed = [i for i in result.malformed if i in wanted]
    missing += [i for i in wanted - set(result.located) - set(missing) - set(malformed)]
    fell = 0
    if missing or malformed:
        attempts = store.add_retry(batch_id)
        if attempts <= store.settings.moonshot_max_retries:
            return _schedule_retry(
                store, batch_id, missing + malformed, None, attempts, located=len(located)
            )
        fell = fall_back(store, missing, "missing_id") + fall_back(
            store, malformed, "malformed_item"
        )
    store.release(batch_id, "batches_succeeded")
    return BatchOutcome("succeeded", located=len(located), fell_back=fell)


def _retry_or_abandon(
    store: LocationStore,
    batch_id: str,
    ids: list[str],
    reason: str,
    retry_after: float | None,
) -> BatchOutcome:
    attempts = store.add_retry(batch_id)
    if attempts <= store.settings.moonshot_max_retries:
        return _schedule_retry(store, batch_id, ids, retry_after, attempts)
    return _abandon(store, batch_id, ids, "retries_exhausted")


def _schedule_retry(
    store: LocationStore,
    batch_id: str,
    ids: list[str],
    retry_after: float | None,
    attempts: int,
    located: int = 0,
) -> BatchOutcome:
    settings = store.settings
    delay = settings.location_retry_backoff * 2 ** (attempts - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    delay = min(delay, float(settings.location_lease))
    if not store.extend(batch_id, ids, delay + settings.location_lease):
        return BatchOutcome("gone", located=located)
    store.count("batches_retried")
    return BatchOutcome("retry", located=located, retry_in=delay)


def _abandon(store: LocationStore, batch_id: str, ids: list[str], reason: str) -> BatchOutcome:
    fell = fall_back(store, ids, reason)
    store.record_failed(batch_id, len(ids), reason)
    store.release(batch_id, "batches_failed")
    return BatchOutcome("failed", fell_back=fell)
