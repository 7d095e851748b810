"""The ``[[feeds]]`` table's own fields, as data (``workers.core.source_schema``): what the
REST API publishes and the dashboard's form asks for; ``read_feed`` validates them."""

from __future__ import annotations

from tasks.feeds.source import MAX_TITLE
from workers.core.settings import FEED_PARSERS
from workers.core.source_schema import URL_PATTERN, FieldSpec

FEED_FIELDS = (
    FieldSpec(
        "locate",
        "boolean",
        "Hand new alerts to location batching.",
        default=True,
    ),
    FieldSpec(
        "sanitize_html",
        "boolean",
        "Let feedparser sanitize HTML in entries.",
        default=False,
    ),
    FieldSpec(
        "resolve_relative_uris",
        "boolean",
        "Let feedparser resolve relative links in entries.",
        default=False,
    ),
    FieldSpec(
        "tags",
        "strings",
        "Labels a [[notify]] sink can select this feed by.",
        default=[],
        example=["news"],
    ),
    FieldSpec(
        "parser",
        "string",
        f"Which parser reads it: {', '.join(FEED_PARSERS)}; empty: WATCHKEEPER_FEED_PARSER.",
        default="",
        constraints={"enum": ["", *FEED_PARSERS]},
        example="auto",
    ),
    FieldSpec(
        "title",
        "string",
        f"What people call the feed (OPML's title): shown, never fetched; at most {MAX_TITLE} "
        "characters, no control characters.",
        default="",
        constraints={"maxLength": MAX_TITLE, "pattern": "^[^\\x00-\\x08\\x0a-\\x1f]*$"},
        example="World news",
    ),
    FieldSpec(
        "site_url",
        "string",
        "The site the feed belongs to (OPML's htmlUrl): shown, never fetched.",
        default="",
        constraints={"pattern": f"^$|{URL_PATTERN}"},
        example="https://example.org/",
    ),
)
