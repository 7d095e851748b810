"""Feed polling end to end against real local HTTP servers and a real Redis: entries reach the
alerts stream once, every bad server is a per-source error with backoff, and a source is never
polled twice at once."""

from __future__ import annotations

import gzip
import itertools
import re
import threading
import time
from dataclasses import replace
from email.utils import formatdate
from typing import Any

import pytest

from tasks.feeds.tasks import poll_feed
from tests.support.helpers import respond, trickled_head, wait_for
from workers.ops.status import collect_status
from workers.polling.poll import SourceState, poll_now
from workers.store.seen import SeenSet
from workers.store.streams import CappedStream

GEO_NS = (
    'xmlns:georss="http://www.georss.org/georss" '
    'xmlns:geo="http://www.w3.org/2003/01/geo/wgs84_pos#" '
    'xmlns:gml="http://www.opengis.net/gml"'
)


def item(i: int | str, extra: str = "") -> str:
    return (
        f"<item><title>Entry {i}</title><link>https://example.org/{i}</link>"
        f"<guid>urn:entry:{i}</guid><description>Summary {i}</description>"
        f"<pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate>{extra}</item>"
    )


def rss(items: list[str]) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {GEO_NS}><channel>'
        f"<title>t</title><link>https://example.org/</link>{''.join(items)}</channel></rss>"
    )


@pytest.fixture
def rt(runtime):
    """The test runtime with small timeouts, no host delay and fast backoff."""
    runtime.settings = replace(
        runtime.settings,
        http_connect_timeout=1.0,
        http_read_timeout=0.6,
        host_delay=0.0,
        host_concurrency=8,
        backoff_base=10.0,
        backoff_max=300.0,
    )
    return runtime


def use_feeds(rt, server, **paths: str):
    """Configure one feed per keyword (name=path), 60 s interval, no location hand-off."""
    rt.use_config(
        "".join(
            f'[[feeds]]\nname = "{name}"\nurl = "{server.url(path)}"\ninterval = "60s"\n'
            f"locate = false\n"
            for name, path in paths.items()
        )
    )
    return rt


def feed(rt, name: str):
    return rt.sources.get(name)


def alerts(rt) -> list[dict[str, Any]]:
    return [f for _, f in CappedStream(rt.redis, "wk:stream:alerts", 10**6).latest(10**6)]


def state(rt, name: str) -> dict[str, str]:
    return rt.redis.hgetall(f"wk:src:{name}")


def test_new_entries_reach_the_alerts_stream_with_their_fields(rt, http_server):
    # Given a feed with a tagged, authored entry with a GeoRSS point and one without extras
    tagged = item(
        1,
        "<category>flood</category><category>roads</category>"
        "<author>desk@example.org (Desk)</author>"
        "<georss:point>45.75 4.85</georss:point>",
    )
    http_server.static(
        "/f", rss([tagged, item(2)]), headers={"Content-Type": "application/rss+xml"}
    )
    use_feeds(rt, http_server, news="/f")
    # When it is polled
    result = poll_now(rt, feed(rt, "news"))
    # Then both entries are new and written with their fields
    assert {k: result[k] for k in ("source", "status", "fetched", "new", "duplicate", "error")} == {
        "source": "news",
        "status": "ok",
        "fetched": 2,
        "new": 2,
        "duplicate": 0,
        "error": None,
    }
    first, second = alerts(rt)
    assert first["source"] == "news" and first["fetched_at"]
    assert first["title"] == "Entry 1" and first["link"] == "https://example.org/1"
    assert first["summary"] == "Summary 1" and first["published"] == "2024-01-01T00:00:00Z"
    assert first["tags"] == ["flood", "roads"] and "desk@example.org" in first["author"]
    assert first["coordinates"] == {"lat": 45.75, "lon": 4.85}
    assert first["key"] == "urn:entry:1"
    assert "coordinates" not in second
    # And the source's state records the success, and status reports it with its seen-set
    assert state(rt, "news")["last_status"] == "ok" and state(rt, "news")["errors"] == "0"
    section = collect_status(rt)["sources"]["news"]
    assert section["state"]["last_new"] == "2" and section["seen"]["size"] == 2
    assert (section["polling"], section["due"], section["host"]["in_flight"]) == (False, False, 0)
    assert section["seen"]["cap"] == 10_000


