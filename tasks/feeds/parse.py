"""RSS 0.9x/1.0/2.0, Atom and JSON Feed entries into alerts.

The parser layer (``tasks/feeds/parsers.py``) reads the fetched bytes (never a URL: a parser
must not do its own unbounded fetch) with the response headers for the encoding; every parser's
entries have one shape (``tasks/feeds/entries.py``), so an alert and its key do not depend on
which parser read it. HTML sanitizing and relative-URI resolution cost ~1.5x in feedparser and
are off unless the source asks; a relative entry link is made absolute against the feed's URL
here, once per entry, rather than by handing the parser a base, which makes feedparser resolve
every element (~25% of its parse). A malformed feed that still has entries yields them; a body
with no entries at all — an HTML page, an empty 200, broken XML — is an error for that source.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urljoin

from tasks.feeds.parsers import Options, Parsed, content_type, parse_document
from tasks.feeds.source import FeedSource
from workers.core.clock import now_iso
from workers.polling.errors import SourceProblem
from workers.polling.kinds import Item

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, "
    "application/json;q=0.8, */*;q=0.1"
)


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
        "source": source.name,
        "fetched_at": fetched_at,
        "title": str(entry.get("title", "")),
        "link": str(entry.get("link", "")),
        "summary": str(entry.get("summary", "")),
        "published": published(entry),
        "author": str(entry.get("author", "")),
        "tags": list(entry.get("tags", ())),
        "key": key,
    }
    point = coordinates(entry)
    if point is not None:
        fields["coordinates"] = point
    return fields


def parse_feed(
    source: FeedSource, body: bytes, headers: dict[str, str], url: str, options: Options
) -> tuple[list[Item], Parsed]:
    """Alerts of a fetched feed and how it was parsed; ``SourceProblem`` when it holds none."""
    try:
        parsed = parse_document(body, headers, options)
    except SourceProblem as exc:
        raise SourceProblem(f"{url}: {exc}") from None
    if not parsed.entries:
        raise SourceProblem(f"{url}: no feed entries ({_why_empty(parsed, body, headers)})")
    return alerts_of(source, parsed, url, headers, now_iso()), parsed


def alerts_of(
    source: FeedSource, parsed: Parsed, url: str, headers: dict[str, str], fetched_at: str
) -> list[Item]:
    """One item per entry: its key and alert fields, relative links made absolute."""
    base = _base(url, headers)
    items = []
    for entry in parsed.entries:
        key = entry_key(entry)
        fields = alert_fields(source, entry, fetched_at, key)
        if fields["link"] and not fields["link"].startswith(("https://", "http://")):
            fields["link"] = _joined(base, fields["link"])
        items.append(Item(key, fields))
    return items


def _base(url: str, headers: dict[str, str]) -> str:
    """What relative links are resolved against: the response's Content-Location, as feedparser
    does (RFC 2616), else the feed's URL."""
    location = headers.get("content-location", "")
    return _joined(url, location) if location else url


def _joined(base: str, link: str) -> str:
    try:
        return urljoin(base, link)
    except ValueError:  # not a URL ("http://[::1"): kept as the feed wrote it
        return link


def _why_empty(parsed: Parsed, body: bytes, headers: dict[str, str]) -> str:
    if not body.strip():
        return "empty body"
    media, _ = content_type(headers)
    if media in ("text/html", "application/xhtml+xml") or body.lstrip()[:14].lower().startswith(
        (b"<!doctype html", b"<html")
    ):
        return f"an HTML page ({media or 'no content type'}), not an RSS/Atom feed"
    if parsed.detail:
        return parsed.detail
    if parsed.parser == "json":
        return f"{parsed.format} feed without items"
    return f"not an RSS/Atom feed ({media or 'no content type'})"
