"""Polite by the source's own word, through the poll loop (issue 21 #6): a local server answers
with Cache-Control max-age, Expires, an RSS ttl, skipHours, skipDays; the stored next_check is
checked against the poll's start on Redis's clock (``last_poll``), within the source's clamps,
with the reason stored, shown in status (JSON and text) and in the dashboard's rows."""

from __future__ import annotations

from dataclasses import replace
from email.utils import formatdate

import pytest

from tests.support.helpers import respond
from workers.ops.status import collect_status, render_text
from workers.ops.web.sources import source_rows
from workers.polling.poll import poll_now

SLACK = 5.0
"""Seconds between the poll's start and its write, at most, on this busy machine: the wait is
counted from the start, so next_check - last_poll is the wait to within the poll's own time."""


def rss(channel: str = "") -> str:
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{channel}'
        "<item><title>a</title><guid>urn:a</guid></item></channel></rss>"
    )


@pytest.fixture
def rt(runtime):  # type: ignore[no-untyped-def]
    runtime.settings = replace(runtime.settings, host_delay=0.0)
    return runtime


def redis_now(rt) -> float:  # type: ignore[no-untyped-def]
    seconds, micros = rt.redis.time()
    return float(seconds) + micros / 1e6


def poll(rt, server, path: str, extra: str = "", kind: str = "feeds") -> dict[str, str]:  # type: ignore[no-untyped-def]
    rt.use_config(
        f'[[{kind}]]\nname = "src"\nurl = "{server.url(path)}"\ninterval = "60s"\n{extra}'
        + ("locate = false\n" if kind == "feeds" else "")
    )
    result = poll_now(rt, rt.config().get("src"))
    assert result["status"] in ("ok", "not_modified"), result
    state = rt.redis.hgetall("wk:src:src")
    assert abs(float(state["next_check"]) - result["next_check"]) <= SLACK
    return state


def about(seconds: float, expected: float) -> bool:
    return abs(seconds - expected) <= SLACK


def waited(state: dict[str, str]) -> float:
    return float(state["next_check"]) - float(state["last_poll"])