def test_georss_gml_and_w3c_geo_coordinates_are_kept(rt, http_server):
    # Given entries located three ways, and one with an out-of-range point
    http_server.static(
        "/geo",
        rss(
            [
                item(
                    "gml",
                    "<georss:where><gml:Point><gml:pos>1.5 2.5</gml:pos></gml:Point>"
                    "</georss:where>",
                ),
                item("w3c", "<geo:lat>-12.05</geo:lat><geo:long>-77.04</geo:long>"),
                item("bad", "<georss:point>123 456</georss:point>"),
            ]
        ),
    )
    use_feeds(rt, http_server, geo="/geo")
    # When polled
    poll_now(rt, feed(rt, "geo"))
    # Then valid points are kept as lat/lon and the invalid one is dropped
    by_title = {a["title"]: a.get("coordinates") for a in alerts(rt)}
    assert by_title == {
        "Entry gml": {"lat": 1.5, "lon": 2.5},
        "Entry w3c": {"lat": -12.05, "lon": -77.04},
        "Entry bad": None,
    }


def test_entry_key_falls_back_to_link_then_to_title_and_date(rt, http_server):
    http_server.static(
        "/k",
        rss(
            [
                "<item><title>A</title><link>https://example.org/a</link></item>",
                "<item><title>B</title><pubDate>Tue, 02 Jan 2024 00:00:00 GMT</pubDate></item>",
            ]
        ),
    )
    use_feeds(rt, http_server, keys="/k")
    poll_now(rt, feed(rt, "keys"))
    keys = [a["key"] for a in alerts(rt)]
    assert keys[0] == "https://example.org/a" and keys[1].startswith("sha1:")
    assert poll_now(rt, feed(rt, "keys"))["new"] == 0


def test_html_is_kept_unless_the_source_asks_for_sanitizing(rt, http_server):
    # Given the same entry served to a plain feed and to one with sanitize_html
    body = rss(
        [
            "<item><guid>x</guid><title>T</title><description>&lt;b&gt;bold&lt;/b&gt;"
            "&lt;script&gt;evil()&lt;/script&gt;</description></item>"
        ]
    )
    http_server.static("/h", body)
    rt.use_config(
        f'[[feeds]]\nname = "raw"\nurl = "{http_server.url("/h")}"\nlocate = false\n'
        f'[[feeds]]\nname = "clean"\nurl = "{http_server.url("/h")}"\n'
        f"locate = false\nsanitize_html = true\n"
    )
    # When both are polled
    poll_now(rt, feed(rt, "raw"))
    poll_now(rt, feed(rt, "clean"))
    # Then only the sanitizing source drops the script
    summaries = {a["source"]: a["summary"] for a in alerts(rt)}
    assert "<script>" in summaries["raw"]
    assert "script" not in summaries["clean"] and "<b>bold</b>" in summaries["clean"]


def test_same_50_entries_every_poll_yield_once(rt, http_server):
    # Given a feed that re-serves the same 50 entries without validators
    http_server.static("/same", rss([item(i) for i in range(50)]))
    use_feeds(rt, http_server, same="/same")
    # When it is polled ten times
    results = [poll_now(rt, feed(rt, "same")) for _ in range(10)]
    # Then the 50 entries were new once and duplicates afterwards
    assert [r["new"] for r in results] == [50] + [0] * 9
    assert all(r["duplicate"] == 50 for r in results[1:])
    assert len(alerts(rt)) == 50


def test_pinned_entry_is_never_re_emitted(rt, http_server):
    # Given a feed whose oldest entry stays pinned while 50 new entries arrive per poll
    polls = {"n": 0}

    def handler(req):
        n = polls["n"]
        polls["n"] += 1
        respond(req, 200, rss([item(f"new-{n}-{i}") for i in range(50)] + [item("pinned")]))

    http_server.route("/busy", handler)
    rt.settings = replace(rt.settings, max_seen=10_000, max_alerts=100)
    use_feeds(rt, http_server, busy="/busy")
    source = feed(rt, "busy")
    # When 20,000 new entries pass through 400 polls with a seen-set cap of 10,000
    new_total = sum(poll_now(rt, source)["new"] for _ in range(400))
    # Then every new entry was emitted once and the pinned one only on the first poll
    assert new_total == 20_000 + 1
    seen = SeenSet(rt.redis, "wk:seen:busy", 10_000)
    assert len(seen) == 10_000
    assert "urn:entry:pinned" in seen
    # And the alerts stream stayed near its cap
    assert len(CappedStream(rt.redis, "wk:stream:alerts", 100)) <= 200


