"""Keeping the location structures bounded, and reporting on them (buffer health metrics).

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
from typing import Any

from tasks.locations.batches import expire_buffer_age, fall_back
from tasks.locations.buffer import FAILED_BATCHES_CAP, LocationStore, payload, redis_now
from workers.core import keys
from workers.core.maintenance import declare_cleanup
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section

log = logging.getLogger(__name__)


def expire_stale_markers(store: LocationStore) -> int:
    """Fall back alerts whose marker is older than MOONSHOT_MAX_ALERT_BATCH_AGE.

    Catches alerts stuck anywhere — in a batch whose task vanished, or evicted by a worker that
    died before writing the fallback.
    """
    total = 0
    while ids := store.older_than(store.keys.queued, store.settings.moonshot_max_alert_batch_age):
        total += fall_back(store, ids, "stale_marker")
        store.client.zrem(store.keys.queued, *ids)  # ids whose payload was already gone
    return total


def drop_old_failed_records(store: LocationStore) -> int:
    """Failed-batch records are newest first; pop the tail while it is too old."""
    cutoff = redis_now(store.client) - store.settings.moonshot_max_alert_batch_age
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
    orphans = [
        b
        for b in store.client.hkeys(store.keys.retries)
        if store.client.zscore(store.keys.lease, b) is None
    ]
    return int(store.client.hdel(store.keys.retries, *orphans)) if orphans else 0


def migrate_round_one_alerts(store: LocationStore) -> int:
    """Alerts left waiting by a round-1 deployment kept their text in ``alert:{id}`` hashes:
    move each into ``loc:alerts`` so it is located like any other."""
    moved = 0
    pattern = keys.LEGACY_ALERT.glob(store.settings)
    prefix = keys.LEGACY_ALERT.prefix_of(store.settings)
    for key in store.client.scan_iter(match=pattern, count=500):
        fields: dict[str, str] = store.client.hgetall(key)  # type: ignore[assignment]
        store.client.hsetnx(store.keys.alerts, str(key)[len(prefix) :], payload(fields))
        store.client.delete(key)
        moved += 1
    return moved


def location_cleanup(rt: Runtime) -> dict[str, Any]:
    """The location stage's cleanup step; returns counts, logs the health line."""
    store = LocationStore(rt.redis, rt.settings)
    migrated = migrate_round_one_alerts(store)
    leases, returned, evicted = store.reap()
    counts = {
        "migrated_alerts": migrated,
        "expired_leases": leases,
        "returned_to_buffer": returned,
        "evicted": fall_back(store, evicted, "buffer_full") if evicted else 0,
        "stale_buffer_items": expire_buffer_age(store),
        "stale_markers": expire_stale_markers(store),
        "failed_batch_records": drop_old_failed_records(store),
        "retry_counters": drop_orphan_retry_counters(store),
    }
    buffer = buffer_health(store, redis_now(rt.redis))
    failed = int(rt.redis.hget(store.keys.stats, "batches_failed") or 0)
    log.info(
        "[location] buffer %d/%d (%.1f%%), max_age %.1fs, failed_batches %d",
        buffer["size"],
        buffer["max"],
        buffer["utilization_pct"],
        buffer["max_age_s"],
        failed,
    )
    return counts


def buffer_health(store: LocationStore, now: float) -> dict[str, Any]:
    """Size against the cap, utilisation, average and maximum item age (seconds)."""
    rows: list[tuple[str, float]] = store.client.zrange(  # type: ignore[assignment]
        store.keys.buffer, 0, -1, withscores=True
    )
    scores = [score for _, score in rows]
    size, cap = len(scores), store.settings.moonshot_max_buffer_size
    ages = [max(0.0, now - float(s)) for s in scores]
    return {
        "size": size,
        "max": cap,
        "utilization_pct": round(100.0 * size / cap, 1),
        "avg_age_s": round(sum(ages) / size, 1) if size else 0.0,
        "max_age_s": round(max(ages), 1) if ages else 0.0,
    }


