"""Keeping the location structures bounded, and reporting on them (the seed's health metrics).

``location_cleanup`` is the cleanup step (every MOONSHOT_CLEANUP_INTERVAL): it returns expired
leases, falls back buffered alerts past MOONSHOT_MAX_BUFFER_AGE and markers past
MOONSHOT_MAX_ALERT_BATCH_AGE, drops failed-batch records of the same age and retry counters
whose batch is gone, then logs one line::

    [location] buffer 45/1000 (4.5%), max_age 123.4s, failed_batches 0

``location_status`` is the ``locations`` section of ``watchkeeper status``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from workers.location_batches import expire_buffer_age, fall_back
from workers.location_buffer import FAILED_BATCHES_CAP, LocationStore, alert_ttl
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def expire_stale_markers(store: LocationStore, now: float) -> int:
    """Fall back alerts whose batch-queued marker is older than MOONSHOT_MAX_ALERT_BATCH_AGE.

    Catches alerts stuck anywhere — in a batch whose task vanished, or evicted by a worker that
    died before writing the fallback.
    """
    cutoff = now - store.settings.moonshot_max_alert_batch_age
    total = 0
    while ids := store.older_than(store.keys.queued, cutoff):
        total += fall_back(store, ids, "stale_marker", now=now)
        store.client.zrem(store.keys.queued, *ids)  # ids whose alert hash had already expired
    return total


def drop_old_failed_records(store: LocationStore, now: float) -> int:
    """Failed-batch records are newest first; pop the tail while it is too old."""
    cutoff = now - store.settings.moonshot_max_alert_batch_age
    removed = 0
    while (raw := store.client.lindex(store.keys.failed, -1)) is not None:
        try:
            at = float(json.loads(str(raw)).get("at", 0))
        except (ValueError, AttributeError):
            at = 0.0
        if at >= cutoff:
            break
        store.client.rpop(store.keys.failed)
        removed += 1
    return removed


def drop_orphan_retry_counters(store: LocationStore) -> int:
    """Retry counters of batches that hold no lease any more."""
    orphans = [b for b in store.client.hkeys(store.keys.retries)
               if store.client.zscore(store.keys.lease, b) is None]
    return int(store.client.hdel(store.keys.retries, *orphans)) if orphans else 0


def location_cleanup(rt: Runtime, now: float | None = None) -> dict[str, Any]:
    """The location stage's cleanup step; returns counts, logs the health line."""
    now = time.time() if now is None else now
    store = LocationStore(rt.redis, rt.settings)
    leases, returned, evicted = store.reap(now)
    counts = {
        "expired_leases": leases,
        "returned_to_buffer": returned,
        "evicted": fall_back(store, evicted, "buffer_full", now=now) if evicted else 0,
        "stale_buffer_items": expire_buffer_age(store, now),
        "stale_markers": expire_stale_markers(store, now),
        "failed_batch_records": drop_old_failed_records(store, now),
        "retry_counters": drop_orphan_retry_counters(store),
    }
    buffer = buffer_health(store, now)
    failed = int(rt.redis.hget(store.keys.stats, "batches_failed") or 0)
    log.info("[location] buffer %d/%d (%.1f%%), max_age %.1fs, failed_batches %d",
             buffer["size"], buffer["max"], buffer["utilization_pct"], buffer["max_age_s"],
             failed)
    return counts


def buffer_health(store: LocationStore, now: float) -> dict[str, Any]:
    """Size against the cap, utilisation, average and maximum item age (seconds)."""
    rows: list[tuple[str, float]] = store.client.zrange(  # type: ignore[assignment]
        store.keys.buffer, 0, -1, withscores=True)
    scores = [score for _, score in rows]
    size, cap = len(scores), store.settings.moonshot_max_buffer_size
    ages = [max(0.0, now - float(s)) for s in scores]
    return {"size": size, "max": cap, "utilization_pct": round(100.0 * size / cap, 1),
            "avg_age_s": round(sum(ages) / size, 1) if size else 0.0,
            "max_age_s": round(max(ages), 1) if ages else 0.0}


def location_status(rt: Runtime) -> dict[str, Any]:
    """The ``locations`` section: buffer health, batches, methods, fallbacks, leases, keys."""
    now = time.time()
    store = LocationStore(rt.redis, rt.settings)
    stats = {str(k): int(v) for k, v in rt.redis.hgetall(store.keys.stats).items()}

    def group(prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix)}

    oldest = rt.redis.zrange(store.keys.queued, 0, 0, withscores=True)
    raw_error = rt.redis.get(store.keys.last_error)
    s = rt.settings
    return {
        "resolver": "moonshot" if s.moonshot_api_key else "gazetteer",
        "buffer": buffer_health(store, now),
        "batches": {"succeeded": stats.get("batches_succeeded", 0),
                    "retried": stats.get("batches_retried", 0),
                    "failed": stats.get("batches_failed", 0)},
        "located_by_method": group("located:"),
        "fallback_by_reason": group("fallback:"),
        "errors_by_reason": group("errors:"),
        "resolver_calls": group("calls:"),
        "leases_outstanding": int(rt.redis.zcard(store.keys.lease)),
        "awaiting_location": int(rt.redis.zcard(store.keys.queued)),
        "oldest_marker_age_s": round(now - float(oldest[0][1]), 1) if oldest else 0.0,
        "last_error": json.loads(str(raw_error)) if raw_error else None,
        "keys": {
            "buffer": {"key": store.keys.buffer, "size": int(rt.redis.zcard(store.keys.buffer)),
                       "cap": s.moonshot_max_buffer_size},
            "markers": {"key": store.keys.queued,
                        "size": int(rt.redis.zcard(store.keys.queued)),
                        "max_age_s": s.moonshot_max_alert_batch_age},
            "leases": {"key": store.keys.lease, "size": int(rt.redis.zcard(store.keys.lease)),
                       "lease_s": s.location_lease},
            "retry_counters": {"key": store.keys.retries,
                               "size": int(rt.redis.hlen(store.keys.retries))},
            "failed_batches": {"key": store.keys.failed,
                               "size": int(rt.redis.llen(store.keys.failed)),
                               "cap": FAILED_BATCHES_CAP},
            "stats_fields": {"key": store.keys.stats, "size": len(stats)},
            "locations_stream": {"key": store.keys.stream,
                                 "size": int(rt.redis.xlen(store.keys.stream)),
                                 "cap": s.max_alerts},
            # One hash per alert awaiting a location (deleted when located): as many as markers.
            "alert_hashes": {"key": store.keys.alert("*"),
                             "size": int(rt.redis.zcard(store.keys.queued)),
                             "ttl_s": alert_ttl(s)},
        },
    }

