"""The fast extraction path (lxml's tree, compiled selectors) answers as BeautifulSoup's does.

Every page and selector set here goes through both engines of ``extract_page``; the results —
listings, counts, warnings, the next link — must be identical. The cases are the ones where
the two could part: selectors that reach above the listing, the listing itself, comments,
scripts, styles and templates below a field, list attributes with odd whitespace, entities,
declared and undeclared encodings, broken and deep markup, and selectors only soupsieve reads
(which must fall back, not fail).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import pytest

from tasks.scrape.extract import FastPage, _extract, charset_of, check_html, extract_page
from tasks.scrape.lxml_page import LxmlPage, Unsupported, compiled
from tasks.scrape.price import MAX_PRICE

URL = "http://shop.test/list?page=1"

LISTING = """
<div class="l  card
 featured" data-id="{i}" rel=" a  b ">
  <!-- a comment: {i} -->
  <h2 class="t"><a href="/w/{i}?x=1&amp;y=2" rel="  nofollow   ugc ">Watch&nbsp;{i} <b>Deluxe</b>
     <script>var x = "not text {i}";</script><style>.x {{}}</style>tail {i}</a></h2>
  <p class="price">{price}</p>
  <template><span>hidden {i}</span></template>
  <span class="brand">Brand <em>{i}</em><!-- c --> after</span>
  <img src="img/{i}.jpg" class="  pic  big ">
  <ul><li>one</li><li>two {i}</li><li>three</li></ul>