def trickle(req):
    req.send_response(200)
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    end = time.monotonic() + 5
    try:
        while time.monotonic() < end:
            req.wfile.write(b"1\r\n<\r\n")
            req.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


def slow(req):
    time.sleep(2)
    respond(req, 200, rss([item(1)]))


BAD_SERVERS = {
    "slow": (slow, r"no response within 0.6s"),
    "endless": (trickle, r"body not complete within 0.6s"),
    "gzip_bomb": (
        lambda req: respond(
            req, 200, gzip.compress(b" " * (40 * 2**20)), {"Content-Encoding": "gzip"}
        ),
        r"exceeds the cap of 1048576 bytes after decompression",
    ),
    "redirect_loop": (lambda req: respond(req, 302, b"", {"Location": req.path}), r"redirect loop"),
    "invalid_xml": (
        lambda req: respond(req, 200, "<rss><channel><title>x</ti"),
        r"no feed entries \(not a valid feed: .+\)",
    ),
    "html_page": (
        lambda req: respond(
            req,
            200,
            "<html><body><h1>Welcome</h1></body></html>",
            {"Content-Type": "text/html; charset=utf-8"},
        ),
        r"no feed entries \(an HTML page \(text/html\), not an RSS/Atom feed\)",
    ),
    "empty_200": (lambda req: respond(req, 200, b""), r"no feed entries \(empty body\)"),
    "not_found": (lambda req: respond(req, 404, b"gone"), r"HTTP 404"),
    "server_error": (lambda req: respond(req, 500, b"boom"), r"HTTP 500"),
}


@pytest.mark.parametrize("case", sorted(BAD_SERVERS))
def test_a_bad_server_is_a_per_source_error_with_backoff(rt, http_server, case):
    # Given a feed served badly, next to a healthy feed
    handler, message = BAD_SERVERS[case]
    http_server.route("/bad", handler)
    http_server.static("/good", rss([item(1)]))
    rt.settings = replace(rt.settings, http_max_bytes=2**20)
    use_feeds(rt, http_server, bad="/bad", good="/good")
    before = time.time()
    # When both are polled
    bad = poll_now(rt, feed(rt, "bad"))
    good = poll_now(rt, feed(rt, "good"))
    # Then the bad one reports a one-line error, recorded with a backoff, and nothing emitted
    assert bad["status"] == "error" and bad["new"] == 0, bad
    assert "\n" not in bad["error"]
    assert re.search(message, bad["error"]), bad["error"]
    stored = state(rt, "bad")
    assert stored["last_error"] == bad["error"] and stored["errors"] == "1"
    assert before + 7.5 - 1 <= float(stored["next_check"]) <= time.time() + 10
    # And the healthy one is unaffected
    assert good["status"] == "ok" and good["new"] == 1
    assert [a["source"] for a in alerts(rt)] == ["good"]


def test_a_feed_trickling_its_headers_ends_at_the_fetch_deadline(rt, http_server):
    # Given a feed whose server sends its status line and headers one byte a second (each read
    # in time for a 2 s read timeout)
    http_server.route("/head", trickled_head)
    rt.settings = replace(rt.settings, http_read_timeout=2.0, http_deadline=3.0)
    use_feeds(rt, http_server, head="/head")
    # When polled
    started = time.monotonic()
    result = poll_now(rt, feed(rt, "head"))
    # Then the poll ends at WATCHKEEPER_HTTP_DEADLINE with that source's one-line timeout
    assert time.monotonic() - started < 3 + 5  # the trickle goes on for 20 s
    assert result["status"] == "error", result
    assert result["error"] == (
        f"{http_server.url('/head')}: fetch not complete within 3s (WATCHKEEPER_HTTP_DEADLINE)"
    )
    assert state(rt, "head")["last_error"] == result["error"]


