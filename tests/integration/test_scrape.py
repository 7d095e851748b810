"""Listing-site scraping against real local HTTP servers, a real Redis and a real worker."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import replace
from typing import Any

import psutil
import pytest

from tasks.scrape.crawl import Crawl
from tasks.scrape.extract import extract_page
from tasks.scrape.history import history_rows
from tasks.scrape.robots import RobotsCache, RobotsRules, RobotsUnavailable
from tasks.scrape.source import SiteSource
from tasks.scrape.tasks import (
    SITES,
    collected_from_crawl,
    record_run,
    rss_mb,
    scrape,
    scrape_site,
)
from tests.support.helpers import respond, wait_for
from workers.core import keys
from workers.ops.status import collect_status
from workers.polling.locks import acquire_lock, release_lock
from workers.polling.poll import poll_now, write
from workers.polling.state import SourceState
from workers.store.streams import CappedStream

FIELDS = """
[sites.fields]
ref = ":scope@data-id"
title = "h2 a"
link = "h2 a@href"
price = ".price"
"""


def card(ref: str | None, title: str | None = None, price: str | None = "€1,250.00") -> str:
    attr = f' data-id="{ref}"' if ref is not None else ""
    price_html = f'<span class="price">{price}</span>' if price is not None else ""
    return (
        f'<div class="listing"{attr}><h2><a href="/watch/{ref}">{title or f"Watch {ref}"}'
        f"</a></h2>{price_html}</div>"
    )


def listing_html(*cards: str, next_href: str | None = None) -> str:
    nav = f'<a class="next" href="{next_href}">next</a>' if next_href else ""
    return f"<!doctype html><html><body>{''.join(cards)}<nav>{nav}</nav></body></html>"


def html_route(server: Any, path: str, html: str) -> None:
    server.static(path, html, headers={"Content-Type": "text/html; charset=utf-8"})


def site_toml(
    name: str,
    url: str,
    *,
    item: str = "div.listing",
    max_pages: int = 1,
    robots: bool = False,
    extra: str = "",
) -> str:
    return (
        f'[[sites]]\nname = "{name}"\nurl = "{url}"\ninterval = "1m"\nitem = "{item}"\n'
        f'id = "ref"\nnext_page = "a.next@href"\nmax_pages = {max_pages}\nprice = "price"\n'
        f"robots = {'true' if robots else 'false'}\n{extra}{FIELDS}"
    )


@pytest.fixture
def rt(runtime):  # type: ignore[no-untyped-def]
    """The test runtime without the 1 s per-host delay (every test server is one host)."""
    runtime.settings = replace(runtime.settings, host_delay=0.0)
    return runtime


def configure(rt: Any, *tomls: str) -> list[SiteSource]:
    config = rt.use_config("\n".join(tomls)).config()
    return list(config.of_kind("site"))


def listings(rt: Any) -> list[dict[str, Any]]:
    stream = CappedStream(rt.redis, keys.STREAM.key(rt.settings, "listings"), 100_000)
    return [fields for _, fields in stream.latest(100_000)]


# --- the happy path -------------------------------------------------------------------------


def test_new_listings_go_to_the_stream_once_with_site_time_and_fields(rt, http_server) -> None:
    # Given a site serving three listings
    html_route(http_server, "/listings", listing_html(card("w1"), card("w2"), card("w3")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    # When it is scraped twice
    first = scrape(rt, site, scheduled=False)
    second = scrape(rt, site, scheduled=False)

    # Then the listings reached the stream once, with site, fetched_at, fields and price
    assert (first["status"], first["fetched"], first["new"]) == ("ok", 3, 3)
    assert (second["fetched"], second["new"], second["duplicate"]) == (3, 0, 3)
    entries = listings(rt)
    assert [e["id"] for e in entries] == ["w1", "w2", "w3"]
    assert entries[0]["site"] == "shop" and entries[0]["fetched_at"].startswith("20")
    assert entries[0]["fields"] == {
        "ref": "w1",
        "title": "Watch w1",
        "price": "€1,250.00",
        "link": http_server.url("/watch/w1"),
    }
    assert (entries[0]["price_amount"], entries[0]["price_currency"]) == ("1250.0", "EUR")


def test_a_listing_that_appears_later_is_emitted_then(rt, http_server) -> None:
    pages = [listing_html(card("w1")), listing_html(card("w2"), card("w1"))]
    http_server.route(
        "/listings",
        lambda req: respond(
            req,
            200,
            pages[min(1, http_server.hits("/listings") - 1)],
            {"Content-Type": "text/html"},
        ),
    )
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    assert scrape(rt, site, scheduled=False)["new"] == 1
    assert scrape(rt, site, scheduled=False)["new"] == 1
    assert [e["id"] for e in listings(rt)] == ["w1", "w2"]


def test_pagination_follows_next_links_up_to_max_pages(rt, http_server) -> None:
    for n in range(1, 5):
        html_route(
            http_server,
            f"/p{n}",
            listing_html(card(f"w{n}a"), card(f"w{n}b"), next_href=f"/p{n + 1}"),
        )
    (site,) = configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=3))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["status"], outcome["pages"], outcome["new"]) == ("ok", 3, 6)
    assert http_server.hits("/p4") == 0


# --- bad input, each reported for its site --------------------------------------------------


def test_selector_matching_nothing_is_a_site_warning_in_status(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1")))
    url = http_server.url("/listings")
    (site,) = configure(rt, site_toml("shop", url, item="div.product"))

    outcome = scrape(rt, site, scheduled=False)

    expected = f"0 items: selector 'div.product' matched nothing on {url}"
    assert outcome["status"] == "ok" and outcome["fetched"] == 0
    assert outcome["warnings"] == [expected]
    shop = collect_status(rt)["sources"]["shop"]
    assert shop["warnings"] == [expected]
    assert shop["last_run"]["warnings"] == [expected]
    assert shop["state"]["last_warning"] == expected


def test_items_missing_a_field_are_kept_empty_and_counted(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1", price=None), card("w2")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert outcome["new"] == 2 and outcome["incomplete"] == 1
    assert listings(rt)[0]["fields"]["price"] == ""
    assert listings(rt)[0]["price_amount"] == ""
    assert history_rows(rt, "shop", 1)[0]["missing_fields"] == {"price": 1}


def test_items_without_an_id_are_skipped_and_counted(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card(None), card("w2"), card("")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["fetched"], outcome["missing_id"]) == (1, 2)
    assert [e["id"] for e in listings(rt)] == ["w2"]


def test_duplicate_ids_on_a_page_are_counted_once(rt, http_server) -> None:
    html_route(
        http_server, "/listings", listing_html(card("w1"), card("w1"), card("w2"), card("w1"))
    )
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["fetched"], outcome["new"], outcome["duplicates_on_pages"]) == (2, 2, 2)
    assert [e["id"] for e in listings(rt)] == ["w1", "w2"]


def test_pagination_loop_is_detected_and_reported(rt, http_server) -> None:
    html_route(http_server, "/p1", listing_html(card("w1"), next_href="/p2"))
    html_route(http_server, "/p2", listing_html(card("w2"), next_href="/p1#top"))
    (site,) = configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=50))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["status"], outcome["pages"], outcome["new"]) == ("ok", 2, 2)
    assert http_server.hits("/p1") == 1
    assert outcome["warnings"] == [
        f"pagination loop: page 2 ({http_server.url('/p2')}) links back to {http_server.url('/p1')}"
    ]


def test_hostile_next_link_longer_than_the_field_cap_is_ignored(rt, http_server) -> None:
    html_route(http_server, "/p1", listing_html(card("w1"), next_href="/p2?" + "x" * 5000))
    (site,) = configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=3))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["status"], outcome["pages"], outcome["new"]) == ("ok", 1, 1)
    assert outcome["warnings"] == [
        "page 1: next page link of 5026 characters ignored (WATCHKEEPER_SCRAPE_MAX_FIELD_CHARS)"
    ]
    assert http_server.hits("/p2") == 0


def test_errors_quoting_long_urls_are_shortened_in_the_history(rt, http_server) -> None:
    long_path = "/p2" + "y" * 1900
    html_route(http_server, "/p1", listing_html(card("w1"), next_href=long_path))
    (site,) = configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=2))

    outcome = scrape(rt, site, scheduled=False)

    assert outcome["status"] == "partial"
    run = history_rows(rt, "shop", 1)[0]
    assert len(run["errors"]) == 1 and len(run["errors"][0]) == 500
    assert run["errors"][0].startswith("page 2: ")


def test_a_page_of_many_new_listings_reaches_the_stream_whole(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(*(card(f"w{i}") for i in range(1200))))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    assert scrape(rt, site, scheduled=False)["new"] == 1200
    assert len(listings(rt)) == 1200


def test_404_on_page_two_is_reported_and_page_one_listings_kept(rt, http_server) -> None:
    html_route(http_server, "/p1", listing_html(card("w1"), card("w2"), next_href="/p2"))
    (site,) = configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=3))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["status"], outcome["pages"], outcome["new"]) == ("partial", 1, 2)
    assert outcome["error"].startswith(f"page 2: {http_server.url('/p2')}: HTTP 404")
    assert [e["id"] for e in listings(rt)] == ["w1", "w2"]
    run = history_rows(rt, "shop", 1)[0]
    assert run["status"] == "partial" and run["errors"] == [outcome["error"]]
    state = SourceState.load(rt.redis, rt.settings, "shop")
    assert state.errors == 0  # page 1 works: no backoff for the site


def test_non_html_response_is_an_error_for_the_site(rt, http_server) -> None:
    http_server.static("/listings", '{"items": []}', headers={"Content-Type": "application/json"})
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert outcome["status"] == "error"
    assert outcome["error"] == (
        f"page 1: {http_server.url('/listings')}: not an HTML page (Content-Type: application/json)"
    )
    assert SourceState.load(rt.redis, rt.settings, "shop").errors == 1


def test_page_over_the_byte_cap_is_an_error_and_nothing_is_parsed(rt, http_server) -> None:
    rt.settings = replace(rt.settings, http_max_bytes=20_000)
    html_route(http_server, "/listings", listing_html(*(card(f"w{i}") for i in range(1000))))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert outcome["status"] == "error" and outcome["fetched"] == 0
    assert "exceeds the cap of 20000 bytes" in outcome["error"]
    assert listings(rt) == []


def test_broken_html_yields_what_can_be_recovered(rt, http_server) -> None:
    broken = (
        '<html><body><div class="listing" data-id="w1"><h2><a href="/a">One</a>'
        '<span class="price">$10</table></div></p><div class="listing" data-id="w2">'
        '<h2><a href="/b">Two<span class="price">$2'
    )
    html_route(http_server, "/listings", broken)
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    outcome = scrape(rt, site, scheduled=False)

    assert (outcome["status"], outcome["new"]) == ("ok", 2)


def test_robots_disallow_is_reported_and_the_page_never_requested(rt, http_server) -> None:
    http_server.static("/robots.txt", "User-agent: *\nDisallow: /listings\n")
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), robots=True))

    outcome = scrape(rt, site, scheduled=False)

    assert outcome["status"] == "error"
    assert outcome["error"] == f"page 1: robots.txt disallows {http_server.url('/listings')}"
    assert http_server.hits("/listings") == 0


def test_robots_txt_is_fetched_once_and_cached_with_a_ttl(rt, http_server) -> None:
    http_server.static("/robots.txt", "User-agent: *\nDisallow: /private\n")
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), robots=True))

    outcomes = [scrape(rt, site, scheduled=False) for _ in range(3)]

    assert [o["status"] for o in outcomes] == ["ok"] * 3
    assert http_server.hits("/robots.txt") == 1
    cache_key = keys.ROBOTS_TEXT.key(rt.settings, f"http://127.0.0.1:{http_server.port}")
    assert 0 < rt.redis.ttl(cache_key) <= rt.settings.robots_ttl


def test_site_may_opt_out_of_robots(rt, http_server) -> None:
    http_server.static("/robots.txt", "User-agent: *\nDisallow: /\n")
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), robots=False))

    assert scrape(rt, site, scheduled=False)["new"] == 1
    assert http_server.hits("/robots.txt") == 0


def test_unreadable_robots_txt_stops_the_run_and_is_asked_again_next_time(rt, http_server) -> None:
    http_server.static("/robots.txt", "down", status=503)
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), robots=True))

    first = scrape(rt, site, scheduled=False)
    scrape(rt, site, scheduled=False)

    assert first["status"] == "error" and "HTTP 503" in first["error"]
    assert http_server.hits("/listings") == 0
    assert http_server.hits("/robots.txt") == 2


def test_missing_robots_txt_allows_everything(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), robots=True))

    assert scrape(rt, site, scheduled=False)["new"] == 1
    assert http_server.hits("/robots.txt") == 1


def test_robots_cache_holds_at_most_its_cap_of_origins(rt) -> None:
    # Given a cache capped at 3 origins
    settings = replace(rt.settings, robots_max_hosts=3)
    cache = RobotsCache(rt.redis, settings)
    fetched: list[str] = []

    def fetcher(url: str) -> Any:
        from tasks.scrape.robots import RobotsResponse

        fetched.append(url)
        return RobotsResponse(200, b"User-agent: *\nDisallow: /x\n")

    # When ten origins are checked
    rules = RobotsRules(cache, fetcher)
    for i in range(10):
        assert rules.allowed(f"http://h{i}.test/page")
        assert not rules.allowed(f"http://h{i}.test/x/1")

    # Then only the three newest are cached, their keys alive and the others deleted
    assert len(cache) == 3 and len(fetched) == 10
    assert [cache.get(f"http://h{i}.test") is not None for i in range(10)] == [False] * 7 + [
        True
    ] * 3


def test_robots_fetcher_failure_is_robots_unavailable(rt) -> None:
    from tasks.scrape.robots import RobotsResponse

    rules = RobotsRules(RobotsCache(rt.redis, rt.settings), lambda url: RobotsResponse(500, b""))
    with pytest.raises(RobotsUnavailable, match=r"http://a.test/robots.txt: HTTP 500"):
        rules.allowed("http://a.test/listings")


def test_one_broken_site_does_not_affect_the_others(rt, http_server) -> None:
    html_route(http_server, "/good", listing_html(card("g1"), card("g2")))
    http_server.static("/bad", "boom", status=500)
    good, bad = configure(
        rt, site_toml("good", http_server.url("/good")), site_toml("bad", http_server.url("/bad"))
    )

    results = [scrape(rt, s, scheduled=False) for s in (bad, good, bad)]

    assert [r["status"] for r in results] == ["error", "ok", "error"]
    assert results[1]["new"] == 2
    assert {e["site"] for e in listings(rt)} == {"good"}
    status = collect_status(rt)["sources"]
    assert status["good"]["last_run"]["status"] == "ok"
    assert status["bad"]["last_run"]["errors"][0].startswith("page 1: ")


# --- scheduling discipline shared with feeds ------------------------------------------------


def test_failing_site_backs_off_and_scheduled_runs_skip_until_due(rt, http_server) -> None:
    http_server.static("/listings", "boom", status=500)
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))

    failed = scrape(rt, site)
    skipped = scrape(rt, site)

    assert failed["status"] == "error" and failed["next_check"] > time.time()
    assert (skipped["status"], skipped["reason"]) == ("skipped", "not due")
    assert http_server.hits("/listings") == 1
    assert poll_now(rt, site)["status"] == "error"  # poll ignores the backoff
    assert http_server.hits("/listings") == 2


def test_site_being_scraped_elsewhere_is_skipped(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))
    token = acquire_lock(rt.redis, rt.settings, "shop")
    assert token is not None
    try:
        assert scrape(rt, site)["status"] == "skipped"
        assert "another worker" in poll_now(rt, site)["error"]
    finally:
        release_lock(rt.redis, rt.settings, "shop", token)
    assert http_server.hits("/listings") == 0


# --- CLI hooks ------------------------------------------------------------------------------


def test_poll_now_lists_the_extracted_items_marked_new(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1"), card("w2", price=None)))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))
    scrape(rt, site, scheduled=False)
    html_route(http_server, "/listings", listing_html(card("w3"), card("w1")))

    outcome = json.loads(json.dumps(poll_now(rt, site, show_items=True)))

    assert {
        k: outcome[k] for k in ("source", "status", "fetched", "new", "duplicate", "error")
    } == {"source": "shop", "status": "ok", "fetched": 2, "new": 1, "duplicate": 1, "error": None}
    assert isinstance(outcome["elapsed_s"], float)
    assert [(i["id"], i["new"]) for i in outcome["items"]] == [("w3", True), ("w1", False)]
    assert outcome["items"][0]["fields"]["title"] == "Watch w3"
    assert "items" not in poll_now(rt, site)


def test_history_rows_are_the_newest_runs_with_memory_figures(rt, http_server) -> None:
    html_route(http_server, "/listings", listing_html(card("w1")))
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings")))
    for _ in range(4):
        scrape(rt, site, scheduled=False)

    rows = history_rows(rt, "shop", 3)

    assert len(rows) == 3 and [r["new"] for r in rows] == [0, 0, 0]
    assert history_rows(rt, "shop", 10)[-1]["new"] == 1
    row = rows[0]
    assert row["start"] <= row["end"] and row["pages"] == 1 and row["items_found"] == 1
    assert row["memory_usage_start_mb"] > 0 and row["memory_usage_end_mb"] > 0
    assert row["memory_delta_mb"] == pytest.approx(
        row["memory_usage_end_mb"] - row["memory_usage_start_mb"], abs=0.011
    )
    assert history_rows(rt, "unknown", 5) == []


# --- through a real worker ------------------------------------------------------------------


def test_scrape_task_on_a_real_worker_fills_the_listings_stream(rt, http_server, worker) -> None:
    html_route(http_server, "/p1", listing_html(card("w1"), card("w2"), next_href="/p2"))
    html_route(http_server, "/p2", listing_html(card("w3")))
    configure(rt, site_toml("shop", http_server.url("/p1"), max_pages=2, robots=True))

    scrape_site.delay("shop")

    wait_for(lambda: len(listings(rt)) == 3, timeout=30, message="3 listings in the stream")
    wait_for(lambda: history_rows(rt, "shop", 1), message="the run in the history")
    assert history_rows(rt, "shop", 1)[0]["pages"] == 2
    assert [e["id"] for e in listings(rt)] == ["w1", "w2", "w3"]


def test_scrape_task_for_a_removed_site_is_skipped(rt, worker) -> None:
    configure(rt, "")

    result = scrape_site.apply(args=("gone",)).get()

    assert result == {"source": "gone", "status": "skipped", "reason": "not a configured site"}


# --- bounds ---------------------------------------------------------------------------------


def test_history_and_seen_items_stay_within_caps_over_20000_runs(rt) -> None:
    # Given a site whose tiny page shows three new listings every run
    site = SiteSource(
        name="tiny",
        url="http://tiny.test/",
        interval=60,
        item="li",
        id="ref",
        fields={"ref": ":scope@id", "title": ":scope"},
    )
    settings = rt.settings
    assert (settings.max_seen, settings.max_history) == (10_000, 1_000)
    rt.settings = replace(settings, max_listings=100)
    history_key, seen_key = keys.HISTORY.key(settings, "tiny"), keys.SEEN.key(settings, "tiny")
    peak_history = peak_seen = 0

    # When 20,000 runs are recorded through the same functions a scrape uses
    for run in range(20_000):
        body = "".join(f'<li id="r{run}-{i}">t</li>' for i in range(3)).encode()
        crawl = Crawl("tiny")
        crawl.add_page(
            extract_page(
                body,
                site.url,
                content_type="text/html",
                item=site.item,
                fields=site.fields,
                id_field=site.id,
            )
        )
        collected = collected_from_crawl(site, crawl, time.time(), 0.0)
        new = write(rt, site, SITES, {}, None, collected)
        record_run(rt, site, collected, new)
        assert len(new.new) == 3
        if run % 1000 == 999:
            peak_history = max(peak_history, rt.redis.llen(history_key))
            peak_seen = max(peak_seen, rt.redis.zcard(seen_key))

    # Then neither ever exceeded its cap, and both are full
    assert peak_history == rt.redis.llen(history_key) == 1_000
    assert peak_seen == rt.redis.zcard(seen_key) == 10_000
    assert history_rows(rt, "tiny", 1)[0]["items_found"] == 3


def big_listing_page(items: int = 400, size: int = 2 * 1024 * 1024) -> bytes:
    """A ~``size``-byte listing page: ``items`` cards with long descriptions, a next link."""
    filler = "<p>" + "Steel case, automatic movement, box and papers, serviced 2023. " * 4 + "</p>"
    per_card = max(1, -(-(size // items - 200) // len(filler)))
    cards = "".join(
        f'<div class="listing" data-id="w{i}"><h2><a href="/watch/{i}">Rolex Submariner '
        f'{i}</a></h2><span class="price">${9000 + i:,}.00</span><div class="desc">'
        f"{filler * per_card}</div></div>\n"
        for i in range(items)
    )
    return f"<html><body>{cards}<a class='next' href='?page=2'>next</a></body></html>".encode()


@pytest.mark.slow
def test_rss_stays_flat_over_repeated_scrapes_of_a_2mb_page(rt, http_server) -> None:
    # Given a 2 MB listing page (bench/bench_scrape.py runs the full 1,000 scrapes)
    scrapes, warmup = 150, 50
    body = big_listing_page()
    assert len(body) >= 2 * 1024 * 1024
    http_server.static("/listings", body, headers={"Content-Type": "text/html; charset=utf-8"})
    (site,) = configure(rt, site_toml("big", http_server.url("/listings")))
    process = psutil.Process()
    baseline = 0.0

    # When it is scraped again and again in this process
    for n in range(1, scrapes + 1):
        outcome = scrape(rt, site, scheduled=False)
        http_server.requests.clear()  # the in-process server's request log is not ours
        assert outcome["status"] == "ok" and outcome["fetched"] == 400
        if n == warmup:
            gc.collect()
            baseline = process.memory_info().rss / 2**20
    gc.collect()
    final = rss_mb()

    # Then RSS after the warm-up grew by less than 5 MB
    growth = final - baseline
    print(
        f"\nRSS after {warmup} scrapes {baseline:.1f} MB, after {scrapes} {final:.1f} MB: "
        f"growth {growth:+.2f} MB"
    )
    assert growth < 5.0
    assert len(history_rows(rt, "big", 1000)) == scrapes
