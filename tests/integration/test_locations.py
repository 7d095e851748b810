"""Location batching end to end: real Redis, the real Celery worker, a real local API server."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from tasks.locations import enqueue_alerts
from tasks.locations.batches import enqueue, flush, process_batch
from tasks.locations.buffer import LocationStore
from tasks.locations.health import location_cleanup, location_status
from tasks.locations.resolvers.chat_completions import ChatCompletionsResolver
from tests.support.chat_api import ChatAPI
from tests.support.helpers import wait_for

KEY = "sk-test-SECRET-42"
TEXTS = [
    "Floods in Valencia force evacuations",
    "Wildfire near Athens spreads",
    "Earthquake shakes Tokyo",
    "Stock markets close higher",
    "Protest in Nairobi",
]


def alerts(n: int, start: int = 0) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"{1700000000000 + start + i}-0",
            {
                "source": "news",
                "title": TEXTS[(start + i) % len(TEXTS)],
                "summary": "",
                "link": f"https://example.org/{start + i}",
                "tags": [],
                "coordinates": None,
            },
        )
        for i in range(n)
    ]


def fast(rt: Any, **changes: Any) -> Any:
    """Small backoffs and timeouts so retries take a fraction of a second."""
    values: dict[str, Any] = {"location_retry_backoff": 0.1, "moonshot_timeout": 1.0}
    rt.settings = replace(rt.settings, **{**values, **changes})
    return rt


def with_api(rt: Any, api: ChatAPI, **changes: Any) -> Any:
    return fast(rt, moonshot_api_key=KEY, moonshot_base_url=api.base_url, **changes)


def located_entries(rt: Any) -> list[dict[str, Any]]:
    store = LocationStore(rt.redis, rt.settings)
    return [dict(f) for _, f in rt.redis.xrange(store.keys.stream)]


def located(rt: Any, alert_id: str) -> dict[str, Any]:
    """The result written for one alert (the locations stream holds results by alert id)."""
    return next(e for e in located_entries(rt) if e["alert"] == alert_id)


def all_done(rt: Any) -> bool:
    store = LocationStore(rt.redis, rt.settings)
    return rt.redis.zcard(store.keys.queued) == 0 and rt.redis.zcard(store.keys.lease) == 0


def methods(rt: Any) -> Counter[str]:
    return Counter(e["location_method"] for e in located_entries(rt))


def backdate(rt: Any, key: str, seconds: float) -> None:
    """Age every member of a sorted set by ``seconds`` (scores are Redis-time seconds)."""
    rows = rt.redis.zrange(key, 0, -1, withscores=True)
    if rows:
        rt.redis.zadd(key, {member: score - seconds for member, score in rows}, xx=True)


def flush_now(rt: Any) -> None:
    from tasks.locations.tasks import flush_locations

    flush_locations.apply_async()
    wait_for(lambda: all_done(rt), timeout=60, message="every alert located")


# --- gazetteer mode and feed coordinates ---------------------------------------------------


def test_full_batch_is_flushed_by_the_worker_and_located_by_the_gazetteer(runtime, worker) -> None:  # type: ignore[no-untyped-def]
    # Given no API key and a batch size of 20
    fast(runtime)
    # When 45 alerts are handed over (crossing a batch triggers a flush), and beat flushes
    enqueue_alerts(runtime, alerts(45))
    flush_now(runtime)
    # Then each alert is located once, in the locations stream, and its hash is released
    entries = located_entries(runtime)
    assert len(entries) == 45 and len({e["alert"] for e in entries}) == 45
    assert methods(runtime) == Counter({"gazetteer": 45})
    first = located(runtime, "1700000000000-0")
    assert first["location_method"] == "gazetteer" and first["located_at"]
    assert json.loads(first["location"])["name"] == "Valencia"
    assert runtime.redis.hlen("wk:loc:alerts") == 0
    status = location_status(runtime)
    assert status["batches"]["succeeded"] == 3 and status["buffer"]["size"] == 0
    assert status["leases_outstanding"] == 0


def test_alerts_with_feed_coordinates_skip_the_batch(runtime) -> None:  # type: ignore[no-untyped-def]
    batch = alerts(3)
    batch[0][1]["coordinates"] = {"lat": 51.5, "lon": -0.12}
    counts = enqueue(runtime, batch)
    assert counts == {"feed": 1, "buffered": 2, "evicted": 0}
    alert = located(runtime, batch[0][0])
    assert alert["location_method"] == "feed"
    assert json.loads(alert["location"])["lat"] == 51.5
    assert runtime.redis.zcard("wk:loc:buffer") == 2


# --- the Moonshot resolver through the worker, mode by mode --------------------------------


def test_good_api_locates_each_batch_with_one_call(runtime, worker, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["good"])
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(50))
    flush_now(runtime)
    assert methods(runtime) == Counter({"moonshot": 50})
    assert len(api.calls) == 3  # ceil(50 / 20)


def test_429_then_good_is_retried_and_located(runtime, worker, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["429", "good"], retry_after="0")
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(10), trigger_flush=False)
    flush_now(runtime)
    assert methods(runtime) == Counter({"moonshot": 10})
    assert len(api.calls) == 2
    assert location_status(runtime)["batches"] == {"succeeded": 1, "retried": 1, "failed": 0}


def test_500_forever_is_abandoned_after_three_retries_and_every_alert_falls_back(
    runtime, worker, http_server
) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["500"])
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(10), trigger_flush=False)
    flush_now(runtime)
    assert len(api.calls) == 1 + 3
    assert methods(runtime) == Counter({"fallback": 10})
    status = location_status(runtime)
    assert status["batches"] == {"succeeded": 0, "retried": 3, "failed": 1}
    assert status["fallback_by_reason"] == {"retries_exhausted": 10}
    assert status["keys"]["retry_counters"]["size"] == 0
    assert status["keys"]["failed_batches"]["size"] == 1
    # the fallback is the gazetteer's answer
    assert json.loads(located(runtime, "1700000000000-0")["location"])["name"] == "Valencia"


def test_reply_slower_than_the_timeout_falls_back_after_the_retries(
    runtime, worker, http_server
) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["slow"], slow_s=1.5)
    with_api(runtime, api, moonshot_timeout=0.3, moonshot_max_retries=1)
    enqueue_alerts(runtime, alerts(5), trigger_flush=False)
    flush_now(runtime)
    assert methods(runtime) == Counter({"fallback": 5})
    assert location_status(runtime)["errors_by_reason"] == {"timeout": 2}


def test_malformed_json_is_retried_then_located(runtime, worker, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["malformed", "good"])
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(5), trigger_flush=False)
    flush_now(runtime)
    assert methods(runtime) == Counter({"moonshot": 5})
    assert location_status(runtime)["errors_by_reason"] == {"malformed_response": 1}


def test_missing_ids_are_retried_alone_then_fall_back(runtime, worker, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["missing"], drop=3)
    with_api(runtime, api)
    batch = alerts(10)
    enqueue_alerts(runtime, batch, trigger_flush=False)
    flush_now(runtime)
    # the 7 answered are located; the 3 left out are sent alone on each retry, then fall back
    assert methods(runtime) == Counter({"moonshot": 7, "fallback": 3})
    assert len(api.calls) == 4
    assert api.sent_ids(1) == [i for i, _ in batch[:3]]
    assert location_status(runtime)["fallback_by_reason"] == {"missing_id": 3}


def test_extra_ids_in_the_reply_are_ignored(runtime, worker, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["extra"])
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(5), trigger_flush=False)
    flush_now(runtime)
    entries = located_entries(runtime)
    assert len(entries) == 5 and not any(e["alert"].startswith("intruder") for e in entries)
    assert not runtime.redis.exists("wk:alert:intruder-0")


def test_403_falls_back_at_once_and_shows_the_error_without_the_key(
    runtime, worker, http_server
) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["403"])
    with_api(runtime, api)
    enqueue_alerts(runtime, alerts(5), trigger_flush=False)
    flush_now(runtime)
    assert len(api.calls) == 1
    assert methods(runtime) == Counter({"fallback": 5})
    status = location_status(runtime)
    assert status["fallback_by_reason"] == {"auth_failed": 5}
    assert "403" in status["last_error"]["error"]
    assert KEY not in json.dumps(status)


# --- concurrency and lost workers ----------------------------------------------------------


def test_concurrent_claims_never_hand_out_one_alert_twice(runtime) -> None:  # type: ignore[no-untyped-def]
    # Given 1000 buffered alerts
    enqueue(runtime, alerts(1000))
    store = LocationStore(runtime.redis, runtime.settings)
    claimed: list[list[str]] = [[] for _ in range(8)]

    def claimer(n: int) -> None:
        mine = LocationStore(runtime.redis, runtime.settings)
        while True:
            _, ids = mine.claim()
            if not ids:
                return
            claimed[n] += ids

    # When eight claimers race
    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every alert was claimed exactly once
    every = [i for ids in claimed for i in ids]
    assert len(every) == 1000 and len(set(every)) == 1000
    assert runtime.redis.zcard(store.keys.buffer) == 0


def test_two_workers_flushing_at_once_never_locate_one_alert_twice(runtime, worker) -> None:  # type: ignore[no-untyped-def]
    from tasks.locations.tasks import flush_locations

    fast(runtime)
    enqueue_alerts(runtime, alerts(400), trigger_flush=False)
    # When the worker runs several flushes while this process flushes too
    for _ in range(4):
        flush_locations.apply_async()
    for batch_id in flush(runtime):
        process_batch(runtime, batch_id)
    wait_for(lambda: all_done(runtime), timeout=60, message="all located")
    entries = located_entries(runtime)
    assert len(entries) == 400
    assert len({e["alert"] for e in entries}) == 400
    assert sum(location_status(runtime)["located_by_method"].values()) == 400


def test_batch_of_a_killed_worker_returns_when_its_lease_expires(runtime) -> None:  # type: ignore[no-untyped-def]
    # Given a worker that claimed a batch and died without finishing it
    enqueue(runtime, alerts(30))
    store = LocationStore(runtime.redis, runtime.settings)
    dead_batch, dead_ids = store.claim()
    assert len(dead_ids) == 20
    # When a flush runs before the lease expires, the dead batch's alerts stay leased
    for batch_id in flush(runtime):
        process_batch(runtime, batch_id)
    assert runtime.redis.zcard(store.keys.queued) == 20
    # and once it has expired, they return to the buffer and are located
    backdate(runtime, store.keys.lease, runtime.settings.location_lease + 1)
    for batch_id in flush(runtime):
        process_batch(runtime, batch_id)
    assert process_batch(runtime, dead_batch).status == "gone"
    entries = located_entries(runtime)
    assert sorted(e["alert"] for e in entries) == sorted(i for i, _ in alerts(30))
    assert runtime.redis.zcard(store.keys.lease) == 0


# --- bounds: buffer cap, ages, stale markers, cleanup --------------------------------------


def test_full_buffer_evicts_the_oldest_to_the_fallback(runtime) -> None:  # type: ignore[no-untyped-def]
    runtime.settings = replace(runtime.settings, moonshot_max_buffer_size=50)
    counts = enqueue(runtime, alerts(80))
    assert counts["evicted"] == 30
    assert runtime.redis.zcard("wk:loc:buffer") == 50
    evicted = located(runtime, "1700000000000-0")
    assert evicted["location_method"] == "fallback" and evicted["fallback_reason"] == "buffer_full"
    assert not runtime.redis.hexists("wk:loc:alerts", "1700000000000-0")
    assert runtime.redis.hexists("wk:loc:alerts", "1700000000079-0")
    assert runtime.redis.zscore("wk:loc:queued", "1700000000079-0")


def test_cleanup_expires_stale_buffer_items_markers_records_and_counters(runtime, caplog) -> None:  # type: ignore[no-untyped-def]
    store = LocationStore(runtime.redis, runtime.settings)
    s = runtime.settings
    # Given 10 alerts waiting in the buffer and 20 stuck in a batch nobody finishes
    enqueue(runtime, alerts(30))
    stuck, _ = store.claim(lease=10 * s.moonshot_max_alert_batch_age)
    store.add_retry("a-batch-that-is-gone")
    store.record_failed("old-batch", 3, "retries_exhausted")
    old = json.loads(runtime.redis.lpop(store.keys.failed))
    old["at"] -= s.moonshot_max_alert_batch_age + 10
    runtime.redis.lpush(store.keys.failed, json.dumps(old))
    # When cleanup runs past the buffer age: the buffered ones fall back as buffer_age
    backdate(runtime, store.keys.buffer, s.moonshot_max_buffer_age + 1)
    backdate(runtime, store.keys.queued, s.moonshot_max_buffer_age + 1)
    with caplog.at_level(logging.INFO, logger="tasks.locations.health"):
        counts = location_cleanup(runtime)
    assert counts["stale_buffer_items"] == 10 and counts["stale_markers"] == 0
    assert counts["failed_batch_records"] == 1 and counts["retry_counters"] == 1
    assert "[location] buffer 0/1000 (0.0%), max_age 0.0s, failed_batches 0" in caplog.text
    # and past the marker age, the stuck batch's markers expire to the fallback
    backdate(runtime, store.keys.queued, s.moonshot_max_alert_batch_age)
    counts = location_cleanup(runtime)
    assert counts["stale_markers"] == 20
    assert runtime.redis.zcard(store.keys.queued) == 0
    assert Counter(e["fallback_reason"] for e in located_entries(runtime)) == Counter(
        {"buffer_age": 10, "stale_marker": 20}
    )
    # and the stuck batch, finishing late, locates nothing twice
    assert process_batch(runtime, stuck).status == "succeeded"
    assert len(located_entries(runtime)) == 30


def test_status_reports_buffer_health_and_key_sizes(runtime) -> None:  # type: ignore[no-untyped-def]
    enqueue(runtime, alerts(45))
    backdate(runtime, "wk:loc:buffer", 100)
    status = location_status(runtime)
    assert status["resolver"] == "gazetteer"
    assert status["buffer"]["size"] == 45 and status["buffer"]["max"] == 1000
    assert status["buffer"]["utilization_pct"] == 4.5
    assert 99 <= status["buffer"]["max_age_s"] < 200
    assert status["keys"]["markers"]["size"] == 45
    assert status["awaiting_location"] == 45


@pytest.mark.slow
def test_100k_alerts_with_the_api_down_stay_bounded_and_all_end_located(
    runtime, http_server
) -> None:  # type: ignore[no-untyped-def]
    # Given an API that answers 503 to everything and no retries (each batch fails once)
    http_server.static("/v1/chat/completions", "down", status=503)
    # (and a locations stream long enough to hold every result, so the test can read them all)
    fast(
        runtime,
        moonshot_api_key=KEY,
        moonshot_base_url=http_server.url("/v1"),
        moonshot_max_retries=0,
        max_alerts=200_000,
        max_locations_bytes=256 * 1024 * 1024,
    )
    store = LocationStore(runtime.redis, runtime.settings)
    resolver = ChatCompletionsResolver(runtime.settings)
    cap = runtime.settings.moonshot_max_buffer_size
    total, chunk, peak = 100_000, 2_500, 0
    # When 100,000 alerts arrive, with a flush between every few chunks
    for start in range(0, total, chunk):
        enqueue(runtime, alerts(chunk, start))
        peak = max(peak, int(runtime.redis.zcard(store.keys.buffer)))
        if start % (chunk * 8) == 0:
            for batch_id in flush(runtime, max_batches=5):
                process_batch(runtime, batch_id, resolver=resolver)
    while runtime.redis.zcard(store.keys.queued):
        for batch_id in flush(runtime):
            process_batch(runtime, batch_id, resolver=resolver)
    # Then the buffer never passed its cap, and every alert has a location and a method
    assert peak <= cap
    results = {e["alert"]: e for e in located_entries(runtime)}
    assert set(results) == {f"{1700000000000 + i}-0" for i in range(total)}
    assert all(e["location"] and e["location_method"] for e in results.values())
    assert runtime.redis.hlen("wk:loc:alerts") == 0
    status = location_status(runtime)
    assert sum(status["located_by_method"].values()) == total
    assert status["located_by_method"] == {"fallback": total}
    assert status["leases_outstanding"] == 0 and status["buffer"]["size"] == 0
    assert runtime.redis.xlen(store.keys.stream) <= runtime.settings.max_alerts + 200