def test_a_malformed_feed_that_still_has_entries_yields_them(rt, http_server):
    # Given a feed with an unescaped ampersand and a missing close tag (bozo)
    http_server.static(
        "/bozo",
        "<rss><channel><item><title>Tom & Jerry</title>"
        "<guid>1</guid></item><item><title>Two</title><guid>2</guid>"
        "</item></channel>",
    )
    use_feeds(rt, http_server, bozo="/bozo")
    # When polled, Then its entries are kept
    result = poll_now(rt, feed(rt, "bozo"))
    assert (result["status"], result["new"]) == ("ok", 2)


def test_429_with_retry_after_sets_the_next_check(rt, http_server):
    # Given a feed answering 429 with Retry-After: 120
    http_server.static("/limited", b"", 429, {"Retry-After": "120"})
    use_feeds(rt, http_server, limited="/limited")
    before = time.time()
    # When polled
    result = poll_now(rt, feed(rt, "limited"))
    # Then the next check honours the header rather than the 10 s base backoff
    assert result["status"] == "error" and "429" in result["error"]
    stored = state(rt, "limited")
    assert stored["retry_after"] == "120.0" and stored["last_http_status"] == "429"
    assert before + 120 <= float(stored["next_check"]) <= time.time() + 120
    # And a Retry-After beyond the cap is capped, never a permanent stop
    http_server.static(
        "/limited", b"", 503, {"Retry-After": formatdate(time.time() + 86400, usegmt=True)}
    )
    poll_now(rt, feed(rt, "limited"))
    assert float(state(rt, "limited")["next_check"]) <= time.time() + 300


def test_backoff_grows_over_repeated_500s_and_resets_on_success(rt, http_server):
    # Given a feed that fails with 500 eight times, then recovers
    answers = {"fail": True}
    http_server.route(
        "/flaky",
        lambda req: (
            respond(req, 500, b"x") if answers["fail"] else respond(req, 200, rss([item(1)]))
        ),
    )
    use_feeds(rt, http_server, flaky="/flaky")
    source = feed(rt, "flaky")
    # When polled eight times while failing
    backoffs = []
    for _ in range(8):
        poll_now(rt, source)
        backoffs.append(float(state(rt, "flaky")["backoff_s"]))
    # Then the backoff grows with every error until the 300 s cap, never beyond
    assert all(b > a for a, b in itertools.pairwise(backoffs[:6])), backoffs
    assert 7.5 <= backoffs[0] <= 10 and max(backoffs) == 300.0
    assert state(rt, "flaky")["errors"] == "8"
    # And a scheduled poll while backing off is skipped without a request
    hits = http_server.hits("/flaky")
    assert poll_source_scheduled(rt, "flaky")["reason"] == "not due"
    assert http_server.hits("/flaky") == hits
    # When the feed recovers, Then one success resets the streak and the backoff
    answers["fail"] = False
    assert poll_now(rt, source)["status"] == "ok"
    stored = state(rt, "flaky")
    assert (stored["errors"], stored["backoff_s"], stored["last_error"]) == ("0", "0", "")
    # and the feed is due again one interval after that poll started
    assert time.time() + 60 - 5 <= float(stored["next_check"]) <= time.time() + 60


def poll_source_scheduled(rt, name: str) -> dict[str, Any]:
    return poll_feed(name)


