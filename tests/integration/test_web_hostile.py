"""The dashboard against hostile clients, over real HTTP: foreign Host headers (DNS rebinding),
cross-origin posts, bodies that never end, token guessing, CSRF tokens from another session,
bad paging parameters, links that are not web links, and "check now" clicked many times. The
same in a real browser: tests/e2e/test_web_hostile_browser.py."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
import requests

from tests.support.helpers import ROOT, wait_for
from tests.support.web import Sent, csrf_of, dashboard, send_body
from workers.core import keys
from workers.ops.web.items import read_page
from workers.polling.state import SourceState
from workers.store.streams import CappedStream

FEED = """
[[feeds]]
name = "web-feed"
url = "http://127.0.0.1:9/feed.rss"
interval = "1h"
"""
TOKEN = "s3cret-token-for-tests"
ATTACKER = "rebind.attacker.example"
MB = 1024 * 1024


def paused(rt: Any) -> bool:
    return SourceState.load(rt.redis, rt.settings, "web-feed").paused


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


# --- 8. Host and Origin -------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused_for_pages_and_actions(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        port = port_of(base)
        browser = requests.Session()
        csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)
        # Given a page on a name that resolves to 127.0.0.1 (DNS rebinding): its requests
        # reach the dashboard with that name in the Host header
        rebound = {"Host": f"{ATTACKER}:{port}"}
        page = browser.get(base + "/sources", headers=rebound, timeout=10)
        # Then the dashboard refuses to answer for that name: no page, no CSRF token
        assert page.status_code in (400, 421)
        assert "web-feed" not in page.text and "csrf" not in page.text.lower()
        assert len(page.text.strip().splitlines()) == 1
        for path in ("/items", "/api/memory", "/dead", "/login", "/static/htmx.min.js"):
            assert browser.get(base + path, headers=rebound, timeout=10).status_code in (400, 421)
        # And actions are refused too, even with a valid session and token
        action = browser.post(
            base + "/sources/web-feed/pause",
            data={"csrf": csrf},
            headers={**rebound, "Origin": f"http://{ATTACKER}:{port}"},
            timeout=10,
        )
        assert action.status_code in (400, 421) and not paused(runtime)
        # While the loopback names on the bound port are served
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert browser.get(base + "/sources", headers={"Host": host}, timeout=10).ok, host
        # But not another port's address, nor a loopback name without this port
        for host in (f"127.0.0.1:{port + 1}", "localhost", f"{ATTACKER}", ""):
            got = browser.get(base + "/sources", headers={"Host": host}, timeout=10)
            assert got.status_code in (400, 421), host


def test_allowed_hosts_adds_names_the_dashboard_answers_to(runtime):
    runtime.use_config(FEED)
    runtime.settings = dataclasses.replace(
        runtime.settings, web_allowed_hosts="dash.example.org, proxy.example.org:8443"
    )
    with dashboard(runtime, Sent()) as base:
        for host in ("dash.example.org", "dash.example.org:9999", "proxy.example.org:8443"):
            assert requests.get(base + "/sources", headers={"Host": host}, timeout=10).ok, host
        for host in ("proxy.example.org", "evil.dash.example.org", f"{ATTACKER}"):
            got = requests.get(base + "/sources", headers={"Host": host}, timeout=10)
            assert got.status_code in (400, 421), host


def test_a_cross_origin_post_is_refused_even_with_a_valid_token(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        port = port_of(base)
        browser = requests.Session()
        csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)
        other = f"http://127.0.0.1:{port + 1}"
        # Given a signed-in browser and its token, When another origin makes it post
        for headers in (
            {"Origin": other},
            {"Origin": "null"},
            {"Origin": f"https://{ATTACKER}"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Referer": other + "/evil.html"},
        ):
            refused = browser.post(
                base + "/sources/web-feed/pause", data={"csrf": csrf}, headers=headers, timeout=10
            )
            # Then it is refused, and the source is not paused
            assert refused.status_code == 403, headers
            assert len(refused.text.strip().splitlines()) == 1
        assert not paused(runtime)
        # When the post comes from the dashboard's own page, Then it is done
        own = browser.post(
            base + "/sources/web-feed/pause",
            data={"csrf": csrf},
            headers={"Origin": base, "Sec-Fetch-Site": "same-origin", "Referer": base + "/"},
            timeout=10,
            allow_redirects=False,
        )
        assert own.status_code == 303 and paused(runtime)


# --- 9. request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_refused_before_it_is_read(runtime, chunked):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {20 * MB}"
        head = (
            f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port_of(base)}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}"
        )
        # When a client posts 20 MB to the login form
        upload = send_body(base, head, 20 * MB, chunked=chunked)
        # Then it is told 413 long before it has sent it all, and the connection is closed
        assert upload.status == 413, upload.reply[:200]
        assert upload.sent < 8 * MB
        assert b"connection: close" in upload.reply.lower()
        # And the dashboard still serves others
        assert requests.get(base + "/sources", timeout=10).ok
        # While a body under the cap is read and goes on to the token check (403: none given)
        framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000"
        small = send_body(base, head.rsplit("\r\n", 1)[0] + "\r\n" + framing, 1000, chunked=chunked)
        assert small.status == 403, small.reply[:300]


def test_a_lying_content_length_is_refused_too(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        browser = requests.Session()
        csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        # A short body announced as long: the dashboard waits for the rest, for a while only
        runtime.settings = dataclasses.replace(runtime.settings, web_body_timeout=1.0)
    with dashboard(runtime, Sent()) as base:
        head = (
            f"POST /sources/web-feed/pause HTTP/1.1\r\nHost: 127.0.0.1:{port_of(base)}\r\n"
            f"Cookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000"
        )
        started = time.monotonic()
        stalled = send_body(base, head, 100, timeout=30)
        assert stalled.status == 408, stalled.reply[:200]
        assert time.monotonic() - started < 25
        # A body longer than the cap announced as short is cut at its length by HTTP framing:
        # the rest is a bad request, never a body
        head = head.replace("Content-Length: 4000", "Content-Length: 10")
        lied = send_body(base, head, 4 * MB)
        assert lied.sent < 4 * MB and not paused(runtime)


@pytest.fixture
def web_process(runtime, redis_url, tmp_path) -> Iterator[dict[str, Any]]:
    """``watchkeeper web`` as its own process (as ``run`` starts it), logging to web.log."""
    config = tmp_path / "sources.toml"
    config.write_text(FEED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "WATCHKEEPER_HOME": str(tmp_path),
        "WATCHKEEPER_CONFIG": str(config),
        "REDIS_URL": redis_url,
    }
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "web", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(base + "/sources", timeout=2).ok
        except requests.RequestException:
            return proc.poll() is not None

    try:
        wait_for(up, 60, 0.2, "watchkeeper web")
        assert proc.poll() is None, log.read_text()
        yield {"base": base, "pid": proc.pid, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / MB


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_150mb_login_post_is_refused_early_and_the_web_process_stays_flat(web_process, chunked):
    base, pid = web_process["base"], web_process["pid"]
    for _ in range(3):  # pages rendered once: templates compiled, pools warm
        requests.get(base + "/login", timeout=10)
    before = rss_mb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {150 * MB}"
    head = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port_of(base)}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}"
    )
    # When a client streams a 150 MB body to the login form
    try:
        upload = send_body(base, head, 150 * MB, chunked=chunked, timeout=120)
    finally:
        done.set()
        sampler.join(5)
    # Then it is refused with 413 before a tenth of it was sent
    assert upload.status == 413, upload.reply[:200]
    assert upload.sent < 15 * MB
    # And the web process's memory did not follow the body
    assert peak[0] - before < 20, (before, peak[0])
    assert requests.get(base + "/login", timeout=10).ok


# --- 10. sessions, CSRF tokens and login attempts -------------------------------------------------


def test_a_csrf_token_belongs_to_its_session(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        alice, mallory = requests.Session(), requests.Session()
        alices = csrf_of(alice.get(base + "/sources", timeout=10).text)
        mallorys = csrf_of(mallory.get(base + "/sources", timeout=10).text)
        # Each browser gets its own session and token
        assert alices != mallorys
        cookie = alice.cookies.get_dict()
        assert cookie and all(alices not in v for v in cookie.values())
        # A token from one session is refused in another, and with no session at all
        for who, token in ((mallory, alices), (alice, mallorys)):
            refused = who.post(base + "/sources/web-feed/pause", data={"csrf": token}, timeout=10)
            assert refused.status_code == 403
        anonymous = requests.post(
            base + "/sources/web-feed/pause", data={"csrf": alices}, timeout=10
        )
        assert anonymous.status_code == 403 and not paused(runtime)
        # Its own session's token is accepted
        ok = alice.post(base + "/sources/web-feed/pause", data={"csrf": alices}, timeout=10)
        assert ok.ok and paused(runtime)


def test_the_login_form_shows_each_visitor_their_own_token_and_login_rotates_it(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        # Two visitors without a session are shown different tokens, each bound to the cookie
        # that came with it
        first, second = requests.Session(), requests.Session()
        one = csrf_of(first.get(base + "/login", timeout=10).text)
        two = csrf_of(second.get(base + "/login", timeout=10).text)
        assert one != two
        crossed = second.post(base + "/login", data={"csrf": one, "token": TOKEN}, timeout=10)
        assert crossed.status_code == 403
        # Signing in gives a new session and a new token; the visitor's token is dead
        signed = first.post(
            base + "/login", data={"csrf": one, "token": TOKEN}, timeout=10, allow_redirects=False
        )
        assert signed.status_code == 303
        after = csrf_of(first.get(base + "/sources", timeout=10).text)
        assert after != one
        stale = first.post(base + "/sources/web-feed/pause", data={"csrf": one}, timeout=10)
        assert stale.status_code == 403 and not paused(runtime)
        done = first.post(base + "/sources/web-feed/pause", data={"csrf": after}, timeout=10)
        assert done.ok and paused(runtime)
        # The visitor's cookie (from before the login) does not sign anyone in
        assert second.get(base + "/sources", timeout=10).status_code == 401


def test_wrong_logins_are_throttled_per_client(runtime):
    runtime.use_config(FEED)
    limit = runtime.settings.web_login_attempts
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        guesser = requests.Session()
        csrf = csrf_of(guesser.get(base + "/login", timeout=10).text)
        codes = []
        # When a client guesses the token 100 times
        for i in range(100):
            reply = guesser.post(
                base + "/login", data={"csrf": csrf, "token": f"guess-{i}"}, timeout=10
            )
            codes.append(reply.status_code)
        # Then only the first few are checked; the rest get 429 with a Retry-After
        assert codes[:limit] == [401] * limit
        assert set(codes[limit:]) == {429}
        assert 0 < int(reply.headers["Retry-After"]) <= runtime.settings.web_login_window
        # And while throttled even the right token is not tried
        right = guesser.post(base + "/login", data={"csrf": csrf, "token": TOKEN}, timeout=10)
        assert right.status_code == 429
        # The counter is one small key per client, aged by the window
        counters = list(runtime.redis.scan_iter(match=keys.WEB_LOGINS.glob(runtime.settings)))
        assert len(counters) == 1
        assert 0 < runtime.redis.ttl(counters[0]) <= runtime.settings.web_login_window
        assert keys.match(counters[0], runtime.settings) is keys.WEB_LOGINS
        # And claiming to be someone else (X-Forwarded-For) changes nothing
        for i in range(5):
            spoofed = guesser.post(
                base + "/login",
                data={"csrf": csrf, "token": "guess"},
                headers={"X-Forwarded-For": f"10.0.0.{i}"},
                timeout=10,
            )
            assert spoofed.status_code == 429
        assert len(list(runtime.redis.scan_iter(match=keys.WEB_LOGINS.glob(runtime.settings)))) == 1
        # And while throttled the bearer header is not tried either (not even the right one)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(base + "/sources", headers=bearer, timeout=10).status_code == 429


def test_a_signed_in_session_ends_at_its_maximum_age(runtime):
    import hashlib
    import hmac

    runtime.use_config(FEED)
    max_age = runtime.settings.web_session_max_age
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        # Given a browser signed in through the login form
        browser = requests.Session()
        csrf = csrf_of(browser.get(base + "/login", timeout=10).text)
        signed = browser.post(
            base + "/login", data={"csrf": csrf, "token": TOKEN}, timeout=10, allow_redirects=False
        )
        assert signed.status_code == 303
        assert browser.get(base + "/sources", timeout=10).status_code == 200
        cookie = f"wk_session_{port_of(base)}"
        issued = signed.cookies[cookie].split(".")
        # and told the browser to forget it at its maximum age
        assert f"Max-Age={max_age}" in signed.headers["set-cookie"]
        sid, key = issued[0], hashlib.sha256(b"wk-web|" + TOKEN.encode()).digest()

        def signed_cookie(payload: str) -> str:
            mac = hmac.new(key, f"session|{payload}".encode(), hashlib.sha256).hexdigest()
            return f"{payload.replace('|', '.')}.{mac}"

        def page_with(value: str) -> int:
            headers = {"Cookie": f"{cookie}={value}"}
            return requests.get(base + "/sources", headers=headers, timeout=10).status_code

        # When the same session's cookie is older than the maximum age (signed as the
        # dashboard signs it), or has no age at all (as cookies were signed before ages)
        old = int(time.time()) - max_age - 60
        assert page_with(signed_cookie(f"{sid}|in|{old}")) == 401
        assert page_with(signed_cookie(f"{sid}|in")) == 401
        # or claims an age it was not signed with
        now = int(time.time())
        fresh = signed_cookie(f"{sid}|in|{now}")
        assert page_with(fresh) == 200
        assert page_with(fresh.replace(f".{now}.", f".{now + 1}.")) == 401


@pytest.mark.parametrize("path", ["/sources", "/api/v1/sources"])
def test_wrong_bearer_tokens_are_throttled_like_logins(runtime, path):
    runtime.use_config(FEED)
    limit = runtime.settings.web_login_attempts
    with dashboard(runtime, Sent(), token=TOKEN, api_token="api-" + TOKEN) as base:
        right = TOKEN if path == "/sources" else "api-" + TOKEN
        # Given a script that can use the right token
        assert requests.get(base + path, headers=bearer_of(right), timeout=10).ok
        # When a client guesses the token in the bearer header 100 times
        codes = []
        for i in range(100):
            reply = requests.get(base + path, headers=bearer_of(f"guess-{i}"), timeout=10)
            codes.append(reply.status_code)
        # Then only the first few are checked; the rest get 429 with a Retry-After
        assert codes[:limit] == [401] * limit
        assert set(codes[limit:]) == {429}
        assert 0 < int(reply.headers["Retry-After"]) <= runtime.settings.web_login_window
        # And while throttled the right token is not tried either, on pages and in the API
        for where in ("/sources", "/api/v1/sources"):
            token = TOKEN if where == "/sources" else "api-" + TOKEN
            refused = requests.get(base + where, headers=bearer_of(token), timeout=10)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        # The count is the login's: one small key per client
        counters = list(runtime.redis.scan_iter(match=keys.WEB_LOGINS.glob(runtime.settings)))
        assert len(counters) == 1


def bearer_of(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- 11. paging parameters and links ------------------------------------------------------------


def test_bad_paging_parameters_are_a_400_with_one_line_and_no_traceback(web_process):
    base = web_process["base"]
    for query in (
        "before=garbage",
        "before=1-2-3",
        "before=99999999999999999999999-0",
        "before=-5",
        "stream=nope",
        "stream=alerts&before=%00",
        "q=" + "x" * 5000,
    ):
        reply = requests.get(f"{base}/items?{query}", timeout=10)
        assert reply.status_code == 400, (query, reply.status_code)
        lines = reply.text.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < 200, (query, reply.text[:300])
    assert requests.get(f"{base}/items?before=1700000000000-0", timeout=10).ok
    assert requests.get(f"{base}/items?before=1700000000000", timeout=10).ok
    for edge in ("0-0", "00-000", "0", "18446744073709551615-18446744073709551615"):
        assert requests.get(f"{base}/items?before={edge}", timeout=10).ok, edge
    log = web_process["log"].read_text()
    assert "Traceback" not in log and "ResponseError" not in log, log[-2000:]


def test_only_http_and_https_links_become_links(runtime):
    s = runtime.settings
    stream = CappedStream(
        runtime.redis, keys.STREAM.key(s, "alerts"), 1000, keys.STREAM_SEQ.key(s, "alerts")
    )
    links = {
        "web": "http://example.org/a",
        "tls": "HTTPS://example.org/b",
        "httpx": "httpx://example.org/c",
        "script": "javascript:alert(1)",
        "data": "data:text/html,<script>alert(1)</script>",
        "padded": " http://example.org/d",
        "bare": "http:example.org",
        "slashes": "//example.org/e",
    }
    stream.add_many({"source": "f", "title": title, "link": link} for title, link in links.items())
    shown = {e["text"]: e["link"] for e in read_page(runtime, "alerts").entries}
    assert shown == {
        "web": "http://example.org/a",
        "tls": "HTTPS://example.org/b",
        **{t: "" for t in ("httpx", "script", "data", "padded", "bare", "slashes")},
    }
    with dashboard(runtime, Sent()) as base:
        page = requests.get(base + "/items", timeout=10).text
    hrefs = [h for h in _hrefs(page) if not h.startswith(("/", "?"))]
    assert sorted(hrefs) == ["HTTPS://example.org/b", "http://example.org/a"]


def _hrefs(html: str) -> list[str]:
    import re
    from html import unescape

    return [unescape(h) for h in re.findall(r'href="([^"]*)"', html)]


# --- Also: "check now" --------------------------------------------------------------------------

QUEUE = "wk-test-check-now"


def queued_polls(rt: Any, name: str) -> int:
    """Poll messages for ``name`` waiting in the test's broker queue."""
    found = 0
    for raw in rt.redis.lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        if name in message["headers"].get("argsrepr", ""):
            found += 1
    return found


