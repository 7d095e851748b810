"""RSS 0.9x/1.0/2.0 and Atom polling → the ``alerts`` stream (and on to location batching).

Feeds are parsed by feedparser from the fetched bytes (never from a URL: feedparser must not do
its own unbounded fetch) with the response headers for the encoding. HTML sanitizing and
relative-URI resolution cost ~1.5x and are off unless the source asks; a relative entry link is
made absolute against the feed's URL here, once per entry, rather than by handing feedparser a
``Content-Location`` base, which makes it resolve every element (~25% of the parse).
A malformed feed that still has entries yields them; a body with no entries at all — an HTML
page, an empty 200, broken XML — is an error for that source.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import Any
from urllib.parse import urljoin

import feedparser
from celery import shared_task

from tasks.fetch import FetchResult, fetch
from workers.bounded import CappedStream
from workers.config import FeedSource
from workers.runtime import Runtime, get_runtime
from workers.sources import Item, Parsed, SourceProblem, now_iso, poll_source

log = logging.getLogger(__name__)

ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
          "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1")


def entry_key(entry: Any) -> str:
    """guid/id, else link, else a hash of title + published: stable across polls."""
    for name in ("id", "link"):
        value = entry.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    text = f"{entry.get('title', '')}\x00{entry.get('published') or entry.get('updated') or ''}"
    return "sha1:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def coordinates(entry: Any) -> dict[str, float] | None:
    """A GeoRSS point (simple or GML; feedparser gives lon, lat) or W3C geo:lat/geo:long."""
    where = entry.get("where")
    if isinstance(where, dict) and where.get("type") == "Point":
        try:
            lon, lat = where["coordinates"][:2]
            return _checked(float(lat), float(lon))
        except (KeyError, TypeError, ValueError):
            pass
    try:
        return _checked(float(entry["geo_lat"]), float(entry["geo_long"]))
    except (KeyError, TypeError, ValueError):
        return None


def _checked(lat: float, lon: float) -> dict[str, float] | None:
    return {"lat": lat, "lon": lon} if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def published(entry: Any) -> str:
    for name in ("published_parsed", "updated_parsed"):
        parsed = entry.get(name)
        if parsed:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed)
    return str(entry.get("published") or entry.get("updated") or "")


def alert_fields(source: FeedSource, entry: Any, fetched_at: str, key: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "source": source.name, "fetched_at": fetched_at,
        "title": str(entry.get("title", "")), "link": str(entry.get("link", "")),
        "summary": str(entry.get("summary", "")), "published": published(entry),
        "author": str(entry.get("author", "")),
        "tags": [str(t["term"]) for t in entry.get("tags", []) if t.get("term")],
        "key": key,
    }
    point = coordinates(entry)
    if point is not None:
        fields["coordinates"] = point
    return fields


def parse_feed(source: FeedSource, body: bytes, headers: dict[str, str],
               url: str) -> Parsed:
    """Entries of a fetched feed; ``SourceProblem`` when the body holds none."""
    parsed = feedparser.parse(io.BytesIO(body), response_headers=headers,
                              sanitize_html=source.sanitize_html,
                              resolve_relative_uris=source.resolve_relative_uris)
    if not parsed.entries:
        raise SourceProblem(f"{url}: no feed entries ({_why_empty(parsed, body, headers)})")
    fetched_at = now_iso()
    items = []
    for parsed_entry in parsed.entries:
        entry = dict(parsed_entry)  # plain lookups: FeedParserDict.get's alias logic is slow
        key = entry_key(entry)
        fields = alert_fields(source, entry, fetched_at, key)
        if fields["link"] and not fields["link"].startswith(("https://", "http://")):
            fields["link"] = urljoin(url, fields["link"])
        items.append(Item(key, fields))
    return Parsed(items)


def _why_empty(parsed: Any, body: bytes, headers: dict[str, str]) -> str:
    if not body.strip():
        return "empty body"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml") or body.lstrip()[:14].lower(
            ).startswith((b"<!doctype html", b"<html")):
        return f"an HTML page ({content_type or 'no content type'}), not an RSS/Atom feed"
    if parsed.get("bozo") and parsed.get("bozo_exception") is not None:
        first = str(parsed["bozo_exception"]).strip().splitlines()
        return f"not a valid feed: {first[0] if first else type(parsed['bozo_exception'])}"
    if not parsed.get("version"):
        return f"not an RSS/Atom feed ({content_type or 'no content type'})"
    return f"{parsed['version']} feed without entries"


def hand_to_locations(rt: Runtime, alerts: list[tuple[str, dict[str, Any]]]) -> None:
    """New alerts of ``locate = true`` feeds go to location batching when that stage exists."""
    try:
        from tasks.locations import enqueue_alerts  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "tasks.locations":
            raise
        return
    try:
        enqueue_alerts(rt, alerts)
    except Exception:  # the alerts are written; a location fault must not fail the feed
        log.exception("[feeds] location hand-off of %d alerts failed", len(alerts))


class FeedKind:
    accept = ACCEPT

    def parse(self, source: FeedSource, result: FetchResult) -> Parsed:
        return parse_feed(source, result.body, result.headers, result.url)

    def stream(self, rt: Runtime) -> CappedStream:
        return CappedStream(rt.redis, rt.settings.key("stream", "alerts"), rt.settings.max_alerts)

    def emitted(self, rt: Runtime, source: FeedSource,
                written: list[tuple[str, dict[str, Any]]]) -> None:
        if source.locate:
            hand_to_locations(rt, written)


FEEDS = FeedKind()


def poll_now(rt: Runtime, source: FeedSource, show_items: bool = False) -> dict[str, Any]:
    """One poll now, for ``watchkeeper poll``: ignores the backoff, never the lock."""
    return poll_source(rt, source, FEEDS, fetch, scheduled=False, show_items=show_items)


@shared_task(name="tasks.feeds.poll_feed")
def poll_feed(name: str) -> dict[str, Any]:
    """Scheduled poll of one feed; a feed removed from the sources file is skipped."""
    rt = get_runtime()
    source = rt.config().get(name)
    if not isinstance(source, FeedSource):
        log.info("[feeds] %r is no longer a configured feed; skipped", name)
        return {"source": name, "status": "skipped", "reason": "not a configured feed"}
    return poll_source(rt, source, FEEDS, fetch)
