"""The dashboard over real HTTP (uvicorn on 127.0.0.1) against the test Redis: who may see it,
who may act, and what its pages read. The browser tests are in tests/e2e/test_web_browser.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests

from tests.support.helpers import ROOT
from tests.support.web import Sent, csrf_of, dashboard
from workers.core import keys
from workers.core.settings import Settings
from workers.guard.stats import MemoryStore
from workers.ops.web.items import read_page
from workers.ops.web.memory import memory_data
from workers.polling.state import SourceState
from workers.store.streams import CappedStream

FEED = """
[[feeds]]
name = "web-feed"
url = "http://127.0.0.1:9/feed.rss"
interval = "1h"
"""
TOKEN = "s3cret-token-for-tests"


def test_requests_without_the_token_get_401_and_the_login_form(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        # Given a dashboard with a token, When a request carries none
        for path in ("/sources", "/items", "/dead", "/memory", "/api/memory"):
            response = requests.get(base + path, timeout=10, allow_redirects=False)
            # Then it gets 401 and the login form, and nothing of the page
            assert response.status_code == 401, path
            assert 'name="token"' in response.text
            assert "web-feed" not in response.text
        # And a wrong bearer token is no better
        wrong = requests.get(
            base + "/sources", headers={"Authorization": "Bearer nope"}, timeout=10
        )
        assert wrong.status_code == 401
        # And the static files need no login (the login form uses them)
        assert requests.get(base + "/static/htmx.min.js", timeout=10).status_code == 200


def test_bearer_token_or_the_login_cookie_let_a_request_in(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        page = requests.get(base + "/sources", headers=bearer, timeout=10)
        assert page.status_code == 200 and "web-feed" in page.text
        # When a browser signs in through the form
        browser = requests.Session()
        form = browser.get(base + "/login", timeout=10)
        bad = browser.post(
            base + "/login", data={"csrf": csrf_of(form.text), "token": "guess"}, timeout=10
        )
        assert bad.status_code == 401
        signed = browser.post(
            base + "/login",
            data={"csrf": csrf_of(form.text), "token": TOKEN},
            timeout=10,
            allow_redirects=False,
        )
        assert signed.status_code == 303
        # Then its cookie is not the token, is HttpOnly, and lets it in
        cookie = signed.headers["set-cookie"]
        assert TOKEN not in cookie and "httponly" in cookie.lower()
        assert browser.get(base + "/sources", timeout=10).status_code == 200


def test_actions_without_the_csrf_token_get_403(runtime):
    runtime.use_config(FEED)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with dashboard(runtime, Sent(), token=TOKEN) as base:
        # Given a signed-in client, When it posts an action without the CSRF token
        refused = requests.post(base + "/sources/web-feed/pause", headers=bearer, timeout=10)
        wrong = requests.post(
            base + "/sources/web-feed/pause",
            headers={**bearer, "X-CSRF-Token": "0" * 64},
            timeout=10,
        )
        # Then it is refused and the source is not paused
        assert refused.status_code == 403 and wrong.status_code == 403
        assert not SourceState.load(runtime.redis, runtime.settings, "web-feed").paused
        # When it sends the token from a page, Then the action is done
        csrf = csrf_of(requests.get(base + "/sources", headers=bearer, timeout=10).text)
        done = requests.post(
            base + "/sources/web-feed/pause",
            headers={**bearer, "X-CSRF-Token": csrf, "HX-Request": "true"},
            timeout=10,
        )
        assert done.status_code == 200 and done.headers["HX-Trigger"] == "refresh"
        assert SourceState.load(runtime.redis, runtime.settings, "web-feed").paused


def test_pause_keeps_the_state_and_resume_makes_the_source_due(runtime):
    runtime.use_config(FEED)
    key = keys.SOURCE_STATE.key(runtime.settings, "web-feed")
    sent = Sent()
    with dashboard(runtime, sent) as base:
        browser = requests.Session()
        csrf = csrf_of(browser.get(base + "/sources", timeout=10).text)
        # When the source is paused (a plain form post, as without JavaScript)
        paused = browser.post(
            base + "/sources/web-feed/pause", data={"csrf": csrf}, timeout=10, allow_redirects=False
        )
        assert paused.status_code == 303
        # Then it is paused with no TTL (nothing polls it to refresh one), shown as paused
        assert runtime.redis.hget(key, "paused") == "1" and runtime.redis.ttl(key) == -1
        assert 'data-health="paused"' in browser.get(base + "/sources", timeout=10).text
        # When it is resumed, Then it is due at once and ages like any state again
        browser.post(base + "/sources/web-feed/resume", data={"csrf": csrf}, timeout=10)
        assert runtime.redis.hget(key, "paused") is None
        assert runtime.redis.ttl(key) > 0
        # And "check now" sends the kind's poll task, forced
        browser.post(base + "/sources/web-feed/check", data={"csrf": csrf}, timeout=10)
        assert sent.calls == [("tasks.feeds.poll_feed", ["web-feed"], {"force": True})]


def test_read_only_shows_no_actions_and_refuses_them(runtime):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent(), read_only=True) as base:
        browser = requests.Session()
        page = browser.get(base + "/sources", timeout=10).text
        assert "web-feed" in page and "Pause" not in page and "Check now" not in page
        refused = browser.post(
            base + "/sources/web-feed/pause", data={"csrf": csrf_of(page)}, timeout=10
        )
        assert refused.status_code == 403 and "read-only" in refused.text


@pytest.mark.parametrize("command", [["web", "--host", "0.0.0.0"], ["run"]])
def test_non_loopback_without_a_token_exits_2_with_one_line(command, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "WATCHKEEPER_HOME": str(tmp_path),
        "WATCHKEEPER_WEB_HOST": "0.0.0.0",
        "REDIS_URL": "redis://127.0.0.1:9/0",  # refused before Redis is reached
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "WATCHKEEPER_WEB_TOKEN" in lines[0], proc.stderr


def test_items_are_filtered_and_paged_newest_first(runtime):
    s = runtime.settings
    stream = CappedStream(
        runtime.redis, keys.STREAM.key(s, "alerts"), 1000, keys.STREAM_SEQ.key(s, "alerts")
    )
    stream.add_many(
        {"source": "f", "title": f"{'quake' if i % 10 == 0 else 'news'} {i}"} for i in range(120)
    )
    first = read_page(runtime, "alerts", size=50)
    assert [e["text"] for e in first.entries[:2]] == ["news 119", "news 118"]
    second = read_page(runtime, "alerts", before=first.older, size=50)
    assert second.entries[0]["text"] == "news 69"
    quakes = read_page(runtime, "alerts", query="QUAKE", size=5)
    assert [e["text"] for e in quakes.entries] == [f"quake {i}" for i in (110, 100, 90, 80, 70)]
    rest = read_page(runtime, "alerts", query="quake", before=quakes.older, size=50)
    assert [e["text"] for e in rest.entries][-1] == "quake 0" and rest.older == ""


def test_memory_series_is_capped_and_marks_recycles_and_hard_stops(runtime):
    settings = Settings.from_env({"WATCHKEEPER_MEMORY_SERIES_POINTS": "3"})
    store = MemoryStore(runtime.redis, settings)
    record = {"uss_mb": 40.0, "children": [{"pid": 11, "uss_mb": 30.0}, {"pid": 12, "rss_mb": 31}]}
    for _ in range(4):
        store.add_point("node-a", record)
    store.count("node-a", "recycles:memory")
    store.count("node-a", "recycles:hard")
    store.add_point("node-a", record)
    key = keys.MEM_SERIES.key(settings, "node-a")
    assert runtime.redis.llen(key) == 3 and runtime.redis.ttl(key) > 0
    chart = memory_data(runtime)["nodes"]["node-a"]
    assert set(chart["series"]) == {"parent", "child 11", "child 12"}
    assert chart["series"]["child 12"] == [31, 31, 31]
    assert sorted(m["label"] for m in chart["marks"]) == ["hard stop", "recycle (memory)"]


def test_a_task_dead_letter_is_retried_with_its_arguments_and_leaves_the_list(runtime):
    runtime.use_config(FEED)
    store = MemoryStore(runtime.redis, runtime.settings)
    call = {"args": ["web-feed"], "kwargs": {"force": True}}
    store.dead_letter("t-1", "tasks.feeds.poll_feed", "('web-feed',)", {"count": "3"}, "n", call)
    store.dead_letter("t-2", "tasks.feeds.poll_feed", "(<object>,)", {"count": "3"}, "n", None)
    sent = Sent()
    with dashboard(runtime, sent) as base:
        browser = requests.Session()
        page = browser.get(base + "/dead", timeout=10).text
        assert 'data-ref="t-1"' in page and 'data-ref="t-2"' in page
        csrf = csrf_of(page)
        retried = browser.post(
            base + "/dead/tasks/retry", data={"csrf": csrf, "ref": "t-1"}, timeout=10
        )
        assert retried.ok
        assert sent.calls == [("tasks.feeds.poll_feed", ["web-feed"], {"force": True})]
        # A letter whose arguments were not kept cannot be retried, only dropped
        kept = browser.post(
            base + "/dead/tasks/retry", data={"csrf": csrf, "ref": "t-2"}, timeout=10
        )
        assert kept.status_code == 409
        dropped = browser.post(
            base + "/dead/tasks/drop", data={"csrf": csrf, "ref": "t-2"}, timeout=10
        )
        assert dropped.ok
    assert len(store.dead_letters()) == 0


def test_a_delivery_dead_letter_is_retried_and_another_dropped_from_the_page(runtime):
    from tasks.notify.tasks import deliver_all
    from tests.support.notify import add_alerts, alert, fast, pump
    from tests.support.notify_receivers import JsonReceiver
    from workers.core.dead_letters import BOXES

    hook = JsonReceiver().start()
    try:
        rt = fast(runtime, notify_max_attempts=2)
        hook.behaviour = lambda n, p: "500"
        rt.use_config(f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
        deliver_all(rt)
        add_alerts(rt, [alert(1), alert(2)])
        box = BOXES["deliveries"]
        pump(lambda: deliver_all(rt), lambda: box.size(rt)["size"] == 2)
        with dashboard(rt, Sent()) as base:
            browser = requests.Session()
            page = browser.get(base + "/dead", timeout=10).text
            refs = re.findall(r'data-ref="(ops/[^"]+)"', page)
            assert len(refs) == 2
            hook.behaviour = lambda n, p: "ok"
            csrf = csrf_of(page)
            for action, ref in (("retry", refs[0]), ("drop", refs[1])):
                done = browser.post(
                    f"{base}/dead/deliveries/{action}", data={"csrf": csrf, "ref": ref}, timeout=10
                )
                assert done.ok, done.text
        deliver_all(rt)
        assert len(hook.accepted) == 1 and box.size(rt)["size"] == 0
    finally:
        hook.stop()