def test_check_now_clicked_20_times_queues_one_poll(runtime, celery_app):
    runtime.use_config(FEED)
    runtime.redis.delete(QUEUE)
    sent = Sent(celery_app)
    try:
        with dashboard(runtime, sent, queue=QUEUE) as base:
            browser = requests.Session()
            csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)

            def click(_: int) -> int:
                return browser.post(
                    base + "/sources/web-feed/check",
                    headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
                    timeout=30,
                ).status_code

            # When "check now" is clicked 20 times at once
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(click, range(20)))
            assert set(codes) == {200}, codes
            # Then one poll is queued, forced, under the source's queued marker
            assert queued_polls(runtime, "web-feed") == 1
            assert runtime.redis.llen(QUEUE) == 1
            assert sent.calls == [("tasks.feeds.poll_feed", ["web-feed"], {"force": True})]
            marker = keys.QUEUED.key(runtime.settings, "feed:web-feed")
            assert runtime.redis.get(marker) == sent.options[0]["task_id"]
            assert 0 < runtime.redis.ttl(marker) <= runtime.settings.queued_max_age
            # When that poll has started (its claim clears the marker), a click queues another
            runtime.redis.delete(marker)
            assert click(0) == 200
            assert queued_polls(runtime, "web-feed") == 2
            # And with the broker queue at its cap, a click queues nothing and says why
            runtime.redis.delete(marker)
            runtime.settings = dataclasses.replace(runtime.settings, max_queue_length=2)
            full = browser.post(
                base + "/sources/web-feed/check", headers={"X-CSRF-Token": csrf}, timeout=10
            )
            assert full.status_code == 503 and "queue" in full.text
            assert runtime.redis.llen(QUEUE) == 2
    finally:
        runtime.redis.delete(QUEUE)


