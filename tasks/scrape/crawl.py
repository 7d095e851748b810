"""Crawling one site: up to ``max_pages`` pages, each fetched, checked against robots.txt,
extracted and released before the next; only plain values leave a page. Every page goes with
the site's request profile; the first page's caching headers say when to come back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tasks.scrape.extract import Extracted, NotHTML, PageResult, extract_page
from tasks.scrape.robots import RobotsRules, RobotsUnavailable
from tasks.scrape.source import SiteSource
from workers.core.redact import without_credentials
from workers.core.settings import Settings
from workers.polling.errors import FetchError, SourceError
from workers.polling.fetch import FetchResult, fetch
from workers.polling.freshness import Freshness, from_headers
from workers.polling.profile import NO_PROFILE, Resolved

log = logging.getLogger(__name__)

ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"

Fetcher = Callable[..., FetchResult]


@dataclass
class Crawl(Extracted):
    """What the pages of one run yielded; plain values only."""

    site: str
    pages: int = 0
    errors: list[str] = field(default_factory=list)
    http_status: int | None = None
    retry_after: float | None = None
    freshness: Freshness | None = None
    _ids: set[str] = field(default_factory=set, repr=False)

    def add_page(self, page: PageResult) -> None:
        """Merge one page; a listing already seen on an earlier page counts as a duplicate."""
        self.pages += 1
        self.matched += page.matched
        self.missing_id += page.missing_id
        self.duplicates += page.duplicates
        self.bad_prices += page.bad_prices
        self.warnings.extend(page.warnings)
        for name, count in page.missing.items():
            self.missing[name] = self.missing.get(name, 0) + count
        for listing in page.listings:
            if listing["id"] in self._ids:
                self.duplicates += 1
                continue
            self._ids.add(listing["id"])
            self.listings.append({**listing, "page": without_credentials(page.url)})

    @property
    def status(self) -> str:
        if not self.errors:
            return "ok"
        return "partial" if self.pages else "error"


def crawl_site(
    settings: Settings,
    client: redis.Redis | None,
    site: SiteSource,
    fetcher: Fetcher = fetch,
    robots: RobotsRules | None = None,
    profile: Resolved = NO_PROFILE,
) -> Crawl:
    """Fetch and extract up to ``max_pages`` pages, stopping at the first failing page.

    Pagination stops at the last page, an empty page, ``max_pages``, or a link back to a page
    already read (a loop, reported as a warning). ``robots=None`` skips robots.txt (the site
    opted out with ``robots = false``). ``profile``: the site's request profile, resolved.
    """
    crawl = Crawl(site.name)
    url: str | None = site.url
    visited: set[str] = set()
    for number in range(1, site.max_pages + 1):
        assert url is not None
        visited.add(url)
        page = _read_page(settings, client, site, url, number, crawl, fetcher, robots, profile)
        if page is None:
            break
        crawl.add_page(page)
        if page.matched == 0 or page.next_url is None:
            break
        if len(page.next_url) > settings.scrape_max_field_chars:
            crawl.warnings.append(
                f"page {number}: next page link of {len(page.next_url)} "
                "characters ignored (WATCHKEEPER_SCRAPE_MAX_FIELD_CHARS)"
            )
            break
        if page.next_url in visited:
            crawl.warnings.append(
                f"pagination loop: page {number} ({url}) links back to {page.next_url}"
            )
            break
        url = page.next_url
    return crawl


def _read_page(
    settings: Settings,
    client: redis.Redis | None,
    site: SiteSource,
    url: str,
    number: int,
    crawl: Crawl,
    fetcher: Fetcher,
    robots: RobotsRules | None,
    profile: Resolved,
) -> PageResult | None:
    """One page extracted, or None with the reason appended to ``crawl.errors``."""
    try:
        if robots is not None and not robots.allowed(url):
            crawl.errors.append(f"page {number}: robots.txt disallows {url}")
            return None
        result = fetcher(url, settings, client, accept=ACCEPT, profile=profile)
        crawl.http_status = result.status
        if number == 1:
            crawl.freshness = from_headers(result.headers)
        return extract_page(
            result.body,
            result.url,
            content_type=result.headers.get("content-type"),
            item=site.item,
            fields=site.fields,
            id_field=site.id,
            next_page=site.next_page,
            price_field=site.price,
            max_chars=settings.scrape_max_field_chars,
            max_price=settings.scrape_max_price,
        )
    except FetchError as exc:
        crawl.http_status, crawl.retry_after = exc.status, exc.retry_after
        crawl.errors.append(f"page {number}: {exc}")
    except NotHTML as exc:
        crawl.errors.append(f"page {number}: {url}: {exc}")
    except (RobotsUnavailable, SourceError) as exc:
        crawl.errors.append(f"page {number}: {exc}")
    except Exception as exc:  # a parser crash on hostile markup is this site's error only
        log.exception("[scrape] site %r: page %d (%s) failed", site.name, number, url)
        crawl.errors.append(f"page {number}: {url}: {type(exc).__name__}: {exc}")
    return None
