"""The shared fetch layer against real local HTTP servers: every way a server can misbehave
ends in a one-line FetchError within its bounds, never a hang or an unbounded body."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import threading
import time
import tracemalloc
import zlib
from dataclasses import replace
from email.utils import formatdate

import pytest

from tests.support.helpers import recording, respond, trickled_head
from workers.core.connection import connect
from workers.core.settings import MIB, Settings
from workers.core.version import VERSION as __version__
from workers.polling.fetch import USER_AGENT, FetchError, fetch, parse_retry_after


@pytest.fixture
def fast() -> Settings:
    """Small timeouts and caps so every bad-server case resolves in about a second."""
    return replace(
        Settings.from_env({}),
        http_connect_timeout=1.0,
        http_read_timeout=0.6,
        http_max_bytes=MIB,
        host_delay=0.0,
        host_concurrency=2,
    )


def trickle(req, interval: float = 0.05, limit_s: float = 10.0, chunk: bytes = b"x") -> None:
    """A chunked body that never ends (within the test's lifetime)."""
    req.send_response(200)
    req.send_header("Content-Type", "application/rss+xml")
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    end = time.monotonic() + limit_s
    try:
        while time.monotonic() < end:
            req.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            req.wfile.flush()
            time.sleep(interval)
    except OSError:
        pass


def test_a_plain_body_is_returned_with_lower_case_headers_and_our_user_agent(http_server, fast):
    # Given a server answering with a small body
    http_server.static(
        "/feed", b"<rss/>", headers={"Content-Type": "application/rss+xml", "ETag": '"v1"'}
    )
    # When it is fetched
    result = fetch(http_server.url("/feed"), fast)
    # Then the body, status and lower-cased headers come back, and we named ourselves
    assert (result.status, result.body, result.not_modified) == (200, b"<rss/>", False)
    assert result.headers["etag"] == '"v1"'
    assert result.headers["content-type"] == "application/rss+xml"
    sent = http_server.requests[-1][2]
    assert sent["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith(f"watchkeeper/{__version__} ")


def test_conditional_get_sends_validators_and_a_304_is_not_modified(http_server, fast):
    # Given a server that answers 304 when both validators match
    def handler(req):
        if (
            req.headers.get("If-None-Match") == '"v1"'
            and req.headers.get("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT"
        ):
            respond(req, 304, headers={"ETag": '"v1"'})
        else:
            respond(req, 200, b"full body")

    http_server.route("/feed", handler)
    # When fetched with the stored validators
    result = fetch(
        http_server.url("/feed"), fast, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT"
    )
    # Then it is a success without a body
    assert (result.status, result.not_modified, result.body) == (304, True, b"")
    # And without validators the full body comes
    assert fetch(http_server.url("/feed"), fast).body == b"full body"


def test_a_server_that_never_answers_times_out(http_server, fast):
    # Given a server that waits longer than the read timeout before answering
    def slow(req):
        time.sleep(3)
        respond(req, 200, b"late")

    http_server.route("/slow", slow)
    # When fetched, Then a one-line error names the timeout
    with pytest.raises(FetchError, match=r"/slow: no response within 0.6s") as info:
        fetch(http_server.url("/slow"), fast)
    assert info.value.status is None
    assert "\n" not in str(info.value)


def test_an_endless_trickling_body_is_cut_off_by_the_body_deadline(http_server, fast):
    # Given a server trickling one byte every 50 ms forever (each read succeeds in time)
    http_server.route("/endless", trickle)
    # When fetched, Then the whole-body deadline ends it with an error, not a hang
    with pytest.raises(FetchError, match=r"body not complete within 0.6s"):
        fetch(http_server.url("/endless"), replace(fast, http_max_bytes=100 * MIB))


def test_an_endless_fast_body_stops_at_the_byte_cap(http_server, fast):
    # Given a server streaming 64 KiB chunks without end
    http_server.route("/flood", lambda req: trickle(req, interval=0, chunk=b"y" * 65536))
    # When fetched with a 1 MiB cap, Then the cap ends it
    with pytest.raises(FetchError, match=r"body exceeds the cap of 1048576 bytes"):
        fetch(http_server.url("/flood"), replace(fast, http_read_timeout=30.0))


def test_a_declared_oversized_body_is_refused_before_reading(http_server, fast):
    http_server.static("/big", b"z" * (MIB + 1))
    with pytest.raises(FetchError, match=r"body of 1048577 bytes exceeds the cap"):
        fetch(http_server.url("/big"), fast)
    assert fetch(http_server.url("/big"), fast, max_bytes=2 * MIB).body == b"z" * (MIB + 1)


def test_a_gzip_bomb_is_stopped_at_the_cap_and_never_inflated_whole(http_server, fast):
    # Given a 100 MiB body of zeros gzipped to about 100 KiB
    bomb = gzip.compress(b"\0" * (100 * MIB), compresslevel=9)
    http_server.static("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    # When fetched with a 1 MiB cap while tracing allocations
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match=r"exceeds the cap of 1048576 bytes after decomp"):
            fetch(http_server.url("/bomb"), fast)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then at most a few MiB were ever held, not 100 MiB
    assert peak < 8 * MIB


@pytest.mark.parametrize(
    "encoding,compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ],
)
def test_compressed_bodies_within_the_cap_are_decoded(http_server, fast, encoding, compress):
    payload = b"<rss>" + b"entry " * 50_000 + b"</rss>"
    http_server.static("/c", compress(payload), headers={"Content-Encoding": encoding})
    assert fetch(http_server.url("/c"), fast).body == payload


def test_a_corrupt_gzip_body_is_an_error(http_server, fast):
    http_server.static("/bad", b"not gzip at all", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match=r"corrupt gzip body"):
        fetch(http_server.url("/bad"), fast)


def test_a_redirect_loop_is_an_error(http_server, fast):
    # Given two paths redirecting to each other
    http_server.static("/a", b"", 302, {"Location": "/b"})
    http_server.static("/b", b"", 301, {"Location": http_server.url("/a")})
    # When fetched, Then the loop is named, after one visit of each
    with pytest.raises(FetchError, match=r"redirect loop at .*/a$"):
        fetch(http_server.url("/a"), fast)
    assert http_server.hits("/a") == 1 and http_server.hits("/b") == 1


def test_redirects_are_followed_up_to_the_limit_and_no_further(http_server, fast):
    # Given a chain /r0 → /r1 → … → /r6 → /end
    for i in range(7):
        http_server.static(f"/r{i}", b"", 307, {"Location": f"/r{i + 1}" if i < 6 else "/end"})
    http_server.static("/end", b"arrived")
    # When the chain is shorter than the limit it is followed to the final URL
    result = fetch(http_server.url("/r3"), fast)
    assert (result.body, result.url) == (b"arrived", http_server.url("/end"))
    # And a chain longer than WATCHKEEPER_HTTP_MAX_REDIRECTS (5) is an error
    with pytest.raises(FetchError, match=r"more than 5 redirects"):
        fetch(http_server.url("/r0"), fast)


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_carry_their_status(http_server, fast, status):
    http_server.static("/e", b"oops", status)
    with pytest.raises(FetchError, match=rf"HTTP {status}") as info:
        fetch(http_server.url("/e"), fast)
    assert (info.value.status, info.value.retry_after) == (status, None)


def test_429_and_503_carry_retry_after_in_seconds_or_as_a_date(http_server, fast):
    # Given a 429 with delta-seconds and a 503 with an HTTP date two minutes ahead
    http_server.static("/429", b"", 429, {"Retry-After": "120"})
    http_server.static(
        "/503", b"", 503, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}
    )
    # When fetched, Then both errors carry the wait in seconds
    with pytest.raises(FetchError, match=r"HTTP 429.*Retry-After 120s") as info:
        fetch(http_server.url("/429"), fast)
    assert (info.value.status, info.value.retry_after) == (429, 120.0)
    with pytest.raises(FetchError, match=r"HTTP 503") as info:
        fetch(http_server.url("/503"), fast)
    assert info.value.retry_after is not None and 110 <= info.value.retry_after <= 121
    assert parse_retry_after("soon") is None


def test_a_refused_connection_is_an_error(fast):
    with pytest.raises(FetchError, match=r"127.0.0.1:9/"):
        fetch("http://127.0.0.1:9/", fast)


def _recording(server, path: str, hold: float):
    return recording(server, path, hold)


def _run_concurrently(n: int, target) -> list[object]:
    results: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = target()
        except Exception as exc:  # recorded and asserted on by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_host_concurrency_holds_across_concurrent_fetchers(
    http_server, fast, redis_client, redis_url
):
    # Given a host allowing 2 requests at once, and 6 fetchers each with its own Redis client
    settings = replace(fast, host_concurrency=2, host_delay=0.0, http_read_timeout=5.0)
    log = _recording(http_server, "/slow", hold=0.3)
    # When all six fetch at once
    results = _run_concurrently(
        6, lambda: fetch(http_server.url("/slow"), settings, connect(redis_url))
    )
    # Then all succeed and the server never saw more than 2 at a time
    assert all(getattr(r, "status", None) == 200 for r in results), results
    assert len(log["starts"]) == 6
    assert log["max"][0] <= 2
    # And the host keys left behind expire
    for key in redis_client.scan_iter(match="wk:host:*"):
        assert redis_client.pttl(key) > 0


def test_host_delay_spaces_requests_across_concurrent_fetchers(
    http_server, fast, redis_client, redis_url
):
    # Given a host requiring 0.25 s between requests
    settings = replace(fast, host_concurrency=4, host_delay=0.25)
    log = _recording(http_server, "/quick", hold=0.0)
    # When five fetchers fetch at once
    results = _run_concurrently(
        5, lambda: fetch(http_server.url("/quick"), settings, connect(redis_url))
    )
    # Then the requests were spaced by the delay: slots are granted 0.25 s apart on Redis's
    # clock; the server sees them after each client's own scheduling delay, so a loaded machine
    # can bring two arrivals closer — but never all of them (the span is at least 4 delays)
    assert all(getattr(r, "status", None) == 200 for r in results), results
    starts = sorted(log["starts"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 4 and min(gaps) >= 0.05 and starts[-1] - starts[0] >= 0.75, gaps
    for key in redis_client.scan_iter(match="wk:host:*"):
        assert redis_client.pttl(key) > 0


# --- a wall-clock deadline for the whole request, not only for each read --------------------


@pytest.fixture
def patient(fast) -> Settings:
    """Reads may wait 2 s (a byte a second is in time), so only a deadline ends a trickle."""
    return replace(fast, http_connect_timeout=1.0, http_read_timeout=2.0, http_deadline=60.0)


def timed_fetch(url: str, settings: Settings) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(url, settings)
    return str(info.value), time.monotonic() - started


def test_a_trickled_status_line_ends_at_the_request_deadline(http_server, patient):
    # Given a server sending its status line and headers one byte a second
    http_server.route("/head", trickled_head)
    # When fetched with a 1 s connect and 2 s read timeout, Then the request ends at its
    # deadline (connect plus twice the read timeout: 5 s), in one line naming the URL
    error, took = timed_fetch(http_server.url("/head"), patient)
    assert error == f"{http_server.url('/head')}: response not complete within 5s", error
    assert took < 5 + 5  # the deadline with room for a loaded machine; the trickle lasts 20 s


def test_the_fetch_deadline_bounds_every_hop_together(http_server, patient):
    # Given a redirect answered after 1.5 s, to a server trickling its headers
    def late_redirect(req):
        time.sleep(1.5)
        respond(req, 302, b"", {"Location": "/head"})

    http_server.route("/late", late_redirect)
    http_server.route("/head", trickled_head)
    # When fetched with WATCHKEEPER_HTTP_DEADLINE=4 (each hop alone could take 5 s)
    error, took = timed_fetch(http_server.url("/late"), replace(patient, http_deadline=4.0))
    # Then the fetch ends 4 s after it started, naming the setting
    assert error == (
        f"{http_server.url('/head')}: fetch not complete within 4s (WATCHKEEPER_HTTP_DEADLINE)"
    ), error
    assert took < 4 + 5


def test_a_reused_connection_is_held_to_the_deadline_too(http_server, patient):
    # Given a server answering once at once and then trickling its headers, on one connection
    ports: list[int] = []

    def first_fast_then_trickle(req):
        ports.append(req.client_address[1])
        if len(ports) == 1:
            respond(req, 200, b"ok")
        else:
            trickled_head(req)

    http_server.route("/again", first_fast_then_trickle)
    assert fetch(http_server.url("/again"), patient).body == b"ok"
    # When fetched again, Then the kept-alive connection (created by the first fetch) is cut
    # at the second fetch's deadline as a new one would be
    error, took = timed_fetch(http_server.url("/again"), patient)
    assert ports[0] == ports[1], "the connection was not reused"
    assert error.endswith("response not complete within 5s"), error
    assert took < 5 + 5


def test_a_body_cut_by_the_deadline_is_never_taken_for_a_whole_one(http_server, patient):
    # Given a body without a length (it ends when the connection closes), sent a byte a second
    def until_close(req):
        req.send_response(200)
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        with contextlib.suppress(OSError):
            for _ in range(20):
                req.wfile.write(b"x")
                req.wfile.flush()
                time.sleep(1.0)

    http_server.route("/eof", until_close)
    # When fetched with a fetch deadline (1.5 s) before the body's (the 2 s read timeout), Then
    # the socket shut down at the deadline (which reads as the end of such a body) is an error,
    # not a short body
    error, _ = timed_fetch(http_server.url("/eof"), replace(patient, http_deadline=1.5))
    assert error.endswith("fetch not complete within 1.5s (WATCHKEEPER_HTTP_DEADLINE)"), error
