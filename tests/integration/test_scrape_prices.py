"""Listing prices under hostile and odd pages: a real local site, a real Redis, a real worker.

Each test serves listing pages from a real HTTP server on 127.0.0.1, scrapes them through the
whole run (fetch, extract, seen-set, ``changes.lua``) and reads what reached the ``changes``
stream, the run history and ``status``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from tasks.scrape.changes import _CHANGES, record_changes
from tasks.scrape.history import history_rows
from tasks.scrape.tasks import scrape, scrape_site
from tests.integration.test_scrape import card, configure, html_route, listing_html, site_toml
from workers.core import keys
from workers.ops.status import collect_status

THRESHOLDS = "price_drop_pct = 10\nprice_rise_pct = 10\n"


@pytest.fixture
def rt(runtime):  # type: ignore[no-untyped-def]
    """The test runtime without the 1 s per-host delay (every test server is one host)."""
    runtime.settings = replace(runtime.settings, host_delay=0.0)
    return runtime


def changes(rt: Any) -> list[dict[str, str]]:
    return [f for _, f in rt.redis.xrange(keys.STREAM.key(rt.settings, "changes"))]


def serve(http_server: Any, *prices: tuple[str, str]) -> None:
    html_route(http_server, "/listings", listing_html(*(card(ref, price=p) for ref, p in prices)))


def shop(rt: Any, http_server: Any) -> Any:
    (site,) = configure(rt, site_toml("shop", http_server.url("/listings"), extra=THRESHOLDS))
    return site


# --- 12: one absurd price never breaks the page -------------------------------------------------


def test_a_400_digit_price_is_that_listings_warning_and_the_others_still_change(
    rt, http_server, worker
) -> None:
    # Given a page whose first listing shows a 400-digit price, then two ordinary ones
    absurd = "$" + "9" * 400
    serve(http_server, ("bad", absurd), ("w1", "$100"), ("w2", "$200"))
    site = shop(rt, http_server)
    first = scrape_site.apply_async(args=("shop", True), ignore_result=False).get(timeout=60)

    # When the ordinary prices drop by half and the page is scraped again, on a real worker
    serve(http_server, ("bad", absurd), ("w1", "$50"), ("w2", "$100"))
    second = scrape_site.apply_async(args=("shop", True), ignore_result=False).get(timeout=60)

    # Then both runs are ok, the absurd price is a counted warning of its listing only...
    for outcome in (first, second):
        assert outcome["status"] == "ok" and outcome["error"] is None
        (warning,) = [w for w in outcome["warnings"] if "price" in w]
        assert "1 listing with an unusable price" in warning and "'bad'" in warning
        assert "400-digit" in warning
    row = history_rows(rt, "shop", 1)[0]
    assert row["bad_prices"] == 1 and row["errors"] == []
    assert collect_status(rt)["sources"]["shop"]["state"]["errors"] in (0, "0")
    # ...its listing is kept without a price, and every other listing's change is written
    entry = json.loads(rt.redis.xrange(keys.STREAM.key(rt.settings, "listings"))[0][1]["fields"])
    assert entry["price"] == absurd[:2000]
    assert [(c["id"], c["change"], c["old_price"], c["new_price"]) for c in changes(rt)] == [
        ("w1", "price_drop", "100", "50"),
        ("w2", "price_drop", "200", "100"),
    ]
    assert site.name == "shop"


def test_the_changes_script_survives_any_price_it_is_handed(rt) -> None:
    # Given prices no scraper should produce, handed straight to the script (an older worker,
    # another writer): infinities, NaN, negatives, exponents past a double, junk types
    s = rt.settings
    script_keys = [
        keys.LISTING_PRICES.key(s, "raw"),
        keys.LISTING_SEEN.key(s, "raw"),
        keys.STREAM.key(s, "changes"),
        keys.STREAM_SEQ.key(s, "changes"),
        keys.STREAM_BYTES.key(s, "changes"),
    ]

    def call(rows_json: str) -> list[Any]:
        args = ["raw", 10, 10, s.max_seen, s.seen_max_age, s.stream_cap("changes"), "1", "1"]
        budget = s.stream_budget("changes")
        return list(_CHANGES(rt.redis, script_keys, [*args, rows_json, s.scrape_max_price, budget]))

    good = '["ok", 100, "EUR", "{}"]'
    call(f"[{good}]")
    hostile = (
        '[["a", 1e999, "EUR", "{}"], ["b", "inf", "EUR", "{}"], ["c", "nan", "EUR", "{}"],'
        ' ["d", -5, "EUR", "{}"], ["e", "1e309", "EUR", "{}"], ["f", {"x": 1}, "EUR", "{}"],'
        ' ["g", "12abc", "EUR", "{}"], [{"id": 1}, 5, "EUR", "{}"], ["h", 5, 7, 8],'
        ' ["ok", 50, "EUR", "{}"]]'
    )

    # When they arrive with an ordinary drop after them, twice
    call(hostile)
    reply = call(hostile.replace('"ok", 50', '"ok", 20'))

    # Then the script never fails, the ordinary listing's drops are written, nothing is NaN
    assert [(c["id"], c["old_price"], c["new_price"]) for c in changes(rt)] == [
        ("ok", "100", "50"),
        ("ok", "50", "20"),
    ]
    assert int(reply[0]) == 1
    for raw in rt.redis.hvals(script_keys[0]):
        assert "nan" not in raw.lower() and "inf" not in raw.lower()


def test_record_changes_drops_non_finite_and_negative_amounts(rt) -> None:
    def run(amount: float) -> int:
        listing = {"id": "A", "price_amount": amount, "price_currency": "EUR", "fields": {}}
        other = {"id": "B", "price_amount": 10.0 if amount == 100.0 else 5.0, "fields": {}}
        return record_changes(
            rt, "direct", [listing, other], drop_pct=10, rise_pct=10, complete=True
        )[0]

    assert run(100.0) == 0
    assert run(float("inf")) == 1  # only B's drop: A's price is not usable
    assert run(float("nan")) == 0
    assert run(-50.0) == 0
    assert run(80.0) == 1  # A: 100 -> 80, the baseline untouched by the bad ones
    assert [(c["id"], c["new_price"]) for c in changes(rt)] == [("B", "5"), ("A", "80")]


# --- 13: baselines ------------------------------------------------------------------------------


def test_a_listing_first_seen_at_zero_reports_its_moves_from_there(rt, http_server) -> None:
    # Given a listing first seen at $0 (a placeholder price), then $500, then $5
    site = shop(rt, http_server)
    for price in ("$0", "$500", "$5"):
        serve(http_server, ("w1", price))
        assert scrape(rt, site, scheduled=False)["status"] == "ok"

    # Then the move from 0 is a rise (no percentage), and 500 -> 5 a 99 % drop
    rows = [(c["change"], c["old_price"], c["new_price"], c["change_pct"]) for c in changes(rt)]
    assert rows == [
        ("price_rise", "0", "500", ""),
        ("price_drop", "500", "5", "-99.0"),
    ]


def test_a_move_from_zero_moves_the_baseline_even_when_rises_are_not_reported(
    rt, http_server
) -> None:
    (site,) = configure(
        rt, site_toml("shop", http_server.url("/listings"), extra="price_drop_pct = 10\n")
    )
    for price in ("$0", "$500", "$5"):
        serve(http_server, ("w1", price))
        scrape(rt, site, scheduled=False)

    assert [(c["change"], c["old_price"], c["new_price"]) for c in changes(rt)] == [
        ("price_drop", "500", "5")
    ]


def test_a_currency_switch_is_its_own_event_and_resets_the_baseline(rt, http_server) -> None:
    # Given a listing at $1000 whose site switches to euros (€900), then drops to €800
    site = shop(rt, http_server)
    for price in ("$1000", "€900", "€890", "€800"):
        serve(http_server, ("w1", price))
        scrape(rt, site, scheduled=False)

    # Then the switch is one `currency` event (no percentage, no drop), and the next drop is
    # measured from €900
    rows = [
        (c["change"], c["old_price"], c["old_currency"], c["new_price"], c["currency"])
        for c in changes(rt)
    ]
    assert rows == [
        ("currency", "1000", "USD", "900", "EUR"),
        ("price_drop", "900", "EUR", "800", "EUR"),
    ]
    assert changes(rt)[0]["change_pct"] == ""


def test_a_price_shown_without_currency_keeps_the_known_currency(rt, http_server) -> None:
    site = shop(rt, http_server)
    for price in ("$1000", "1000", "€900"):
        serve(http_server, ("w1", price))
        scrape(rt, site, scheduled=False)

    assert [(c["change"], c["old_currency"], c["currency"]) for c in changes(rt)] == [
        ("currency", "USD", "EUR")
    ]


@pytest.mark.parametrize(
    ("shown", "problem"),
    [
        ("-5", "negative"),
        ("$-5", "negative"),
        ("-$5", "negative"),
        ("\u2212€5", "negative"),
        ("1e309", "exponent notation"),
        ("$1E5", "exponent notation"),
        ("2.5e-3 EUR", "exponent notation"),
    ],
)
def test_a_sign_or_an_exponent_is_rejected_with_a_warning_never_dropped(
    rt, http_server, shown: str, problem: str
) -> None:
    # Given a listing at $10 whose price then reads as a negative or exponent number
    site = shop(rt, http_server)
    serve(http_server, ("w1", "$10"))
    scrape(rt, site, scheduled=False)
    serve(http_server, ("w1", shown))

    outcome = scrape(rt, site, scheduled=False)

    # Then that run warns about it, keeps no amount, and reports no change (not 10 -> 5 or 1)
    (warning,) = [w for w in outcome["warnings"] if "price" in w]
    assert problem in warning and "'w1'" in warning
    assert outcome["status"] == "ok"
    newest = rt.redis.xrevrange(keys.STREAM.key(rt.settings, "listings"), count=1)[0][1]
    assert newest["id"] == "w1" and newest["price_amount"] == "10.0"
    assert history_rows(rt, "shop", 1)[0]["bad_prices"] == 1
    assert changes(rt) == []


def test_ordinary_prices_near_a_minus_or_an_e_still_parse(rt, http_server) -> None:
    site = shop(rt, http_server)
    serve(http_server, ("w1", "10 - 20 EUR"), ("w2", "5EUR"), ("w3", "Price: 1 200 € \u2013 net"))

    outcome = scrape(rt, site, scheduled=False)

    assert not [w for w in outcome["warnings"] if "price" in w]
    amounts = {
        f["id"]: (f["price_amount"], f["price_currency"])
        for _, f in rt.redis.xrange(keys.STREAM.key(rt.settings, "listings"))
    }
    assert amounts == {"w1": ("10.0", "EUR"), "w2": ("5.0", "EUR"), "w3": ("1200.0", "EUR")}
