"""Location batching as plain functions: enqueue, flush (claim batches), process one batch.

The Celery tasks in ``tasks.locations`` only call these. Every path that gives an alert its
location ends in ``LocationStore.finish``, which locates an alert at most once however many
workers race (see ``workers.location_buffer``). Failure handling, per the seed's defaults:

* a retryable resolver error (429 honouring Retry-After, 5xx, timeout, a malformed response)
  retries the whole batch with backoff — WATCHKEEPER_LOCATION_RETRY_BACKOFF doubling — up to
  MOONSHOT_MAX_RETRIES, then abandons it: every alert gets the gazetteer's answer with
  ``location_method = "fallback"`` and the batch counts as failed;
* a fatal error (401/403, other 4xx) falls back at once and is shown in status;
* ids the API left out or answered malformed are retried alone (the batch shrinks to them),
  then fall back with reason ``missing_id`` / ``malformed_item``; ids it added are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.gazetteer import GazetteerResolver, get_gazetteer
from workers.location_buffer import CHUNK, LocationStore
from workers.location_model import Resolver, ResolverError, ResolveResult
from workers.runtime import Runtime
from workers.settings import Settings


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one attempt at a batch; ``retry_in`` is set when status is "retry"."""

    status: str  # succeeded | retry | failed | gone
    located: int = 0
    fell_back: int = 0
    retry_in: float = 0.0


def make_resolver(settings: Settings) -> Resolver:
    """Moonshot when an API key is set, else the offline gazetteer."""
    if settings.moonshot_api_key:
        from workers.moonshot import MoonshotResolver

        return MoonshotResolver(settings)
    return GazetteerResolver()


def fall_back(store: LocationStore, ids: Sequence[str], reason: str,
              now: float | None = None) -> int:
    """Give still-unlocated ``ids`` the gazetteer's answer, method "fallback"; return how many."""
    gaz = get_gazetteer()
    done = 0
    for start in range(0, len(ids), CHUNK):
        items = store.pending(ids[start:start + CHUNK])
        done += len(store.finish([(i, gaz.locate(text), "fallback", reason)
                                  for i, text in items], now=now))
    return done


def enqueue(rt: Runtime, alerts: Sequence[tuple[str, dict[str, Any]]],
            now: float | None = None) -> dict[str, int]:
    """Locate feed-placed alerts at once, buffer the rest, fall back the evicted."""
    store = LocationStore(rt.redis, rt.settings)
    placed = [a for a in alerts if _has_coordinates(a[1])]
    rest = [a for a in alerts if not _has_coordinates(a[1])]
    located = len(store.write_feed_locations(placed, now=now)) if placed else 0
    evicted = store.enqueue(rest, now=now) if rest else []
    fell_back = fall_back(store, evicted, "buffer_full", now=now) if evicted else 0
    return {"feed": located, "buffered": len(rest) - len(evicted), "evicted": fell_back}


def claim_flush_flag(rt: Runtime) -> bool:
    """True for the one caller that may enqueue a flush now (a short-lived Redis flag)."""
    store = LocationStore(rt.redis, rt.settings)
    if int(rt.redis.zcard(store.keys.buffer)) < rt.settings.location_batch:
        return False
    ttl = max(5, rt.settings.location_flush_interval)
    return bool(rt.redis.set(store.keys.flush_flag, "1", nx=True, ex=ttl))


def expire_buffer_age(store: LocationStore, now: float) -> int:
    """Fall back buffered alerts older than MOONSHOT_MAX_BUFFER_AGE (reason buffer_age)."""
    cutoff = now - store.settings.moonshot_max_buffer_age
    total = 0
    while ids := store.older_than(store.keys.buffer, cutoff):
        total += fall_back(store, ids, "buffer_age", now=now)
        store.client.zrem(store.keys.buffer, *ids)
    return total


def flush(rt: Runtime, now: float | None = None, max_batches: int | None = None) -> list[str]:
    """Return expired leases, age the buffer, and claim batches; return their batch ids."""
    now = time.time() if now is None else now
    settings = rt.settings
    store = LocationStore(rt.redis, settings)
    rt.redis.delete(store.keys.flush_flag)
    _, _, evicted = store.reap(now)
    if evicted:
        fall_back(store, evicted, "buffer_full", now=now)
    expire_buffer_age(store, now)
    limit = max_batches or settings.moonshot_max_buffer_size // settings.location_batch + 1
    batches = []
    for _ in range(limit):
        batch_id, ids = store.claim(now=now)
        if not ids:
            break
        batches.append(batch_id)
    return batches


