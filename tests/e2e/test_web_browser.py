"""The dashboard in a real browser (Debian's chromium driven by Playwright) against
``watchkeeper run --demo``: embedded Redis, a real prefork worker, beat, listener and the web
child. Screenshots of each page go to bench/results/web-*.png (linked from docs/dashboard.md).

Needs /usr/bin/chromium and the playwright package: ``.ci/install-browser`` installs both (never
a downloaded browser build).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.helpers import ROOT, wait_for

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "bench" / "results"
POLL_INTERVAL_S = 5.0  # demo-app-logs polls every 5 s (workers/data/demo.toml)

sync_api = pytest.importorskip("playwright.sync_api", reason="run .ci/install-browser")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: run .ci/install-browser", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``watchkeeper run --demo`` with its dashboard on a free port, live every second and a
    memory point per process every second."""
    tmp = tmp_path_factory.mktemp("web-demo")
    home, port = tmp / "home", _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "WATCHKEEPER_CONFIG") and not k.startswith("PYTEST")
    }
    env.update(
        WATCHKEEPER_HOME=str(home),
        WATCHKEEPER_WEB_PORT=str(port),
        WATCHKEEPER_WEB_REFRESH="1",
        WATCHKEEPER_MEMORY_SERIES_INTERVAL="1",
        PYTHONPATH=str(ROOT),
    )
    log = (tmp / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run", "--demo", "--concurrency", "2"],
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(base + "/sources", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(lambda: up() and (home / "run.json").exists(), 90, 0.5, message="dashboard")
        from workers.core.connection import connect

        client = connect(json.loads((home / "run.json").read_text())["redis_url"])
        yield {"base": base, "redis": client, "log": tmp / "run.log"}
        client.close()
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(90)
        except subprocess.TimeoutExpired:
            run.kill()
        log.close()
    out = (tmp / "run.log").read_text()
    assert f"dashboard on http://127.0.0.1:{port}/" in out, out[-2000:]


@pytest.fixture(scope="module")
def browser(demo: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, demo: dict[str, Any]) -> Iterator[Any]:
    # bypass_csp: Playwright's string predicates are evaluated, which the dashboard's CSP forbids
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def last_poll(demo: dict[str, Any], name: str) -> str:
    return str(demo["redis"].hget(f"wk:src:{name}", "last_poll") or "")


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"web-{name}.png"), full_page=True)


def row(page: Any, name: str) -> Any:
    return page.locator(f'tr[data-source="{name}"]')


DEMO_SOURCES = ("demo-world", "demo-regional", "demo-app-logs", "demo-watches")


@pytest.mark.slow
def test_sources_page_lists_every_source_with_its_health(page, demo):
    page.goto(demo["base"] + "/sources")
    for name in DEMO_SOURCES:
        # Every demo source is listed, and once polled its health is ok (updated live)
        page.wait_for_function(
            f"document.querySelector('tr[data-source=\"{name}\"]')?.dataset.health === 'ok'",
            timeout=90_000,
        )
    assert row(page, "demo-world").locator(".health").inner_text() == "ok"
    assert "/ 10000" in row(page, "demo-world").inner_text()  # seen size against its cap
    shoot(page, "sources")


@pytest.mark.slow
def test_pause_stops_polls_for_three_intervals_and_resume_restarts_them(page, demo):
    name = "demo-app-logs"
    page.goto(demo["base"] + "/sources")
    wait_for(lambda: last_poll(demo, name), 60, 0.5, message="a first poll")
    # When the source is paused from the page
    row(page, name).locator('button[data-action="pause"]').click()
    page.wait_for_function(
        f"document.querySelector('tr[data-source=\"{name}\"]').dataset.health === 'paused'"
    )
    time.sleep(1.0)  # a poll already past its claim when the pause landed may still finish
    before = last_poll(demo, name)
    # Then no poll happens for three of its intervals
    time.sleep(3 * POLL_INTERVAL_S + 1)
    assert last_poll(demo, name) == before
    # When it is resumed, Then it is polled again within an interval or so
    row(page, name).locator('button[data-action="resume"]').click()
    wait_for(lambda: last_poll(demo, name) != before, 2 * POLL_INTERVAL_S + 5, 0.2, "a poll")
    page.wait_for_function(
        f"document.querySelector('tr[data-source=\"{name}\"]').dataset.health !== 'paused'"
    )


