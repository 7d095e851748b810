"""Listing extraction from one fetched page: pure, and leaves nothing of the page behind.

A page is parsed by lxml — its own tree and compiled selectors (``lxml_page``), or BeautifulSoup's
tree over the same parser for what that path does not take — the configured selectors copy plain
``str`` values out of it, and the tree is destroyed before returning, so nothing of a page
outlives its parse.
Note that ``BeautifulSoup.decompose()`` on the soup object alone
does not walk the tree in bs4 4.13+ (the root has no ``next_element``), so ``release()``
decomposes each top-level child first; the nodes then free by reference counting instead of
waiting for the cycle collector.

Site rules (from ``[[sites]]``): ``item`` selects one listing; each field is ``"css"`` (the
whitespace-normalised text of the first match) or ``"css@attr"`` (an attribute; ``href``,
``src`` and the other URL attributes are made absolute against the page URL); ``:scope`` selects
the listing element itself (``":scope@data-id"``). ``next_page`` is ``"css@href"`` (``@href``
is the default attribute).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin

from bs4 import BeautifulSoup, Tag

from tasks.scrape.lxml_page import LxmlPage, Unsupported, attribute, text_of
from tasks.scrape.price import MAX_PRICE, read_price
from workers.core.redact import without_credentials

URL_ATTRS = frozenset({"href", "src", "action", "data-href", "data-src", "data-url", "poster"})
ATTR_RE = re.compile(r"^[A-Za-z_:][-A-Za-z0-9_:.]*$")
HTML_TYPES = ("text/html", "application/xhtml+xml")
WS_RE = re.compile(r"\s+")


class NotHTML(ValueError):
    """The response is not an HTML page (by Content-Type, or by content when none is given)."""


@dataclass(kw_only=True)
class Extracted:
    """Listings and the counts of what was wrong with them, for one page or a whole run;
    ``listings`` hold only plain str/float values."""

    listings: list[dict[str, Any]] = field(default_factory=list)
    matched: int = 0
    missing_id: int = 0
    duplicates: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    bad_prices: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> int:
        """Kept listings with at least one empty field."""
        return sum(1 for item in self.listings if any(v == "" for v in item["fields"].values()))


@dataclass
class PageResult(Extracted):
    """What one page yielded, and the link to the next."""

    url: str
    next_url: str | None = None


def split_spec(spec: str, default_attr: str | None = None) -> tuple[str, str | None]:
    """``"a.title@href"`` → ``("a.title", "href")``; ``"h2"`` → ``("h2", default_attr)``."""
    css, sep, attr = spec.rpartition("@")
    if sep and css.strip() and ATTR_RE.match(attr.strip()):
        return css.strip(), attr.strip()
    return spec.strip(), default_attr


def check_html(content_type: str | None, body: bytes) -> None:
    """Raise ``NotHTML`` unless the response is HTML; a missing type is sniffed from the body."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in HTML_TYPES:
        return
    if not mime and body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        return
    shown = mime or "none, and the body does not start with '<'"
    raise NotHTML(f"not an HTML page (Content-Type: {shown})")


