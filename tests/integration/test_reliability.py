"""Nothing lost, nothing doubled, nothing leaked on the data path (issue 12 defects 1, 4, 5, 8):
a poll that dies after writing still hands its alerts on, a source larger than its seen cap
is not re-emitted, capped sets carry no TTL, and due times and leases follow Redis's clock."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tasks.feeds.tasks import FEEDS, poll_feed
from tasks.locations.batches import flush, process_batch
from tasks.locations.buffer import LocationStore, redis_now
from tests.support.helpers import HTTPFixtureServer
from workers.core import keys
from workers.ops.status import collect_status
from workers.polling.poll import poll_now, poll_source


def rss(first: int, count: int) -> str:
    items = "".join(
        f"<item><title>Flooding in Lyon {i}</title><guid>urn:r:{i}</guid>"
        f"<description>Bulletin {i}</description></item>"
        for i in range(first, first + count)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'
    )


def configure(rt: Any, server: HTTPFixtureServer, locate: bool = True, **settings: Any) -> Any:
    rt.settings = replace(rt.settings, host_delay=0.0, **settings)
    rt.use_config(
        f'[[feeds]]\nname = "r"\nurl = "{server.url("/r.rss")}"\ninterval = "60s"\n'
        f"locate = {'true' if locate else 'false'}\n"
    )
    return rt.sources.get("r")


def test_alerts_of_a_poll_that_dies_right_after_writing_are_still_located(
    runtime: Any, http_server: HTTPFixtureServer
) -> None:
    # Given a locate = true feed with 30 new alerts, and a worker that dies right after the
    # poll's one write (before anything that follows it can run)
    http_server.static("/r.rss", rss(0, 30), headers={"Content-Type": "application/rss+xml"})
    source = configure(runtime, http_server)

    def dies(*_: Any) -> None:
        raise SystemExit("killed")

    with pytest.raises(SystemExit):
        poll_source(runtime, source, replace(FEEDS, written=dies), scheduled=False)
    # When a later poll sees them as duplicates and the location flush runs
    assert poll_now(runtime, source)["new"] == 0
    for batch_id in flush(runtime):
        process_batch(runtime, batch_id)
    # Then every alert written to the stream was located exactly once
    alert_ids = {i for i, _ in runtime.redis.xrange(keys.STREAM.key(runtime.settings, "alerts"))}
    located = [
        f["alert"] for _, f in runtime.redis.xrange(keys.STREAM.key(runtime.settings, "locations"))
    ]
    assert len(alert_ids) == 30 and sorted(located) == sorted(alert_ids)


def test_a_source_serving_more_items_than_its_seen_cap_is_not_re_emitted(
    runtime: Any, http_server: HTTPFixtureServer
) -> None:
    # Given a seen cap of 10 and a feed serving 25 items
    http_server.static("/r.rss", rss(0, 25), headers={"Content-Type": "application/rss+xml"})
    source = configure(runtime, http_server, locate=False, max_seen=10)
    # When it is polled three times
    news = [poll_now(runtime, source)["new"] for _ in range(3)]
    # Then its items were new once, the set keeps the whole window, and status says why
    assert news == [25, 0, 0]
    status = collect_status(runtime)["sources"]["r"]
    assert status["seen"]["size"] == 25
    assert "WATCHKEEPER_MAX_SEEN=10" in status["seen"]["warning"]
    # and once the source serves fewer, the set shrinks back to its cap
    http_server.static("/r.rss", rss(25, 3), headers={"Content-Type": "application/rss+xml"})
    assert poll_now(runtime, source)["new"] == 3
    assert runtime.redis.zcard(keys.SEEN.key(runtime.settings, "r")) == 10


def test_capped_location_sets_carry_no_ttl(runtime: Any, http_server: HTTPFixtureServer) -> None:
    # Given alerts handed over by a poll and one batch claimed
    http_server.static("/r.rss", rss(0, 30), headers={"Content-Type": "application/rss+xml"})
    store = LocationStore(runtime.redis, runtime.settings)
    # (a flush already pending: no worker left running by another test may empty the buffer)
    runtime.redis.set(store.keys.flush_flag, "1", ex=60)
    poll_now(runtime, configure(runtime, http_server))
    store.claim()
    # Then none of the capped structures expires by itself: workers down for hours lose nothing
    k = store.keys
    assert {
        key: runtime.redis.ttl(key) for key in (k.buffer, k.queued, k.alerts, k.lease, k.batches)
    } == dict.fromkeys((k.buffer, k.queued, k.alerts, k.lease, k.batches), -1)


@pytest.fixture
def skewed(monkeypatch: pytest.MonkeyPatch) -> float:
    """This worker's clock runs an hour ahead of everybody else's."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    return 3600.0


def test_due_times_follow_redis_not_a_skewed_worker_clock(
    runtime: Any, http_server: HTTPFixtureServer, skewed: float
) -> None:
    # Given a worker an hour ahead that polls a 60 s feed
    http_server.static("/r.rss", rss(0, 3), headers={"Content-Type": "application/rss+xml"})
    poll_now(runtime, configure(runtime, http_server, locate=False))
    state = runtime.redis.hgetall(keys.SOURCE_STATE.key(runtime.settings, "r"))
    # Then the next due time is set on Redis's clock, not an hour late
    assert abs(float(state["next_check"]) - (redis_now(runtime.redis) + 60)) < 5
    # and a scheduled poll from the skewed worker does not think it is due already
    assert poll_feed("r")["reason"] == "not due"


def test_leases_follow_redis_not_a_skewed_worker_clock(runtime: Any, skewed: float) -> None:
    from tasks.locations.batches import enqueue
    from tests.integration.test_locations import alerts

    enqueue(runtime, alerts(20))
    store = LocationStore(runtime.redis, runtime.settings)
    batch_id, _ = store.claim()
    deadline = float(runtime.redis.zscore(store.keys.lease, batch_id))
    assert abs(deadline - (redis_now(runtime.redis) + runtime.settings.location_lease)) < 5
    # and a reap by the skewed worker returns nothing early
    assert store.reap()[:2] == (0, 0)


def test_a_claim_repeated_after_a_lost_reply_claims_nothing_more(runtime: Any) -> None:
    from tasks.locations.batches import enqueue
    from tests.integration.test_locations import alerts

    enqueue(runtime, alerts(50))
    store = LocationStore(runtime.redis, runtime.settings)
    # When the same claim is sent twice (redis-py retries a command whose reply timed out)
    first = store.claim(batch_id="retried")
    second = store.claim(batch_id="retried")
    # Then the second call returns the same batch and takes nothing more from the buffer
    assert first == second and len(first[1]) == 20
    assert runtime.redis.zcard(store.keys.buffer) == 30
    # and a release repeated the same way counts the batch once
    assert store.release("retried", "batches_succeeded") is True
    assert store.release("retried", "batches_succeeded") is False
    assert runtime.redis.hget(store.keys.stats, "batches_succeeded") == "1"