</div>"""

FIELD_SETS = [
    {"id": ":scope@data-id", "title": "h2 a", "link": "h2 a@href", "price": ".price"},
    {"id": ":scope@data-id", "rel": "a@rel", "cls": ":scope@class", "pic": "img@class"},
    {
        "id": ":scope@data-id",
        "ctx": "body h2",
        "second": "li:nth-child(2)",
        "not": "li:not(:first-child)",
    },
    {
        "id": ":scope@data-id",
        "brand": "span.brand",
        "img": "img@src",
        "own": "div.l > ul > li:last-child",
    },
    {
        "id": ":scope@data-id",
        "scoped": "div.l .t a",
        "attr": "[href^='/w/']@href",
        "none": ".missing",
    },
    {"id": ":scope@data-id", "whole": ":scope", "h": "h2"},
]


def page(n: int, seed: int, extra: str = "") -> bytes:
    rng = random.Random(seed)
    prices = ["$1,200", "€ 900,50", "1e309", "-5", "", "£0", "¥120000", "$" + "9" * 400]
    cards = [LISTING.format(i=i, price=rng.choice(prices)) for i in range(n)]
    nav = '<a class="next" href="?page=2#top">next</a>'
    body = "".join(cards) + nav + extra
    return f"<html><head><title>t</title></head><body>{body}</body></html>".encode()


def both(body: bytes, fields: dict[str, str], **kw: Any) -> tuple[Any, Any]:
    options: dict[str, Any] = {
        "content_type": "text/html; charset=utf-8",
        "item": "div.l",
        "fields": fields,
        "id_field": "id",
        "next_page": "a.next",
        "price_field": "price" if "price" in fields else None,
    }
    options.update(kw)
    soup = extract_page(body, URL, engine="bs4", **options)
    auto = extract_page(body, URL, engine="lxml", **options)
    assert asdict(auto) == asdict(soup)
    # and the fast path itself (not its fallback) gave that answer, where it takes the page
    check_html(options["content_type"], body)
    try:
        fast = FastPage(body, charset_of(options["content_type"]))
    except Unsupported:
        return asdict(auto), asdict(soup)
    try:
        direct = _extract(fast, URL, options["item"], fields, "id", options["next_page"],
                          options["price_field"], 2000, MAX_PRICE)  # fmt: skip
    except Unsupported:
        return asdict(auto), asdict(soup)
    finally:
        fast.release()
    TAKEN.append(body)
    return asdict(direct), asdict(soup)


TAKEN: list[bytes] = []


@pytest.mark.parametrize("fields", FIELD_SETS, ids=[f"fields{i}" for i in range(len(FIELD_SETS))])
def test_every_field_is_what_beautifulsoup_finds(fields: dict[str, str]) -> None:
    TAKEN.clear()
    fast, soup = both(page(25, seed=len(fields)), fields)
    assert TAKEN and fast["matched"] == 25
    assert fast == soup


@pytest.mark.parametrize(
    "body, content_type",
    [
        (
            '<html><body><div class="l" data-id="1"><h2>caf\xe9 \u2014 1</h2></div>'.encode(
                "cp1252"
            ),
            "text/html; charset=windows-1252",
        ),
        (
            '<meta charset="iso-8859-1"><div class="l" data-id="1"><h2>na\xefve</h2></div>'.encode(
                "latin-1"
            ),
            "text/html",
        ),
        ('<div class="l" data-id="1"><h2>\u65e5\u672c</h2></div>'.encode("utf-8"), None),
        (b'\xef\xbb\xbf<div class="l" data-id="1"><h2>bom</h2></div>', "text/html"),
        (
            b'<div class="l" data-id="1"><h2>bad \xff\xfe bytes</h2></div>',
            "text/html; charset=utf-8",
        ),
        (b'<div class="l" data-id="1"><h2>unknown charset</h2></div>', "text/html; charset=x-nope"),
        (
            b'<div class="l" data-id="1"><h2>unclosed <b>bold <i>it</h2>'
            b'<div class="l" data-id="2">',
            "text/html",
        ),
        (
            b"<div class='l' data-id='1'>"
            + b"<div>" * 3000
            + b"deep"
            + b"</div>" * 3000
            + b"</div>",
            "text/html",
        ),
        (
            b"<html><body><div class='l' data-id='1'><h2>a</h2></div></body></html>"
            b"<div class='l' data-id='2'><h2>after html</h2></div>",
            "text/html",
        ),
        (b"   ", "text/html"),
        (
            b"<?xml version='1.0' encoding='utf-8'?><html><body>"
            b"<div class='l' data-id='x'><h2>xhtml</h2></div></body></html>",
            "application/xhtml+xml",
        ),
    ],
    ids=[
        "cp1252",
        "meta-latin1",
        "no-type",
        "bom",
        "bad-utf8",
        "unknown-charset",
        "unclosed",
        "deep",
        "after-html",
        "blank",
        "xhtml",
    ],
)
def test_encodings_and_broken_markup_give_the_same_listings(
    body: bytes, content_type: str | None
) -> None:
    fields = {"id": ":scope@data-id", "title": "h2", "all": ":scope"}
    TAKEN.clear()
    fast, soup = both(body, fields, content_type=content_type)
    assert fast == soup
    assert bool(TAKEN) == (b"x-nope" not in (content_type or "").encode())  # lxml knows no x-nope


def test_a_selector_only_soupsieve_reads_falls_back_to_beautifulsoup() -> None:
    fields = {"id": ":scope@data-id", "brand": "span:-soup-contains('Brand')"}
    with pytest.raises(Unsupported):
        compiled("span:-soup-contains('Brand')")
    fast, soup = both(page(5, seed=1), fields)
    assert fast == soup and fast["listings"][0]["fields"]["brand"].startswith("Brand")


def test_an_invalid_selector_is_the_same_error_as_before() -> None:
    with pytest.raises(Exception) as fast:
        extract_page(
            page(2, 1),
            URL,
            content_type="text/html",
            item="div.l[",
            fields={"id": ":scope@data-id"},
            id_field="id",
        )
    with pytest.raises(Exception) as soup:
        extract_page(
            page(2, 1),
            URL,
            content_type="text/html",
            item="div.l[",
            fields={"id": ":scope@data-id"},
            id_field="id",
            engine="bs4",
        )
    assert type(fast.value) is type(soup.value) and str(fast.value) == str(soup.value)


def test_the_fast_page_keeps_nothing_after_release() -> None:
    fast = LxmlPage(page(3, 1), "utf-8")
    assert len(fast.select("div.l")) == 3
    fast.release()
    assert fast.root is None