def charset_of(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def release(soup: BeautifulSoup) -> None:
    """Destroy the whole tree now (see the module docstring for why not just ``decompose``)."""
    for child in list(soup.contents):
        child.decompose()
    soup.decompose()


class SoupPage:
    """BeautifulSoup's way through a page: the reference, and the net under ``LxmlPage``."""

    def __init__(self, body: bytes, charset: str | None) -> None:
        self.soup = BeautifulSoup(body, "lxml", from_encoding=charset)

    def select(self, css: str) -> list[Any]:
        return list(self.soup.select(css))

    def first(self, css: str) -> Any | None:
        return self.soup.select_one(css)

    @staticmethod
    def below(element: Tag, css: str) -> Any | None:
        return element if css == ":scope" else element.select_one(css)

    @staticmethod
    def text(target: Tag) -> str:
        return target.get_text(" ")

    @staticmethod
    def attribute(target: Tag, name: str) -> str | None:
        raw = target.get(name)
        if raw is None:
            return None
        return " ".join(raw) if isinstance(raw, list) else str(raw)

    def release(self) -> None:
        release(self.soup)


class FastPage(LxmlPage):
    """``LxmlPage`` with the text as ``SoupPage`` gives it."""

    @staticmethod
    def text(target: Any) -> str:
        return " ".join(text_of(target))

    @staticmethod
    def attribute(target: Any, name: str) -> str | None:
        return attribute(target, name)


Page = SoupPage | FastPage


def field_value(page: Page, element: Any, spec: str, page_url: str, max_chars: int) -> str:
    """One field of one listing; "" when its selector matches nothing or the value is empty."""
    css, attr = split_spec(spec)
    target = page.below(element, css)
    if target is None:
        return ""
    if attr is None:
        value = WS_RE.sub(" ", page.text(target)).strip()
    else:
        value = (page.attribute(target, attr) or "").strip()
        if value and attr.lower() in URL_ATTRS:
            value = urljoin(page_url, value)
    return value[:max_chars]


def extract_listings(
    page: Page,
    page_url: str,
    item: str,
    fields: dict[str, str],
    id_field: str,
    price_field: str | None,
    max_chars: int,
    max_price: float = MAX_PRICE,
) -> PageResult:
    """Apply the site's selectors to a parsed page (the caller releases it).

    A price that is shown but unusable (``read_price``'s problems) leaves its listing without a
    price and is counted in ``bad_prices``, with one warning per page naming the first.
    """
    result = PageResult(url=page_url)
    seen_ids: set[str] = set()
    first_bad = ""
    for element in page.select(item):
        result.matched += 1
        values = {
            name: field_value(page, element, spec, page_url, max_chars)
            for name, spec in fields.items()
        }
        listing_id = values.get(id_field, "")
        if not listing_id:
            result.missing_id += 1
            continue
        if listing_id in seen_ids:
            result.duplicates += 1
            continue
        seen_ids.add(listing_id)
        for name, value in values.items():
            if value == "":
                result.missing[name] = result.missing.get(name, 0) + 1
        shown = values.get(price_field, "") if price_field else ""
        price = read_price(shown, max_price)
        if price.problem:
            result.bad_prices += 1
            first_bad = first_bad or f"{listing_id[:40]!r}: {shown[:40]!r}: {price.problem}"
        result.listings.append(
            {
                "id": listing_id,
                "fields": values,
                "price_amount": price.amount,
                "price_currency": price.currency,
            }
        )
    if result.matched == 0:
        result.warnings.append(f"0 items: selector {item!r} matched nothing on {page_url}")
    if result.bad_prices:
        n = result.bad_prices
        result.warnings.append(
            f"{n} listing{'s' if n > 1 else ''} with an unusable price (kept without one) on "
            f"{page_url}; first {first_bad}"
        )
    return result


def next_page_url(page: Page, page_url: str, spec: str | None) -> str | None:
    """The absolute URL of the next page, without fragment, or None."""
    if not spec:
        return None
    css, attr = split_spec(spec, "href")
    link = page.first(css)
    raw = page.attribute(link, attr or "href") if link is not None else None
    if not isinstance(raw, str) or not raw.strip():
        return None
    url = urldefrag(urljoin(page_url, raw.strip())).url
    return url if url.startswith(("http://", "https://")) else None


def extract_page(
    body: bytes,
    page_url: str,
    *,
    content_type: str | None,
    item: str,
    fields: dict[str, str],
    id_field: str,
    next_page: str | None = None,
    price_field: str | None = None,
    max_chars: int = 2000,
    max_price: float = MAX_PRICE,
    engine: str = "lxml",
) -> PageResult:
    """Parse ``body`` (checked to be HTML), extract listings and the next link, free the tree.

    ``engine`` "lxml": lxml's tree and compiled selectors (``tasks/scrape/lxml_page.py``),
    BeautifulSoup's path for a page or selector it does not take; "bs4": BeautifulSoup's only.
    Raises ``NotHTML``. Broken markup is not an error: lxml recovers what it can, and a page
    with no recognisable listings yields the ``0 items`` warning.
    """
    check_html(content_type, body)
    charset = charset_of(content_type)
    if engine == "lxml":
        try:
            fast = FastPage(body, charset)
        except Unsupported:
            pass
        else:
            try:
                return _extract(fast, page_url, item, fields, id_field, next_page, price_field,
                                max_chars, max_price)  # fmt: skip
            except Exception:
                pass  # BeautifulSoup's path, below, gives the answer (or the error) as before
            finally:
                fast.release()
    soup = SoupPage(body, charset)
    try:
        return _extract(soup, page_url, item, fields, id_field, next_page, price_field,
                        max_chars, max_price)  # fmt: skip
    finally:
        soup.release()


def _extract(
    page: Page,
    page_url: str,
    item: str,
    fields: dict[str, str],
    id_field: str,
    next_page: str | None,
    price_field: str | None,
    max_chars: int,
    max_price: float,
) -> PageResult:
    # Links in listings are data: resolved against the page URL without its credentials.
    public = without_credentials(page_url)
    result = extract_listings(
        page, public, item, fields, id_field, price_field, max_chars, max_price
    )
    result.next_url = next_page_url(page, page_url, next_page)
    return result