@pytest.mark.slow
def test_check_now_polls_within_seconds(page, demo):
    name = "demo-regional"  # every 15 s; paused so that only "check now" can poll it
    page.goto(demo["base"] + "/sources")
    wait_for(lambda: last_poll(demo, name), 60, 0.5, message="a first poll")
    row(page, name).locator('button[data-action="pause"]').click()
    page.wait_for_function(
        f"document.querySelector('tr[data-source=\"{name}\"]').dataset.health === 'paused'"
    )
    time.sleep(1.0)
    before = last_poll(demo, name)
    started = time.monotonic()
    row(page, name).locator('button[data-action="check"]').click()
    wait_for(lambda: last_poll(demo, name) != before, 10, 0.1, "the requested poll")
    assert time.monotonic() - started < 10
    row(page, name).locator('button[data-action="resume"]').click()


@pytest.mark.slow
def test_items_page_shows_new_alerts_without_a_reload(page, demo):
    page.goto(demo["base"] + "/items?stream=alerts")
    page.wait_for_selector("#items-table tbody tr[data-id]", timeout=90_000)
    newest = page.locator("#items-table tbody tr[data-id]").first.get_attribute("data-id")
    page.evaluate("window.wkNoReload = true")
    # The demo's feeds add an entry every few seconds: the table shows it without a reload
    page.wait_for_function(
        "document.querySelector('#items-table tbody tr[data-id]').dataset.id !== "
        + json.dumps(newest),
        timeout=60_000,
    )
    assert page.evaluate("window.wkNoReload") is True
    # And located alerts show their location
    page.wait_for_function(
        "[...document.querySelectorAll('#items-table tbody tr')].some("
        "r => r.cells[3] && r.cells[3].textContent.trim() !== '—')",
        timeout=60_000,
    )
    shoot(page, "items")


@pytest.mark.slow
def test_memory_chart_has_points_for_every_child(page, demo):
    page.goto(demo["base"] + "/memory")

    def children_drawn() -> Any:
        return page.evaluate(
            """() => Object.entries(window.wkCharts || {})
                 .filter(([id]) => id.startsWith('node-'))
                 .map(([id, u]) => [id, u.series.slice(1).map(s => s.label),
                                    u.data.slice(1).map(d => d.filter(v => v != null).length),
                                    u.scales.x.max > u.scales.x.min])"""
        )

    api = demo["base"] + "/api/memory"

    def ready() -> Any:
        nodes = requests.get(api, timeout=5).json()["nodes"]
        drawn = children_drawn()
        return nodes and drawn and all(min(points) >= 2 for _, _, points, _ in drawn) and drawn

    drawn = wait_for(ready, 60, 1.0, "memory points for every child")
    nodes = requests.get(api, timeout=5).json()["nodes"]
    for _, labels, points, time_axis_spans in drawn:
        assert time_axis_spans  # the points are actually plotted along a time axis
        # the parent and every pool child (2 of them, or more after a recycle) have points
        assert labels[0] == "parent"
        assert sum(label.startswith("child ") for label in labels) >= 2, labels
        assert min(points) >= 2, (labels, points)
    assert all(node["children"] >= 2 for node in nodes.values())
    page.wait_for_selector('section[data-panel="tcp"]')
    page.wait_for_selector('section[data-chart="redis"]')
    shoot(page, "memory")


