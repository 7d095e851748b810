"""Pages of other origins against the dashboard, in a real browser (Debian's chromium driven by
Playwright): a DNS-rebinding page (a name that resolves to 127.0.0.1, by chromium's
``--host-resolver-rules``) and a page on another local port holding a stolen CSRF token. Neither
may read the sources page or pause a source. Also: item links that are not web links.

Needs /usr/bin/chromium and the playwright package: ``.ci/install-browser`` installs both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.web import Sent, dashboard
from workers.core import keys
from workers.polling.state import SourceState
from workers.store.streams import CappedStream

CHROMIUM = Path("/usr/bin/chromium")
ATTACKER = "rebind.attacker.example"
FEED = """
[[feeds]]
name = "web-feed"
url = "http://127.0.0.1:9/feed.rss"
interval = "1h"
"""

NETWORK_ACCESS_CHECKS = (
    "BlockInsecurePrivateNetworkRequests",
    "PrivateNetworkAccessSendPreflights",
    "PrivateNetworkAccessRespectPreflightResults",
    "LocalNetworkAccessChecks",
)
"""Chromium's own guard against public pages calling loopback, off: Firefox and Safari have
none, and the dashboard must not rely on one browser's (with it on, the rebinding page's
requests never reach the dashboard, and this test would prove nothing)."""

sync_api = pytest.importorskip("playwright.sync_api", reason="run .ci/install-browser")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: run .ci/install-browser", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1",
                f"--disable-features={','.join(NETWORK_ACCESS_CHECKS)}",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp: Playwright's string predicates are evaluated, which the dashboard's CSP forbids
    context = browser.new_context(bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def paused(rt: Any) -> bool:
    return SourceState.load(rt.redis, rt.settings, "web-feed").paused


ATTACK = """<!doctype html><title>cute cats</title><script>
(async () => {
  const out = {};
  try {
    const page = await fetch('/sources');
    const text = await page.text();
    out.status = page.status;
    out.read = text.includes('web-feed');
    const found = text.match(/"X-CSRF-Token": "([0-9a-f]+)"/);
    out.token = found ? found[1] : '';
    const act = await fetch('/sources/web-feed/pause', {
      method: 'POST', headers: {'X-CSRF-Token': out.token, 'HX-Request': 'true'}});
    out.pause = act.status;
  } catch (e) { out.error = String(e); }
  window.result = out;
})();
</script>"""


def test_a_dns_rebinding_page_cannot_read_the_sources_or_pause_one(runtime, page):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        port = base.rsplit(":", 1)[1]
        origin = f"http://{ATTACKER}:{port}"
        # Given a page the attacker served from its own name on the dashboard's port; the name
        # now resolves to 127.0.0.1 (rebound), so the page's same-origin requests reach the
        # dashboard — only this first document comes from the attacker
        page.route(
            origin + "/cats.html",
            lambda route: route.fulfill(body=ATTACK, content_type="text/html"),
        )
        page.goto(origin + "/cats.html")
        page.wait_for_function("window.result !== undefined")
        result = page.evaluate("window.result")
        # Then the dashboard did not answer for that name: nothing read, nothing paused
        assert result.get("status") in (400, 421), result
        assert result.get("read") is False and result.get("token") == "", result
        assert result.get("pause") in (400, 421), result
        assert not paused(runtime)


def test_a_page_on_another_port_cannot_read_the_sources_or_use_a_stolen_token(
    runtime, page, http_server
):
    runtime.use_config(FEED)
    with dashboard(runtime, Sent()) as base:
        # Given a browser with the dashboard open (its session cookie and token)
        page.goto(base + "/sources")
        page.wait_for_selector('tr[data-source="web-feed"]')
        token = json.loads(page.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"]
        # And a page on another local port (same site: the cookie goes along) that knows the
        # token and posts a form to the dashboard
        http_server.static(
            "/read.html",
            "<!doctype html><script>fetch(" + json.dumps(base + "/sources") + ", "
            "{credentials: 'include'}).then(r => r.text()).then(t => window.result = t, "
            "e => window.result = 'refused: ' + e)</script>",
            headers={"Content-Type": "text/html"},
        )
        http_server.static(
            "/post.html",
            f'<!doctype html><form method="post" action="{base}/sources/web-feed/pause">'
            f'<input type="hidden" name="csrf" value="{token}"></form>'
            "<script>document.forms[0].submit()</script>",
            headers={"Content-Type": "text/html"},
        )
        # When it tries to read the sources page, Then the browser does not let it
        page.goto(http_server.url("/read.html"))
        page.wait_for_function("window.result !== undefined")
        assert page.evaluate("window.result").startswith("refused"), "read cross-origin"
        # When it posts the form with the stolen token, Then the dashboard refuses it (Origin)
        with page.expect_response(lambda r: "/sources/web-feed/pause" in r.url) as posted:
            page.goto(http_server.url("/post.html"))
        assert posted.value.status == 403
        assert not paused(runtime)
        # While the dashboard's own page still can
        page.goto(base + "/sources")
        page.locator('tr[data-source="web-feed"] button[data-action="pause"]').click()
        page.wait_for_function(
            "document.querySelector('tr[data-source=\"web-feed\"]').dataset.health === 'paused'"
        )
        assert paused(runtime)


def test_only_web_links_are_links_in_the_items_page(runtime, page):
    s = runtime.settings
    stream = CappedStream(
        runtime.redis, keys.STREAM.key(s, "alerts"), 1000, keys.STREAM_SEQ.key(s, "alerts")
    )
    links = [
        "https://example.org/ok",
        "httpx://example.org/x",
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "http://example.org/ok",
    ]
    stream.add_many({"source": "f", "title": f"item {i}", "link": u} for i, u in enumerate(links))
    with dashboard(runtime, Sent()) as base:
        page.goto(base + "/items?stream=alerts")
        page.wait_for_selector("#items-table tbody tr[data-id]")
        hrefs = page.evaluate("[...document.querySelectorAll('#items-table a')].map(a => a.href)")
        assert sorted(hrefs) == ["http://example.org/ok", "https://example.org/ok"]
