"""Location tasks: hand alerts to batching, flush the buffer, locate one batch.

Thin wrappers over ``tasks.locations.batches``. Where results go: each located alert is
updated in place (its ``alert:{id}`` hash gets ``location``, ``location_method`` and
``fallback_reason``) and appended to the capped ``locations`` stream, which
``watchkeeper tail locations`` shows — entries of the ``alerts`` stream cannot be edited.

Flushes come from beat (every WATCHKEEPER_LOCATION_FLUSH_INTERVAL) and from ``enqueue_alerts``
once a full batch waits (at most one such flush pending, via a short-lived Redis flag). A flush
claims leased batches and sends one ``locate_batch`` task per batch; a failing batch is retried
through Celery's retry with the backoff ``process_batch`` chooses.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from tasks.locations.batches import claim_flush_flag, enqueue, flush, handed_over, process_batch
from tasks.locations.buffer import LocationStore
from workers.core.maintenance import PeriodicEntry, declare_periodic
from workers.core.runtime import Runtime, get_runtime
from workers.store.seen import Handoff

log = logging.getLogger(__name__)


def location_handoff(rt: Runtime) -> Handoff:
    """Where a feed poll hands new alerts, in the same atomic step that writes them."""
    return LocationStore(rt.redis, rt.settings).handoff()


def alerts_handed_over(rt: Runtime, placed: list[str], evicted: list[str]) -> dict[str, int]:
    """After a feed poll handed alerts over: locate those its feed placed, fall back the
    evicted, and start a flush once a full batch waits. Nothing here can lose an alert: each
    already has its marker, so a worker dying now leaves it to a flush or the stale-marker
    expiry."""
    counts = handed_over(LocationStore(rt.redis, rt.settings), placed, evicted)
    if claim_flush_flag(rt):
        flush_locations.apply_async()
    return counts


def enqueue_alerts(
    rt: Runtime, alerts: list[tuple[str, dict[str, Any]]], trigger_flush: bool = True
) -> dict[str, int]:
    """Hand new alerts (stream id, alert fields) to location batching."""
    if not alerts:
        return {"feed": 0, "buffered": 0, "evicted": 0}
    counts = enqueue(rt, alerts)
    if trigger_flush and claim_flush_flag(rt):
        flush_locations.apply_async()
    return counts


@shared_task(name="tasks.locations.flush_locations")
def flush_locations() -> int:
    """Claim every waiting batch and dispatch it; return the number of batches."""
    rt = get_runtime()
    batches = flush(rt)
    for batch_id in batches:
        locate_batch.apply_async((batch_id,))
    return len(batches)


@shared_task(name="tasks.locations.locate_batch", bind=True, max_retries=None)
def locate_batch(self: Any, batch_id: str) -> dict[str, Any]:
    """Locate one leased batch; on a retryable failure, retry after the chosen backoff."""
    outcome = process_batch(get_runtime(), batch_id)
    if outcome.status == "retry":
        log.info("[location] batch %s retry in %.1fs", batch_id, outcome.retry_in)
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    if outcome.status == "failed":
        log.warning(
            "[location] batch %s permanently failed, %d alerts fell back",
            batch_id,
            outcome.fell_back,
        )
    return {"status": outcome.status, "located": outcome.located, "fell_back": outcome.fell_back}


declare_periodic(
    PeriodicEntry(
        "maintenance:locations",
        "tasks.locations.flush_locations",
        lambda settings: settings.location_flush_interval,
    )
)
