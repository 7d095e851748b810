"""A ``[[feeds]]`` table: an RSS/Atom/JSON feed, whether its alerts are located, and which
parser reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from workers.core.redact import redact_url
from workers.core.settings import FEED_PARSERS
from workers.core.sources_file import FieldReader, Source


@dataclass(frozen=True)
class FeedSource(Source):
    locate: bool = True
    sanitize_html: bool = False
    resolve_relative_uris: bool = False
    tags: tuple[str, ...] = ()
    parser: str = ""
    """"auto", "fast" or "feedparser"; empty: WATCHKEEPER_FEED_PARSER."""
    title: str = ""
    """What people call the feed (OPML's ``title``/``text``); shown, never fetched."""
    site_url: str = ""
    """The site the feed belongs to (OPML's ``htmlUrl``); shown, never fetched."""

    kind: ClassVar[str] = "feed"


def read_feed(f: FieldReader, name: str) -> FeedSource:
    return FeedSource(
        name=name,
        url=f.url(),
        interval=f.interval(),
        locate=f.get("locate", bool, True),
        sanitize_html=f.get("sanitize_html", bool, False),
        resolve_relative_uris=f.get("resolve_relative_uris", bool, False),
        tags=_tags(f),
        parser=_parser(f),
        title=_title(f),
        site_url=_site_url(f),
    )


def _parser(f: FieldReader) -> str:
    value = f.get("parser", str, "")
    if value and value not in FEED_PARSERS:
        f.problem("parser", f"expected one of {', '.join(FEED_PARSERS)}, got {value!r}")
        return ""
    return str(value)


MAX_TITLE = 500
"""Characters of a feed's title kept at most: titles come from OPML files anyone writes."""


def _title(f: FieldReader) -> str:
    title = f.get("title", str, "")
    if len(title) > MAX_TITLE or any(ord(c) < 32 and c != "\t" for c in title):
        f.problem("title", f"must be at most {MAX_TITLE} characters, without control characters")
        return ""
    return str(title)


def _site_url(f: FieldReader) -> str:
    url = f.get("site_url", str, "")
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        f.problem("site_url", f"{redact_url(url)!r} is not an http(s) URL")
        return ""
    return str(url)


def _tags(f: FieldReader) -> tuple[str, ...]:
    """Labels a notification sink can select this feed by (``tags = [...]`` in ``[[notify]]``)."""
    value = f.get("tags", list, [])
    if not all(isinstance(tag, str) and tag for tag in value):
        f.problem("tags", "expected a list of non-empty strings")
        return ()
    return tuple(value)
