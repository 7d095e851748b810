"""A ``[[feeds]]`` table: an RSS/Atom/JSON feed, whether its alerts are located, and which
parser reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
    )


def _parser(f: FieldReader) -> str:
    value = f.get("parser", str, "")
    if value and value not in FEED_PARSERS:
        f.problem("parser", f"expected one of {', '.join(FEED_PARSERS)}, got {value!r}")
        return ""
    return str(value)


def _tags(f: FieldReader) -> tuple[str, ...]:
    """Labels a notification sink can select this feed by (``tags = [...]`` in ``[[notify]]``)."""
    value = f.get("tags", list, [])
    if not all(isinstance(tag, str) and tag for tag in value):
        f.problem("tags", "expected a list of non-empty strings")
        return ()
    return tuple(value)