def location_status(rt: Runtime) -> dict[str, Any]:
    """The ``locations`` section: buffer health, batches, methods, fallbacks, leases, keys."""
    store = LocationStore(rt.redis, rt.settings)
    now = redis_now(rt.redis)
    stats = {str(k): int(v) for k, v in rt.redis.hgetall(store.keys.stats).items()}

    def group(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: v for k, v in sorted(stats.items()) if k.startswith(prefix)}

    oldest = rt.redis.zrange(store.keys.queued, 0, 0, withscores=True)
    raw_error = rt.redis.get(store.keys.last_error)
    s = rt.settings
    return {
        "resolver": "moonshot" if s.moonshot_api_key else "gazetteer",
        "buffer": buffer_health(store, now),
        "batches": {
            "succeeded": stats.get("batches_succeeded", 0),
            "retried": stats.get("batches_retried", 0),
            "failed": stats.get("batches_failed", 0),
        },
        "located_by_method": group("located:"),
        "fallback_by_reason": group("fallback:"),
        "errors_by_reason": group("errors:"),
        "resolver_calls": group("calls:"),
        "leases_outstanding": int(rt.redis.zcard(store.keys.lease)),
        "awaiting_location": int(rt.redis.zcard(store.keys.queued)),
        "oldest_marker_age_s": round(now - float(oldest[0][1]), 1) if oldest else 0.0,
        "last_error": json.loads(str(raw_error)) if raw_error else None,
        "keys": key_sizes(rt, store, len(stats)),
    }


def key_sizes(rt: Runtime, store: LocationStore, stats_fields: int) -> dict[str, Any]:
    """Every location key with its size against its bound (one pipeline)."""
    k, s = store.keys, rt.settings
    pipe = rt.redis.pipeline(transaction=False)
    for call, key in (
        (pipe.zcard, k.buffer),
        (pipe.zcard, k.queued),
        (pipe.zcard, k.lease),
        (pipe.hlen, k.retries),
        (pipe.llen, k.failed),
        (pipe.xlen, k.stream),
        (pipe.hlen, k.alerts),
        (pipe.hlen, k.batches),
    ):
        call(key)
    buffer, queued, leases, retries, failed, stream, alerts, batches = (
        int(n) for n in pipe.execute()
    )
    cap, age = s.moonshot_max_buffer_size, s.moonshot_max_alert_batch_age
    return {
        "buffer": {"key": k.buffer, "size": buffer, "cap": cap},
        "markers": {"key": k.queued, "size": queued, "max_age_s": age},
        "leases": {"key": k.lease, "size": leases, "lease_s": s.location_lease},
        "batches": {"key": k.batches, "size": batches},
        "retry_counters": {"key": k.retries, "size": retries},
        "failed_batches": {"key": k.failed, "size": failed, "cap": FAILED_BATCHES_CAP},
        "stats_fields": {"key": k.stats, "size": stats_fields},
        "locations_stream": {"key": k.stream, "size": stream, "cap": s.max_alerts},
        # One field per alert awaiting a location (deleted when located): as many as markers.
        "alerts": {"key": k.alerts, "size": alerts},
    }


def render(section: dict[str, Any]) -> list[str]:
    buf = section.get("buffer", {})
    batches = section.get("batches", {})
    lines = [
        f"  resolver {section.get('resolver')}; buffer {buf.get('size')}/{buf.get('max')}"
        f" ({buf.get('utilization_pct')}%), avg_age {buf.get('avg_age_s')}s, max_age "
        f"{buf.get('max_age_s')}s; leases {section.get('leases_outstanding')}",
        f"  batches ok {batches.get('succeeded', 0)}, retried {batches.get('retried', 0)},"
        f" failed {batches.get('failed', 0)}; located "
        + (", ".join(f"{k} {v}" for k, v in section.get("located_by_method", {}).items()) or "none")
        + "; fallbacks "
        + (
            ", ".join(f"{k} {v}" for k, v in section.get("fallback_by_reason", {}).items())
            or "none"
        ),
    ]
    if section.get("last_error"):
        lines.append(f"  last error: {section['last_error']}")
    return lines


declare_cleanup(location_cleanup)
SECTION = declare_section(
    StatusSection(
        "locations", location_status, render, declared_metrics("tasks.locations", "locations")
    )
)
