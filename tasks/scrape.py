"""Listing-site scraping → the ``listings`` stream, with a bounded session history per site.

The watch-monitor seed leaked three ways: its session-history file grew without limit, its seen
items were never trimmed, and parsed soups stayed alive. Here a run keeps nothing in the
worker: each page is fetched through the shared fetch layer (timeouts, byte cap, per-host
politeness), robots.txt is checked first (``workers.robots``), the page is parsed and released
in ``workers.extract`` (only plain strings leave it), new listings are found with the site's
capped ``SeenSet`` in one round trip, and the run is pushed to ``{prefix}history:{site}``, a
``CappedList`` of at most ``WATCHKEEPER_MAX_HISTORY`` runs.

Each ``listings`` stream entry has ``site``, ``fetched_at``, ``id``, ``page`` (the page URL),
``fields`` (JSON: the site's configured fields, all strings — user-named, so kept apart from
ours) and ``price_amount`` / ``price_currency`` (empty when the site has no ``price`` or it did
not parse).

A run's status is ``ok``; ``partial`` when a later page failed (page 1's listings are kept and
the error recorded); ``error`` when nothing could be read (page 1 failed, robots.txt disallows
it or cannot be read) — only that backs the site off, through the shared per-source state in
``workers.sources`` (same lock, state hash and backoff as feeds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from celery import shared_task

from tasks.fetch import FetchError, fetch
from workers.bounded import CappedList, CappedStream
from workers.config import SiteSource
from workers.extract import NotHTML, PageResult, extract_page
from workers.robots import RobotsCache, RobotsRules, RobotsUnavailable, rules_for_run
from workers.runtime import Runtime, get_runtime
from workers.settings import Settings
from workers.sources import (
    SUCCESS_RECHECK,
    Fetcher,
    SourceError,
    SourceState,
    acquire_lock,
    backoff_delay,
    release_lock,
    save_state,
    seen_set,
)

log = logging.getLogger(__name__)

ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
MIB = 1024 * 1024
MAX_MESSAGE = 500
"""Characters kept of one error or warning: they quote URLs a hostile page chooses."""


@dataclass
class Crawl:
    """What the pages of one run yielded; plain values only."""

    site: str
    listings: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    matched: int = 0
    missing_id: int = 0
    duplicates: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    http_status: int | None = None
    retry_after: float | None = None
    _ids: set[str] = field(default_factory=set, repr=False)

    def add_page(self, page: PageResult) -> None:
        """Merge one page; a listing already seen on an earlier page counts as a duplicate."""
        self.pages += 1
        self.matched += page.matched
        self.missing_id += page.missing_id
        self.duplicates += page.duplicates
        self.warnings.extend(page.warnings)
        for name, count in page.missing.items():
            self.missing[name] = self.missing.get(name, 0) + count
        for listing in page.listings:
            if listing["id"] in self._ids:
                self.duplicates += 1
                continue
            self._ids.add(listing["id"])
            self.listings.append({**listing, "page": page.url})

    @property
    def incomplete(self) -> int:
        return sum(1 for i in self.listings if any(v == "" for v in i["fields"].values()))

    @property
    def status(self) -> str:
        if not self.errors:
            return "ok"
        return "partial" if self.pages else "error"


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MIB


def crawl_site(settings: Settings, client: redis.Redis | None, site: SiteSource,
               fetcher: Fetcher = fetch, robots: RobotsRules | None = None) -> Crawl:
    """Fetch and extract up to ``max_pages`` pages, stopping at the first failing page.

    Pagination stops at the last page, an empty page, ``max_pages``, or a link back to a page
    already read (a loop, reported as a warning). ``robots=None`` skips robots.txt (the site
    opted out with ``robots = false``).
    """
    crawl = Crawl(site.name)
    url: str | None = site.url
    visited: set[str] = set()
    for number in range(1, site.max_pages + 1):
        assert url is not None
        visited.add(url)
        page = _read_page(settings, client, site, url, number, crawl, fetcher, robots)
        if page is None:
            break
        crawl.add_page(page)
        if page.matched == 0 or page.next_url is None:
            break
        if len(page.next_url) > settings.scrape_max_field_chars:
            crawl.warnings.append(f"page {number}: next page link of {len(page.next_url)} "
                                  "characters ignored (WATCHKEEPER_SCRAPE_MAX_FIELD_CHARS)")
            break
        if page.next_url in visited:
            crawl.warnings.append(f"pagination loop: page {number} ({url}) links back to "
                                  f"{page.next_url}")
            break
        url = page.next_url
    return crawl


def _read_page(settings: Settings, client: redis.Redis | None, site: SiteSource, url: str,
               number: int, crawl: Crawl, fetcher: Fetcher,
               robots: RobotsRules | None) -> PageResult | None:
    """One page extracted, or None with the reason appended to ``crawl.errors``."""
    try:
        if robots is not None and not robots.allowed(url):
            crawl.errors.append(f"page {number}: robots.txt disallows {url}")
            return None
        result = fetcher(url, settings, client, accept=ACCEPT)
        crawl.http_status = result.status
        return extract_page(
            result.body, result.url, content_type=result.headers.get("content-type"),
            item=site.item, fields=site.fields, id_field=site.id, next_page=site.next_page,
            price_field=site.price, max_chars=settings.scrape_max_field_chars)
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


def record_run(rt: Runtime, site: SiteSource, crawl: Crawl, started: float,
               memory_start_mb: float) -> dict[str, Any]:
    """Dedup, emit new listings, push the run to the site's history; return the run record.

    The record's ``new_ids`` (not stored) lets ``poll`` mark which items were new.
    """
    s = rt.settings
    fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
    stream = CappedStream(rt.redis, s.key("stream", "listings"), s.max_listings)
    # Dedup and write in one atomic step, so a worker dying here loses no listing.
    written = seen_set(rt, site.name).add_new_and_append(stream, [
        (i["id"], {"site": site.name, "fetched_at": fetched_at, "id": i["id"], "page": i["page"],
                   "fields": i["fields"], "price_amount": i["price_amount"],
                   "price_currency": i["price_currency"]}) for i in crawl.listings])
    new_ids = {crawl.listings[index]["id"] for index, _ in written}
    memory_end_mb = rss_mb()
    run = {
        "site": site.name, "status": crawl.status,
        "start": _iso(started), "end": _iso(time.time()),
        "elapsed_s": round(time.time() - started, 3),
        "pages": crawl.pages, "items_found": len(crawl.listings), "new": len(new_ids),
        "already_seen": len(crawl.listings) - len(new_ids), "matched": crawl.matched,
        "duplicates_on_pages": crawl.duplicates, "missing_id": crawl.missing_id,
        "missing_fields": crawl.missing, "incomplete": crawl.incomplete,
        "errors": [m[:MAX_MESSAGE] for m in crawl.errors],
        "warnings": [m[:MAX_MESSAGE] for m in crawl.warnings],
        "memory_usage_start_mb": round(memory_start_mb, 2),
        "memory_usage_end_mb": round(memory_end_mb, 2),
        "memory_delta_mb": round(memory_end_mb - memory_start_mb, 2),
    }
    history(rt, site.name).push(run)
    return {**run, "new_ids": new_ids}


def save_site_state(rt: Runtime, site: SiteSource, state: SourceState, crawl: Crawl,
                    run: dict[str, Any], started: float) -> float | None:
    """The shared per-source state; an ``error`` run backs off, returning the delay."""
    values: dict[str, Any] = {
        "last_status": crawl.status, "last_poll": started, "last_http_status": crawl.http_status,
        "last_fetched": run["items_found"], "last_new": run["new"],
        "last_duplicate": run["already_seen"], "last_bad": run["missing_id"],
        "last_elapsed_s": run["elapsed_s"], "last_error": (run["errors"] or [""])[0],
        "last_warning": (run["warnings"] or [""])[0]}
    delay = None
    if crawl.status == "error":
        errors = state.errors + 1
        delay = backoff_delay(rt.settings, errors, crawl.retry_after)
        values.update(errors=errors, last_error_at=time.time(), backoff_s=round(delay, 3),
                      retry_after=crawl.retry_after, next_check=time.time() + delay)
    else:
        values.update(errors=0, last_ok=started, backoff_s=0,
                      next_check=started + SUCCESS_RECHECK * site.interval)
    save_state(rt.redis, rt.settings, site, values)
    return delay


def scrape(rt: Runtime, site: SiteSource, *, scheduled: bool = True,
           fetcher: Fetcher = fetch) -> dict[str, Any]:
    """One run of ``site`` under its lock. Scheduled runs skip a site that is backing off or
    being scraped elsewhere; every failure is recorded for this site, never raised."""
    started = time.time()
    state = SourceState.load(rt.redis, rt.settings, site.name)
    if scheduled and not state.due(started):
        return _outcome(site, "skipped", started, reason="not due",
                        next_check=state.next_check)
    token = acquire_lock(rt.redis, rt.settings, site.name)
    if token is None:
        if scheduled:
            return _outcome(site, "skipped", started, reason="being scraped by another worker")
        return _outcome(site, "error", started,
                        error=f"source '{site.name}': being scraped by another worker")
    try:
        memory_start = rss_mb()
        robots = rules_for_run(rt.redis, rt.settings) if site.robots else None
        crawl = crawl_site(rt.settings, rt.redis, site, fetcher, robots)
        run = record_run(rt, site, crawl, started, memory_start)
        delay = save_site_state(rt, site, state, crawl, run, started)
    finally:
        release_lock(rt.redis, rt.settings, site.name, token)
    for problem in run["errors"] + run["warnings"]:
        log.warning("[scrape] site %r: %s", site.name, problem)
    outcome = _outcome(site, crawl.status, started, fetched=run["items_found"],
                       new=run["new"], error="; ".join(run["errors"]) or None,
                       pages=crawl.pages, warnings=run["warnings"],
                       missing_id=crawl.missing_id, incomplete=run["incomplete"],
                       duplicates_on_pages=crawl.duplicates,
                       memory_delta_mb=run["memory_delta_mb"])
    if delay is not None:
        outcome["next_check"] = time.time() + delay
    outcome["items"] = [{**i, "new": i["id"] in run["new_ids"]} for i in crawl.listings]
    return outcome


def _outcome(site: SiteSource, status: str, started: float, *, fetched: int = 0, new: int = 0,
             error: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"source": site.name, "status": status, "fetched": fetched, "new": new,
            "duplicate": fetched - new, "error": error,
            "elapsed_s": round(time.time() - started, 3), **extra}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def history(rt: Runtime, site: str) -> CappedList:
    return CappedList(rt.redis, rt.settings.key("history", site), rt.settings.max_history)


# --- CLI and status hooks -------------------------------------------------------------------

def poll_now(rt: Runtime, source: SiteSource, show_items: bool = False) -> dict[str, Any]:
    """``watchkeeper poll NAME``: one run now, ignoring backoff (never the lock), recorded like
    a scheduled one; with ``show_items`` the extracted listings, each marked ``new``."""
    outcome = scrape(rt, source, scheduled=False)
    if not show_items:
        outcome.pop("items", None)
    return outcome


def history_rows(rt: Runtime, site: str, n: int) -> list[dict[str, Any]]:
    """``watchkeeper history SITE -n N``: the newest ``n`` runs, newest first."""
    return history(rt, site).latest(max(0, n)) if n > 0 else []


def site_status(rt: Runtime, site: SiteSource) -> dict[str, Any]:
    """For the ``sources`` status section: the last run (its warnings repeated at the top, so a
    selector that matched nothing is visible at a glance), the history's size against its cap,
    and whether robots.txt is respected, with the shared robots cache's size."""
    runs = history(rt, site.name)
    last = runs.latest(1)
    return {"last_run": last[0] if last else None,
            "warnings": last[0].get("warnings", []) if last else [],
            "history": runs.size().as_dict(),
            "robots": {"respected": site.robots,
                       "cache": RobotsCache(rt.redis, rt.settings).size().as_dict()}}


@shared_task(name="tasks.scrape.scrape_site")
def scrape_site(name: str) -> dict[str, Any]:
    """Scheduled run of one site; a site removed from the sources file is skipped."""
    rt = get_runtime()
    site = rt.config().get(name)
    if not isinstance(site, SiteSource):
        log.info("[scrape] %r is no longer a configured site; skipped", name)
        return {"source": name, "status": "skipped", "reason": "not a configured site"}
    outcome = scrape(rt, site)
    outcome.pop("items", None)
    return outcome