def test_check_now_polls_a_paused_source_and_leaves_beats_counters_alone(runtime, celery_app):
    runtime.use_config(FEED)
    runtime.redis.delete(QUEUE)
    sent = Sent(celery_app)
    try:
        with dashboard(runtime, sent, queue=QUEUE) as base:
            browser = requests.Session()
            csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)
            headers = {"X-CSRF-Token": csrf}
            assert browser.post(base + "/sources/web-feed/pause", headers=headers, timeout=10).ok
            # Given a scheduled poll queued just before the pause (it will skip the source)
            marker = keys.QUEUED.key(runtime.settings, "feed:web-feed")
            runtime.redis.set(marker, "a-scheduled-poll", ex=60)
            # A paused source is still checked on request (the poll is forced)
            assert browser.post(base + "/sources/web-feed/check", headers=headers, timeout=10).ok
            assert queued_polls(runtime, "web-feed") == 1
            assert sent.calls == [("tasks.feeds.poll_feed", ["web-feed"], {"force": True})]
            assert runtime.redis.get(marker) == sent.options[0]["task_id"]
            # And a second click waits for that forced poll
            assert browser.post(base + "/sources/web-feed/check", headers=headers, timeout=10).ok
            assert queued_polls(runtime, "web-feed") == 1
            # And a click is not a beat pass: status does not see a beat that is not there
            stats = runtime.redis.hgetall(keys.BEAT_STATS.key(runtime.settings))
            assert "last_pass" not in stats
    finally:
        runtime.redis.delete(QUEUE)