def test_conditional_get_turns_an_unchanged_feed_into_not_modified(rt, http_server):
    # Given a feed honouring ETag
    def handler(req):
        if req.headers.get("If-None-Match") == '"v1"':
            respond(req, 304)
        else:
            respond(
                req,
                200,
                rss([item(1)]),
                {"ETag": '"v1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
            )

    http_server.route("/etag", handler)
    use_feeds(rt, http_server, etag="/etag")
    # When polled twice
    first = poll_now(rt, feed(rt, "etag"))
    second = poll_now(rt, feed(rt, "etag"))
    # Then the second poll sent the validators and is a success with nothing new
    assert first["new"] == 1
    assert {k: second[k] for k in ("status", "fetched", "new", "error")} == {
        "status": "not_modified",
        "fetched": 0,
        "new": 0,
        "error": None,
    }
    assert http_server.requests[-1][2]["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert state(rt, "etag")["etag"] == '"v1"'


def test_poll_now_can_show_the_parsed_items(rt, http_server):
    http_server.static("/show", rss([item(1), item(2)]))
    use_feeds(rt, http_server, show="/show")
    poll_now(rt, feed(rt, "show"))
    http_server.static("/show", rss([item(1), item(2), item(3)]))
    result = poll_now(rt, feed(rt, "show"), show_items=True)
    assert [(i["title"], i["new"]) for i in result["items"]] == [
        ("Entry 1", False),
        ("Entry 2", False),
        ("Entry 3", True),
    ]
    assert isinstance(result["elapsed_s"], float)


def test_two_workers_never_poll_one_source_at_once(rt, http_server):
    # Given a slow feed that records how many requests it serves at once
    lock = threading.Lock()
    seen = {"now": 0, "max": 0}

    def handler(req):
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.4)
        with lock:
            seen["now"] -= 1
        respond(req, 200, rss([item(1)]))

    http_server.route("/slowfeed", handler)
    use_feeds(rt, http_server, shared="/slowfeed")
    results: list[dict[str, Any]] = []

    def run(fn) -> None:
        results.append(fn())

    # When four scheduled task runs and two forced polls start together
    threads = [threading.Thread(target=run, args=(lambda: poll_feed("shared"),)) for _ in range(4)]
    threads += [
        threading.Thread(target=run, args=(lambda: poll_now(rt, feed(rt, "shared")),))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then the server saw one request at a time, and the others skipped or reported the lock
    assert seen["max"] == 1
    statuses = sorted(r["status"] for r in results)
    assert statuses.count("ok") == http_server.hits("/slowfeed") >= 1
    assert all(
        r["status"] == "ok"
        or r.get("reason") in ("not due", "being polled by another worker")
        or "being polled" in (r["error"] or "")
        for r in results
    ), results
    assert rt.redis.exists("wk:lock:shared") == 0


def test_a_removed_source_is_skipped_by_the_task(rt, http_server):
    use_feeds(rt, http_server, other="/x")
    assert poll_feed("gone") == {
        "source": "gone",
        "status": "skipped",
        "reason": "not a configured feed",
    }
    assert http_server.requests == []


def test_the_real_worker_task_writes_alerts(rt, http_server, worker):
    # Given a feed and a running Celery worker
    http_server.static("/w", rss([item(i) for i in range(5)]))
    use_feeds(rt, http_server, worked="/w")
    # When the scheduled task is sent through the broker
    poll_feed.delay("worked")
    # Then its entries arrive in the alerts stream and the state records the poll
    wait_for(lambda: len(alerts(rt)) == 5, timeout=30, message="5 alerts from the worker")
    assert {a["source"] for a in alerts(rt)} == {"worked"}
    wait_for(lambda: state(rt, "worked").get("last_status") == "ok", timeout=10)
    assert SourceState.load(rt.redis, rt.settings, "worked").errors == 0


def test_text_round_trips_exactly_through_the_bulk_stream_write(rt, http_server):
    # Given an entry whose text has accents, an emoji, quotes, a backslash, a tab and CJK
    title = 'Séisme à Lyon — 🌍 "quoted" back\\slash tab\there'
    summary = "line one\nline two &amp; <b>bold</b> 東京"
    http_server.static(
        "/text",
        rss(
            [
                f"<item><guid>t</guid><title>{title}</title><description>{summary}</description>"
                "<category>ünïcode</category></item>"
            ]
        ),
        headers={"Content-Type": "application/rss+xml; charset=utf-8"},
    )
    use_feeds(rt, http_server, text="/text")
    # When polled
    poll_now(rt, feed(rt, "text"))
    # Then the stream holds exactly the parsed text
    (alert,) = alerts(rt)
    assert alert["title"] == title
    assert alert["summary"] == "line one\nline two & <b>bold</b> 東京"
    assert alert["tags"] == ["ünïcode"]
