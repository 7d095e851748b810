"""Listing extraction from fetched bytes: selectors, links, prices, bad markup, tree released."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from bs4 import Tag

from tasks.scrape.extract import NotHTML, extract_page, split_spec
from tasks.scrape.price import Price, parse_price, read_price

PAGE_URL = "http://shop.test/listings?page=1"
FIELDS = {
    "ref": ":scope@data-id",
    "title": "h2 a",
    "link": "h2 a@href",
    "price": ".price",
    "img": "img@src",
}


def card(
    ref: str | None,
    title: str = "Rolex Submariner",
    price: str | None = "$9,500",
    href: str = "/watch/1",
) -> str:
    attr = f' data-id="{ref}"' if ref is not None else ""
    price_html = f'<span class="price">{price}</span>' if price is not None else ""
    return (
        f'<div class="listing"{attr}><h2><a href="{href}">{title}</a></h2>{price_html}'
        f'<img src="img/{ref}.jpg"></div>'
    )


def page(*cards: str, nav: str = "") -> bytes:
    return f"<html><body>{''.join(cards)}{nav}</body></html>".encode()


def extract(body: bytes, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "content_type": "text/html; charset=utf-8",
        "item": "div.listing",
        "fields": FIELDS,
        "id_field": "ref",
        "next_page": "a.next@href",
        "price_field": "price",
    }
    options.update(kw)
    return extract_page(body, PAGE_URL, **options)


def test_fields_are_text_or_attributes_with_links_made_absolute() -> None:
    # Given a listing with a relative link and image, and whitespace inside the title
    body = page(card("w1", title="  Omega\n   Speedmaster  ", href="../watch/7"))

    # When it is extracted
    result = extract(body)

    # Then text is normalised and URL attributes are absolute against the page URL
    assert result.listings == [
        {
            "id": "w1",
            "fields": {
                "ref": "w1",
                "title": "Omega Speedmaster",
                "link": "http://shop.test/watch/7",
                "price": "$9,500",
                "img": "http://shop.test/img/w1.jpg",
            },
            "price_amount": 9500.0,
            "price_currency": "USD",
        }
    ]
    assert result.matched == 1 and result.warnings == []


def test_item_missing_a_field_is_kept_with_the_field_empty_and_counted() -> None:
    result = extract(page(card("w1", price=None), card("w2"), card("w3", price=None)))

    assert [item["id"] for item in result.listings] == ["w1", "w2", "w3"]
    assert result.listings[0]["fields"]["price"] == ""
    assert result.listings[0]["price_amount"] is None
    assert result.missing == {"price": 2}
    assert result.incomplete == 2


def test_item_without_its_id_field_is_skipped_and_counted() -> None:
    result = extract(page(card(None), card("w2"), card("")))

    assert [item["id"] for item in result.listings] == ["w2"]
    assert result.matched == 3
    assert result.missing_id == 2


def test_duplicate_ids_on_one_page_are_kept_once_and_counted() -> None:
    result = extract(
        page(card("w1", title="first"), card("w1", title="second"), card("w2"), card("w1"))
    )

    assert [(i["id"], i["fields"]["title"]) for i in result.listings] == [
        ("w1", "first"),
        ("w2", "Rolex Submariner"),
    ]
    assert result.duplicates == 2


def test_selector_matching_nothing_is_a_warning_naming_selector_and_url() -> None:
    result = extract(page(card("w1")), item="div.product")

    assert result.listings == []
    assert result.warnings == [f"0 items: selector 'div.product' matched nothing on {PAGE_URL}"]


def test_broken_html_still_yields_the_listings_lxml_recovers() -> None:
    # Given unclosed tags, a stray end tag and a truncated tail
    body = (
        b'<html><body><div class="listing" data-id="w1"><h2><a href="/a">One</a>'
        b'<span class="price">100 EUR</div></p></td>'
        b'<div class="listing" data-id="w2"><h2><a href="/b">Two<span class="pr'
    )

    result = extract(body)

    assert [i["id"] for i in result.listings] == ["w1", "w2"]
    assert result.listings[0]["price_amount"] == 100.0
    assert result.listings[0]["price_currency"] == "EUR"


def test_binary_garbage_labelled_html_is_zero_items_not_a_crash() -> None:
    body = bytes(range(256)) * 64

    result = extract(body)

    assert result.listings == [] and len(result.warnings) == 1


@pytest.mark.parametrize("content_type", ["application/json", "image/png", "text/plain"])
def test_non_html_response_is_rejected_naming_the_content_type(content_type: str) -> None:
    with pytest.raises(NotHTML, match=f"Content-Type: {content_type}"):
        extract(b'{"listings": []}', content_type=content_type)


def test_missing_content_type_is_sniffed_from_the_body() -> None:
    assert extract(b"  \n" + page(card("w1")), content_type=None).listings[0]["id"] == "w1"
    with pytest.raises(NotHTML):
        extract(b"%PDF-1.7 ...", content_type=None)


def test_charset_from_content_type_decodes_the_page() -> None:
    body = (
        page(card("w1", title="Breguet Héritage", price="1 200 €")).decode().encode("iso-8859-15")
    )

    result = extract(body, content_type="text/html; charset=iso-8859-15")

    assert result.listings[0]["fields"]["title"] == "Breguet Héritage"
    assert (result.listings[0]["price_amount"], result.listings[0]["price_currency"]) == (
        1200.0,
        "EUR",
    )


def test_next_page_link_is_absolute_without_fragment() -> None:
    nav = '<a class="next" href="?page=2#results">next</a>'

    assert extract(page(card("w1"), nav=nav)).next_url == "http://shop.test/listings?page=2"
    assert extract(page(card("w1"))).next_url is None
    assert (
        extract(page(card("w1"), nav='<a class="next" href="javascript:void(0)">x</a>')).next_url
        is None
    )


def test_field_values_are_capped() -> None:
    result = extract(page(card("w1", title="x" * 10_000)), max_chars=100)

    assert len(result.listings[0]["fields"]["title"]) == 100


def test_page_tree_is_freed_without_the_cycle_collector() -> None:
    # Given the cycle collector paused, so only reference counting can free the soup
    body = page(*(card(f"w{i}") for i in range(200)))
    gc.collect()
    gc.disable()
    try:
        before = sum(1 for o in gc.get_objects() if isinstance(o, Tag))

        # When a page is extracted
        result = extract(body)

        # Then no parsed element outlives the call
        after = sum(1 for o in gc.get_objects() if isinstance(o, Tag))
    finally:
        gc.enable()
    assert len(result.listings) == 200
    assert after == before


def test_listing_values_are_plain_strings_not_parse_tree_objects() -> None:
    result = extract(page(card("w1")))

    assert all(type(v) is str for v in result.listings[0]["fields"].values())
    assert type(result.listings[0]["id"]) is str


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$12,500.00", (12500.0, "USD")),
        ("1.234,50 €", (1234.5, "EUR")),
        ("CHF 12'500.\u2013", (12500.0, "CHF")),
        ("12 500 EUR", (12500.0, "EUR")),
        ("£899", (899.0, "GBP")),
        ("US$ 3,000", (3000.0, "USD")),
        ("12,50 €", (12.5, "EUR")),
        ("¥1,200,000", (1200000.0, "JPY")),
        ("4 999 kr", (4999.0, "SEK")),
        ("5000", (5000.0, None)),
        ("Price on request", (None, None)),
        ("", (None, None)),
    ],
)
def test_price_is_parsed_into_number_and_currency(
    text: str, expected: tuple[float | None, str | None]
) -> None:
    assert parse_price(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-5", "negative"),
        ("EUR \u22125", "negative"),
        ("1e309", "exponent notation"),
        ("$3.5E+2", "exponent notation"),
        ("$" + "9" * 400, "400-digit amount over the bound 1000000000000000"),
        ("9" * 16, "16-digit amount over the bound 1000000000000000"),
    ],
)
def test_a_shown_but_unusable_price_is_a_problem_not_a_number(text: str, problem: str) -> None:
    assert read_price(text) == Price(None, None, problem)
    assert parse_price(text) == (None, None)


def test_the_price_bound_is_the_callers() -> None:
    assert read_price("$1,000", max_amount=999).problem == "4-digit amount over the bound 999"
    assert read_price("$999", max_amount=999).amount == 999.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("h2 a", ("h2 a", None)),
        ("h2 a@href", ("h2 a", "href")),
        (":scope@data-id", (":scope", "data-id")),
        ('a[title="x@y"]', ('a[title="x@y"]', None)),
    ],
)
def test_field_spec_splits_css_and_attribute(spec: str, expected: tuple[str, str | None]) -> None:
    assert split_spec(spec) == expected