def process_batch(rt: Runtime, batch_id: str, resolver: Resolver | None = None,
                  now: float | None = None) -> BatchOutcome:
    """Resolve one claimed batch; say whether to retry it, and after how long."""
    now = time.time() if now is None else now
    store = LocationStore(rt.redis, rt.settings)
    ids = store.members(batch_id)
    if ids is None:  # its lease expired and the reaper returned it; someone else has it
        return BatchOutcome("gone")
    items = store.pending(ids)
    if not items:
        store.release(batch_id)
        return BatchOutcome("succeeded")
    resolver = resolver or make_resolver(rt.settings)
    store.count(f"calls:{resolver.method}")
    try:
        result = resolver.resolve(items)
    except ResolverError as exc:
        store.count(f"errors:{exc.reason}")
        store.record_error(f"{resolver.method}: {exc}", now)
        wanted = [i for i, _ in items]
        if exc.retryable:
            return _retry_or_abandon(store, batch_id, wanted, exc.reason, exc.retry_after, now)
        return _abandon(store, batch_id, wanted, exc.reason, now)
    return _apply(store, batch_id, items, result, resolver.method, now)


def _apply(store: LocationStore, batch_id: str, items: Sequence[tuple[str, str]],
           result: ResolveResult, method: str, now: float) -> BatchOutcome:
    wanted = {i for i, _ in items}
    located = store.finish([(i, loc, method, "") for i, loc in result.located.items()
                            if i in wanted], now=now)
    missing = [i for i in result.missing if i in wanted]
    malformed = [i for i in result.malformed if i in wanted]
    missing += [i for i in wanted - set(result.located) - set(missing) - set(malformed)]
    if missing or malformed:
        attempts = store.add_retry(batch_id)
        if attempts <= store.settings.moonshot_max_retries:
            return _schedule_retry(store, batch_id, missing + malformed, None, attempts, now,
                                   located=len(located))
        fell = fall_back(store, missing, "missing_id", now) + fall_back(
            store, malformed, "malformed_item", now)
        store.release(batch_id)
        store.count("batches_succeeded")
        return BatchOutcome("succeeded", located=len(located), fell_back=fell)
    store.release(batch_id)
    store.count("batches_succeeded")
    return BatchOutcome("succeeded", located=len(located))


def _retry_or_abandon(store: LocationStore, batch_id: str, ids: list[str], reason: str,
                      retry_after: float | None, now: float) -> BatchOutcome:
    attempts = store.add_retry(batch_id)
    if attempts <= store.settings.moonshot_max_retries:
        return _schedule_retry(store, batch_id, ids, retry_after, attempts, now)
    return _abandon(store, batch_id, ids, "retries_exhausted", now)


def _schedule_retry(store: LocationStore, batch_id: str, ids: list[str],
                    retry_after: float | None, attempts: int, now: float,
                    located: int = 0) -> BatchOutcome:
    settings = store.settings
    delay = settings.location_retry_backoff * 2 ** (attempts - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    delay = min(delay, float(settings.location_lease))
    store.set_members(batch_id, ids)
    store.extend_lease(batch_id, now + delay + settings.location_lease)
    store.count("batches_retried")
    return BatchOutcome("retry", located=located, retry_in=delay)


def _abandon(store: LocationStore, batch_id: str, ids: list[str], reason: str,
             now: float) -> BatchOutcome:
    fell = fall_back(store, ids, reason, now)
    store.record_failed(batch_id, len(ids), reason, now)
    store.release(batch_id)
    store.count("batches_failed")
    return BatchOutcome("failed", fell_back=fell)


def _has_coordinates(fields: dict[str, Any]) -> bool:
    coords = fields.get("coordinates")
    if not isinstance(coords, dict):
        return False
    try:
        float(coords["lat"])
        float(coords["lon"])
    except (KeyError, TypeError, ValueError):
        return False
    return True