@pytest.mark.slow
def test_a_dead_letter_can_be_retried(page, demo):
    from workers.core.settings import Settings
    from workers.guard.stats import MemoryStore

    name = "demo-world"
    store = MemoryStore(demo["redis"], Settings.from_env({}))
    wait_for(lambda: last_poll(demo, name), 60, 0.5, message="a first poll")
    # Given a quarantined poll of a paused source (so only the retry can poll it)
    page.goto(demo["base"] + "/sources")
    row(page, name).locator('button[data-action="pause"]').click()
    page.wait_for_function(
        f"document.querySelector('tr[data-source=\"{name}\"]').dataset.health === 'paused'"
    )
    time.sleep(1.0)
    before = last_poll(demo, name)
    call = {"args": [name], "kwargs": {"force": True}}
    store.dead_letter(
        "web-test-1", "tasks.feeds.poll_feed", f"('{name}',)", {"count": "3"}, "n", call
    )
    page.goto(demo["base"] + "/dead")
    letter = page.locator('tr[data-ref="web-test-1"]')
    letter.wait_for()
    shoot(page, "dead-letters")
    # When it is retried from the page
    letter.locator('button[data-action="retry"]').click()
    # Then the task runs again and the letter leaves the list
    wait_for(lambda: last_poll(demo, name) != before, 15, 0.2, "the retried poll")
    letter.wait_for(state="detached")
    assert len(store.dead_letters()) == 0
    page.goto(demo["base"] + "/sources")
    row(page, name).locator('button[data-action="resume"]').click()


HOSTILE_FEED = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>&lt;img src=x onerror=alert(1)&gt; breaking</title>"
    "<link>http://127.0.0.1:9/1</link></item>"
    "<item><guid>2</guid><title>second story</title><link>http://127.0.0.1:9/2</link></item>"
    "</channel></rss>"
)


@pytest.mark.slow
def test_add_preview_save_pause_remove(page, demo):
    from tests.support.helpers import HTTPFixtureServer

    feed = HTTPFixtureServer()
    feed.static("/news.rss", HOSTILE_FEED, headers={"Content-Type": "application/rss+xml"})
    feed.start()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    name = "browser-added"
    try:
        # Add: from the sources page to the feed form
        page.goto(demo["base"] + "/sources")
        page.locator('button[data-action="add"]').click()
        page.wait_for_url("**/add-source")
        page.fill('input[name="f.name"]', name)
        page.fill('input[name="f.url"]', feed.url("/news.rss"))
        page.fill('input[name="f.interval"]', "1h")
        # Preview: fetched once, what would be emitted shown (escaped), nothing written
        page.locator('button[data-action="preview"]').click()
        page.wait_for_selector('#preview[data-status="ok"]')
        rows = page.locator("#preview-rows tbody tr")
        assert rows.count() == 2
        assert "<img src=x onerror=alert(1)> breaking" in rows.first.inner_text()
        assert page.locator("#preview-rows img").count() == 0 and dialogs == []
        assert feed.hits("/news.rss") == 1
        assert demo["redis"].hget("wk:sources", name) is None
        assert not demo["redis"].exists(f"wk:src:{name}", f"wk:seen:{name}")
        shoot(page, "add-source")
        # Save: the source's page, owned by api
        page.locator('button[data-action="save"]').click()
        page.wait_for_url(f"**/sources/{name}")
        assert "owner api" in page.locator("main").inner_text()
        assert demo["redis"].hget("wk:sources", name) is not None
        # Pause: back on its page, paused
        page.locator('button[data-action="pause"]').click()
        page.wait_for_selector('#health[data-health="paused"]')
        assert demo["redis"].hget(f"wk:src:{name}", "paused") == "1"
        # Remove: confirmed, gone from the registry and the sources page
        page.locator('input[data-action="confirm"]').check()
        page.locator('button[data-action="remove"]').click()
        page.wait_for_url("**/sources")
        assert demo["redis"].hget("wk:sources", name) is None
        assert row(page, name).count() == 0
        assert dialogs == []
    finally:
        feed.stop()
