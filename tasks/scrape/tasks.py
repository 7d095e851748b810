"""The site source kind: listing pages scraped into the ``listings`` stream.

A run keeps nothing in the worker: robots.txt is checked first (``robots.py``), each page is
fetched through the shared fetch layer, parsed and released in ``extract.py`` (only plain
strings leave it), new listings are found with the site's capped seen-set in the poll loop's
one write, and the run is pushed to the site's capped session history (``history.py``).

Each ``listings`` entry has ``site``, ``fetched_at``, ``id``, ``page`` (the page URL),
``fields`` (JSON: the site's configured fields, all strings — user-named, so kept apart from
ours) and ``price_amount`` / ``price_currency`` (empty when the site has no ``price`` or it did
not parse). A run is ``ok``; ``partial`` when a later page failed (earlier pages' listings are
kept and the error recorded); ``error`` when nothing could be read — only that backs off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil
from celery import shared_task

from tasks.scrape.changes import record_changes
from tasks.scrape.crawl import Crawl, crawl_site
from tasks.scrape.fields import SITE_FIELDS
from tasks.scrape.history import history
from tasks.scrape.robots import RobotsCache, rules_for_run
from tasks.scrape.source import SiteSource, read_site
from workers.core.clock import iso, now_iso
from workers.core.redact import redact_text
from workers.core.runtime import Runtime, get_runtime
from workers.core.source_env import env_policy
from workers.polling.kinds import Collected, Item, SourceKind, declare_kind
from workers.polling.poll import MAX_MESSAGE, poll_by_name, poll_source
from workers.polling.profile import resolve
from workers.polling.state import SourceState
from workers.store.seen import Added

MIB = 1024 * 1024


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MIB


@dataclass(frozen=True)
class RunContext:
    crawl: Crawl
    started: float
    memory_start_mb: float


def collect(rt: Runtime, site: SiteSource, state: SourceState) -> Collected:
    """Robots.txt, then the pages: their listings as items and the run's counts."""
    started, memory_start = time.time(), rss_mb()
    profile = resolve(site, policy=env_policy(rt))
    robots = rules_for_run(rt.redis, rt.settings, profile) if site.robots else None
    crawl = crawl_site(rt.settings, rt.redis, site, robots=robots, profile=profile)
    return collected_from_crawl(site, crawl, started, memory_start)


def collected_from_crawl(
    site: SiteSource, crawl: Crawl, started: float, memory_start: float
) -> Collected:
    fetched_at = now_iso()
    items = [
        Item(
            i["id"],
            {
                "site": site.name,
                "fetched_at": fetched_at,
                "id": i["id"],
                "page": i["page"],
                "fields": i["fields"],
                "price_amount": i["price_amount"],
                "price_currency": i["price_currency"],
            },
        )
        for i in crawl.listings
    ]
    return Collected(
        crawl.status,
        items,
        error=redact_text("; ".join(crawl.errors)) or None,
        warning=redact_text(crawl.warnings[0]) if crawl.warnings else None,
        http_status=crawl.http_status,
        retry_after=crawl.retry_after,
        freshness=crawl.freshness,
        bad=crawl.missing_id,
        extra={
            "pages": crawl.pages,
            "warnings": [redact_text(m)[:MAX_MESSAGE] for m in crawl.warnings],
            "missing_id": crawl.missing_id,
            "incomplete": crawl.incomplete,
            "duplicates_on_pages": crawl.duplicates,
            "bad_prices": crawl.bad_prices,
        },
        context=RunContext(crawl, started, memory_start),
    )


def record_run(rt: Runtime, site: SiteSource, collected: Collected, added: Added) -> dict[str, Any]:
    """Push the run to the site's session history; add its memory figures to the outcome."""
    context: RunContext = collected.context
    if context is None:  # the work failed before it started (see the poll loop)
        return {}
    crawl, memory_end = context.crawl, rss_mb()
    run = {
        "site": site.name,
        "status": crawl.status,
        "start": iso(context.started),
        "end": iso(time.time()),
        "elapsed_s": round(time.time() - context.started, 3),
        "pages": crawl.pages,
        "items_found": len(crawl.listings),
        "new": len(added.new),
        "already_seen": len(crawl.listings) - len(added.new),
        "matched": crawl.matched,
        "duplicates_on_pages": crawl.duplicates,
        "missing_id": crawl.missing_id,
        "missing_fields": crawl.missing,
        "incomplete": crawl.incomplete,
        "bad_prices": crawl.bad_prices,
        "errors": [m[:MAX_MESSAGE] for m in crawl.errors],
        "warnings": [m[:MAX_MESSAGE] for m in crawl.warnings],
        "memory_usage_start_mb": round(context.memory_start_mb, 2),
        "memory_usage_end_mb": round(memory_end, 2),
        "memory_delta_mb": round(memory_end - context.memory_start_mb, 2),
    }
    history(rt, site.name).push(run)
    changes, _ = record_changes(
        rt,
        site.name,
        crawl.listings,
        drop_pct=site.price_drop_pct,
        rise_pct=site.price_rise_pct,
        complete=crawl.status == "ok",
    )
    return {"memory_delta_mb": run["memory_delta_mb"], "changes": changes}


def site_status(rt: Runtime, site: SiteSource) -> dict[str, Any]:
    """For the ``sources`` status section: the last run (its warnings repeated at the top, so a
    selector that matched nothing is visible at a glance), the history's size against its cap,
    and whether robots.txt is respected, with the shared robots cache's size."""
    runs = history(rt, site.name)
    last = runs.latest(1)
    return {
        "last_run": last[0] if last else None,
        "warnings": last[0].get("warnings", []) if last else [],
        "history": runs.size().as_dict(),
        "robots": {
            "respected": site.robots,
            "cache": RobotsCache(rt.redis, rt.settings).size().as_dict(),
        },
    }


# fmt: off
SITES = declare_kind(SourceKind(
    name="site", section="sites", read=read_site, task="tasks.scrape.scrape_site",
    stream="listings", collect=collect, written=record_run, status=site_status,
    fields=SITE_FIELDS))
# fmt: on


def scrape(rt: Runtime, site: SiteSource, *, scheduled: bool = True) -> dict[str, Any]:
    """One run of ``site`` through the poll loop, with the extracted listings in ``items``."""
    return poll_source(rt, site, SITES, scheduled=scheduled, show_items=True)


@shared_task(name="tasks.scrape.scrape_site")
def scrape_site(name: str, force: bool = False) -> dict[str, Any]:
    """Scheduled run of one site (``force``: "check now")."""
    return poll_by_name(get_runtime(), SITES, name, force)
