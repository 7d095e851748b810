"""Host politeness through the poll loop, where the claim takes the first request's host slot
and the write releases it (no round trip of their own): the limits still hold across
concurrent polls, redirects still wait for the delay, and a skipped poll uses up nothing."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from tests.support.helpers import recording, respond
from workers.polling.politeness import host_keys
from workers.polling.poll import poll_now, poll_source

FEED = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>http://e/</link>'
    "<item><title>a</title><guid>urn:a</guid></item></channel></rss>"
)


@pytest.fixture
def rt(runtime):
    runtime.settings = replace(
        runtime.settings, http_connect_timeout=1.0, http_read_timeout=5.0, host_delay=0.0
    )
    return runtime


def feed_log(server, path: str, hold: float) -> dict[str, list[float]]:
    return recording(server, path, hold, FEED, {"Content-Type": "application/rss+xml"})


def feeds(rt, server, n: int, path: str) -> list:
    rt.use_config(
        "".join(
            f'[[feeds]]\nname = "f{i}"\nurl = "{server.url(path)}?{i}"\ninterval = "60s"\n'
            "locate = false\n"
            for i in range(n)
        )
    )
    return [rt.sources.get(f"f{i}") for i in range(n)]


def slots_held(rt, server) -> int:
    return int(rt.redis.zcard(host_keys(rt.settings, f"127.0.0.1:{server.port}")[0]))


def test_concurrent_polls_of_one_host_never_exceed_its_concurrency(rt, http_server):
    # Given six feeds on one host that allows 2 requests at once, each answer taking 0.3 s
    rt.settings = replace(rt.settings, host_concurrency=2)
    log = feed_log(http_server, "/slow", hold=0.3)
    sources = feeds(rt, http_server, 6, "/slow")
    outcomes: list[dict] = []

    def poll(source) -> None:
        outcomes.append(poll_now(rt, source))

    # When all six are polled at once
    threads = [threading.Thread(target=poll, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then all succeed, the host never saw more than 2 at a time, and no slot is left held
    assert sorted(o["status"] for o in outcomes) == ["ok"] * 6, outcomes
    assert len(log["starts"]) == 6 and log["max"][0] <= 2
    assert slots_held(rt, http_server) == 0


def test_a_redirect_in_a_poll_waits_for_the_host_delay_and_releases_its_slots(rt, http_server):
    # Given a host asking 0.3 s between requests, and a feed that redirects once on it
    rt.settings = replace(rt.settings, host_delay=0.3, host_concurrency=1)
    log = feed_log(http_server, "/real", hold=0.0)
    starts: list[float] = []

    def moved(req) -> None:
        starts.append(time.monotonic())
        respond(req, 302, b"", {"Location": "/real"})

    http_server.route("/moved", moved)
    (source,) = feeds(rt, http_server, 1, "/moved")
    # When it is polled
    outcome = poll_now(rt, source)
    # Then the second request started at least the delay after the first (5 ms clock slack),
    # with one request slot at a time, and the poll left no slot held
    assert outcome["status"] == "ok", outcome
    assert log["starts"][0] - starts[0] >= 0.295
    assert slots_held(rt, http_server) == 0


def test_a_skipped_poll_takes_no_host_slot_and_no_delay(rt, http_server):
    # Given a feed polled once on a host asking 30 s between requests
    rt.settings = replace(rt.settings, host_delay=30.0, host_concurrency=1)
    feed_log(http_server, "/feed", hold=0.0)
    (source,) = feeds(rt, http_server, 1, "/feed")
    assert poll_now(rt, source)["status"] == "ok"
    slots, next_key = host_keys(rt.settings, f"127.0.0.1:{http_server.port}")
    rt.redis.delete(next_key)  # as if the delay had passed
    # When a scheduled poll finds it not due yet
    outcome = poll_source(rt, source, _kind(source), scheduled=True)
    # Then it is skipped without taking a slot or starting the host's delay
    assert outcome["status"] == "skipped" and outcome["reason"] == "not due"
    assert rt.redis.zcard(slots) == 0 and rt.redis.get(next_key) is None


def _kind(source):
    from workers.polling.kinds import kind_of

    return kind_of(source)
