"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1) into the entries RSS/Atom give.

Read as a stream of top-level members: the ``items`` array is decoded one item at a time
(``json``'s C scanner), the first ``max_entries`` objects kept and the rest decoded and dropped,
so a body of a million items costs its bytes' worth of CPU (capped by the byte cap) and the
memory of ``max_entries`` items, never a million dicts. The document must be UTF-8 (RFC 8259);
nesting too deep for the decoder is an error, never a crash.

Fields: ``id`` (coerced to a string, as the spec asks), ``url`` else ``external_url`` as the
link, ``title``, ``summary`` else ``content_text`` else ``content_html``, ``date_published``
and ``date_modified`` (RFC 3339), ``authors`` (1.1) or ``author`` (1.0) of the item, else of
the feed, ``tags``.
"""

from __future__ import annotations

import calendar
import json
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from tasks.feeds.entries import Entry
from workers.polling.errors import SourceProblem

TYPES = ("application/feed+json", "application/json")
VERSION = "https://jsonfeed.org/version/"
FEED_KEYS = ("version", "title", "home_page_url", "feed_url", "author", "authors")
_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()


def is_json_feed(body: bytes, content_type: str) -> bool:
    """By content type, else sniffed: a document whose first character is ``{``."""
    if content_type in TYPES or content_type.endswith("+json"):
        return True
    return body[:256].lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def parse(body: bytes, content_type: str, max_entries: int) -> tuple[list[Entry], str, int, int]:
    """Entries, the version (``json10``/``json11``), non-object items, and items past the cap."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceProblem(f"not a JSON Feed: invalid UTF-8 at byte {exc.start}") from None
    try:
        feed, items, bad, dropped = _read(text, max_entries)
    except RecursionError:
        raise SourceProblem("not a JSON Feed: nested too deep") from None
    except ValueError as exc:
        raise SourceProblem(f"not a JSON Feed: {' '.join(str(exc).split())}") from None
    version = feed.get("version")
    if not (isinstance(version, str) and version.startswith(VERSION)):
        if content_type != "application/feed+json":
            raise SourceProblem("not a JSON Feed: no jsonfeed.org version")
        version = VERSION + "1"
    short = "json" + version[len(VERSION) :].replace(".", "").ljust(2, "0")[:2]
    feed_author = _author(feed)
    return [_entry(item, feed_author) for item in items], short, bad, dropped


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _expect(text: str, i: int, chars: str) -> tuple[str, int]:
    i = _skip(text, i)
    if i >= len(text) or text[i] not in chars:
        found = repr(text[i]) if i < len(text) else "the end"
        raise ValueError(f"expected {' or '.join(map(repr, chars))} at char {i}, found {found}")
    return text[i], i + 1


def _read(text: str, max_entries: int) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    feed: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    bad = dropped = 0
    _, i = _expect(text, 0, "{")
    if text[_skip(text, i) : _skip(text, i) + 1] == "}":
        return feed, items, bad, dropped
    while True:
        i = _skip(text, i)
        key, i = _decoder.raw_decode(text, i)
        if not isinstance(key, str):
            raise ValueError(f"expected a member name at char {i}")
        _, i = _expect(text, i, ":")
        i = _skip(text, i)
        if key == "items" and text[i : i + 1] == "[":
            i, bad, dropped = _items(text, i + 1, items, max_entries)
        else:
            value, i = _decoder.raw_decode(text, i)
            if key in FEED_KEYS:
                feed[key] = value
        sep, i = _expect(text, i, ",}")
        if sep == "}":
            return feed, items, bad, dropped


def _items(text: str, i: int, items: list[dict[str, Any]], cap: int) -> tuple[int, int, int]:
    bad = dropped = 0
    if text[_skip(text, i) : _skip(text, i) + 1] == "]":
        return _skip(text, i) + 1, bad, dropped
    while True:
        item, i = _decoder.raw_decode(text, _skip(text, i))
        if not isinstance(item, dict):
            bad += 1
        elif len(items) < cap:
            items.append(item)
        else:
            dropped += 1
        sep, i = _expect(text, i, ",]")
        if sep == "]":
            return i, bad, dropped


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _author(node: dict[str, Any]) -> str:
    authors = node.get("authors")
    if isinstance(authors, list):
        names = [_text(a.get("name")) for a in authors if isinstance(a, dict)]
        if any(names):
            return ", ".join(n for n in names if n)
    author = node.get("author")
    return _text(author.get("name")) if isinstance(author, dict) else ""


def _parsed(value: str) -> time.struct_time | None:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return time.gmtime(calendar.timegm(when.utctimetuple()))


def _entry(item: dict[str, Any], feed_author: str) -> Entry:
    ident = item.get("id")
    entry: Entry = {
        "id": "" if ident is None or isinstance(ident, dict | list) else str(ident),
        "link": _text(item.get("url")) or _text(item.get("external_url")),
        "title": _text(item.get("title")),
        "summary": _text(item.get("summary"))
        or _text(item.get("content_text"))
        or _text(item.get("content_html")),
        "author": _author(item) or feed_author,
        "tags": [t for t in item.get("tags") or () if isinstance(t, str) and t]
        if isinstance(item.get("tags"), list)
        else [],
    }
    for name, key in (("published", "date_published"), ("updated", "date_modified")):
        value = _text(item.get(key))
        if value:
            entry[name] = value
            parsed = _parsed(value)
            if parsed is not None:
                entry[name + "_parsed"] = parsed
    return entry