def feed_route(server, path: str, body: str, headers: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    server.static(path, body, headers={"Content-Type": "application/rss+xml", **(headers or {})})


def test_without_a_signal_the_interval(rt, http_server):
    feed_route(http_server, "/f", rss())
    state = poll(rt, http_server, "/f")
    assert state["next_check_reason"] == "interval" and about(waited(state), 60)


def test_cache_control_max_age_within_the_clamp(rt, http_server):
    feed_route(http_server, "/f", rss(), {"Cache-Control": "public, max-age=600"})
    state = poll(rt, http_server, "/f")
    assert state["next_check_reason"] == "cache-control max-age=600"
    assert about(waited(state), 600)
    # beyond interval_max it is cut to it
    state = poll(rt, http_server, "/f", 'interval_max = "5m"\n')
    assert state["next_check_reason"] == "cache-control max-age=600, cut to interval_max 5m"
    assert about(waited(state), 300)
    # shorter than the interval, the interval (the default interval_min)
    feed_route(http_server, "/short", rss(), {"Cache-Control": "max-age=10"})
    state = poll(rt, http_server, "/short")
    assert state["next_check_reason"] == "cache-control max-age=10, raised to interval_min 60s"
    assert about(waited(state), 60)


def test_expires_against_the_servers_date(rt, http_server):
    def handler(req) -> None:  # type: ignore[no-untyped-def]
        now = redis_now(rt)
        respond(
            req,
            200,
            rss(),
            {"Content-Type": "application/rss+xml", "Expires": formatdate(now + 600, usegmt=True)},
        )

    http_server.route("/f", handler)  # the server sends its own Date header too
    state = poll(rt, http_server, "/f")
    assert state["next_check_reason"].startswith("expires in")
    assert about(waited(state), 600)  # Expires - Date, both whole seconds


def test_rss_ttl_and_a_304_keeps_it(rt, http_server):
    def handler(req) -> None:  # type: ignore[no-untyped-def]
        if req.headers.get("If-None-Match") == '"v1"':
            respond(req, 304)
        else:
            respond(
                req,
                200,
                rss("<ttl>10</ttl>"),
                {"Content-Type": "application/rss+xml", "ETag": '"v1"'},
            )

    http_server.route("/f", handler)
    state = poll(rt, http_server, "/f")
    assert state["next_check_reason"] == "ttl 10" and about(waited(state), 600)
    again = poll(rt, http_server, "/f")  # conditional: 304, no body
    assert again["last_status"] == "not_modified"
    assert again["next_check_reason"] == "ttl 10" and about(waited(again), 600)


def test_skip_hours_on_redis_time(rt, http_server):
    hour = int(redis_now(rt) // 3600)
    skipped = f"<hour>{hour % 24}</hour><hour>{(hour + 1) % 24}</hour>"
    feed_route(http_server, "/f", rss(f"<skipHours>{skipped}</skipHours>"))
    state = poll(rt, http_server, "/f", 'interval_max = "3h"\n')
    assert state["next_check_reason"] == "skipHours"
    assert abs(float(state["next_check"]) - (hour + 2) * 3600) <= SLACK


def test_skip_days_on_redis_time(rt, http_server):
    day = int(redis_now(rt) // 86400)
    names = ("Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday")
    skipped = f"<day>{names[day % 7]}</day><day>{names[(day + 1) % 7]}</day>"
    feed_route(http_server, "/f", rss(f"<skipDays>{skipped}</skipDays>"))
    state = poll(rt, http_server, "/f", 'interval_max = "72h"\n')
    assert state["next_check_reason"] == "skipDays"
    assert abs(float(state["next_check"]) - (day + 2) * 86400) <= SLACK


def test_honour_cache_false_and_errors_keep_their_own_reasons(rt, http_server):
    feed_route(http_server, "/f", rss("<ttl>10</ttl>"), {"Cache-Control": "max-age=900"})
    state = poll(rt, http_server, "/f", "honour_cache = false\n")
    assert state["next_check_reason"] == "interval" and about(waited(state), 60)
    http_server.static("/busy", "slow down", 429, {"Retry-After": "120"})
    rt.use_config(f'[[feeds]]\nname = "busy"\nurl = "{http_server.url("/busy")}"\n')
    result = poll_now(rt, rt.config().get("busy"))
    assert result["status"] == "error" and result["next_check_reason"] == "retry-after 120s"
    assert rt.redis.hget("wk:src:busy", "next_check_reason") == "retry-after 120s"


def test_a_log_endpoint_and_a_site_honour_cache_headers_too(rt, http_server):
    http_server.static(
        "/logs",
        '{"id": 1}\n',
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "max-age=300"},
    )
    state = poll(rt, http_server, "/logs", 'format = "ndjson"\n', kind="http_logs")
    assert state["next_check_reason"] == "cache-control max-age=300"
    from tests.integration.test_scrape import card, listing_html, site_toml

    http_server.static(
        "/l",
        listing_html(card("w1")),
        headers={"Content-Type": "text/html", "Cache-Control": "max-age=600"},
    )
    rt.use_config(site_toml("shop", http_server.url("/l")))
    result = poll_now(rt, rt.config().get("shop"))
    assert result["status"] == "ok" and result["next_check_reason"] == "cache-control max-age=600"
    state = rt.redis.hgetall("wk:src:shop")
    assert about(waited(state), 600)


def test_status_and_the_dashboard_show_why(rt, http_server):
    feed_route(http_server, "/f", rss("<ttl>10</ttl>"))
    poll(rt, http_server, "/f")
    status = collect_status(rt)
    src = status["sources"]["src"]
    assert src["next_check_reason"] == "ttl 10"
    assert (src["interval_min_s"], src["interval_max_s"]) == (
        60,
        60 * rt.settings.interval_max_factor,
    )
    assert "(ttl 10)" in render_text(status)
    row = next(r for r in source_rows(rt) if r["name"] == "src")
    assert row["next_reason"] == "ttl 10"
