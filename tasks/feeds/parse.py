"""Parsing RSS 0.9x/1.0/2.0 and Atom into alerts.

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
import time
from typing import Any
from urllib.parse import urljoin

import feedparser

from tasks.feeds.source import FeedSource
from workers.core.clock import now_iso
from workers.polling.errors import SourceProblem
from workers.polling.kinds import Item

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
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
        "tags": [str(t["term"]) for t in entry.get("tags", []) if t.get("term")],
        "key": key,
    }
    point = coordinates(entry)
    if point is not None:
        fields["coordinates"] = point
    return fields


def parse_feed(source: FeedSource, body: bytes, headers: dict[str, str], url: str) -> list[Item]:
    """Entries of a fetched feed; ``SourceProblem`` when the body holds none."""
    parsed = feedparser.parse(
        io.BytesIO(body),
        response_headers=headers,
        sanitize_html=source.sanitize_html,
        resolve_relative_uris=source.resolve_relative_uris,
    )
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
    return items


def _why_empty(parsed: Any, body: bytes, headers: dict[str, str]) -> str:
    if not body.strip():
        return "empty body"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml") or body.lstrip()[
        :14
    ].lower().startswith((b"<!doctype html", b"<html")):
        return f"an HTML page ({content_type or 'no content type'}), not an RSS/Atom feed"
    if parsed.get("bozo") and parsed.get("bozo_exception") is not None:
        first = str(parsed["bozo_exception"]).strip().splitlines()
        return f"not a valid feed: {first[0] if first else type(parsed['bozo_exception'])}"
    if not parsed.get("version"):
        return f"not an RSS/Atom feed ({content_type or 'no content type'})"
    return f"{parsed['version']} feed without entries"
