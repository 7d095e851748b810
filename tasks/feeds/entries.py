"""One shape for a parsed entry, whichever parser read it: a plain dict of the fields alerts
are made of, so the alert, its key and its location never depend on the parser.

Keys (each optional): ``id``, ``link``, ``title``, ``summary``, ``author``, ``published``,
``updated`` (the document's text), ``published_parsed``, ``updated_parsed``
(``time.struct_time`` in UTC), ``tags`` (terms), ``where`` (GeoRSS, ``{"type", "coordinates"}``
as lon, lat), ``geo_lat``, ``geo_long`` (W3C geo).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

try:  # feedparser's date parser, for the dates feedparser-rs leaves unparsed
    from feedparser.datetimes import _parse_date
except ImportError:  # pragma: no cover - a feedparser without it

    def _parse_date(date_string: str) -> time.struct_time | None:
        return None


Entry = dict[str, Any]

TEXT = ("id", "link", "title", "summary", "author", "published", "updated")
OTHER = ("published_parsed", "updated_parsed", "where", "geo_lat", "geo_long")


def _terms(tags: Any) -> list[str]:
    terms = []
    for tag in tags or ():
        term = tag.get("term") if hasattr(tag, "get") else None
        if term:
            terms.append(str(term))
    return terms


def from_feedparser(entry: Any) -> Entry:
    """A feedparser entry (``dict()`` first: ``FeedParserDict.get``'s alias logic is slow)."""
    plain = dict(entry)
    out: Entry = {name: plain[name] for name in TEXT + OTHER if plain.get(name) is not None}
    out["tags"] = _terms(plain.get("tags"))
    return out


HTML_TYPES = ("", "text/html", "application/xhtml+xml")
AMP = re.compile(r"&#(?:38|x26);")


def _alternate(links: Any) -> str | None:
    """feedparser's link among several: the last ``alternate`` of an HTML type (or none)."""
    chosen = None
    for link in links:
        if (link.get("rel") or "alternate") == "alternate" and (
            link.get("type") or ""
        ) in HTML_TYPES:
            chosen = link.get("href") or chosen
    return chosen


def from_fast(entry: Any) -> Entry:
    """A feedparser-rs entry: its fields read one by one (each read builds a Python object)."""
    get = entry.get
    out: Entry = {}
    for name in TEXT + OTHER:
        value = get(name)
        if value is not None:
            out[name] = value
    out["tags"] = _terms(get("tags"))
    links = get("links") or ()
    if len(links) > 1:
        out["link"] = _alternate(links) or out.get("link")
    title = out.get("title")
    if title and "&#" in title and "<" in title:  # XHTML re-serialized: feedparser's "&amp;"
        out["title"] = AMP.sub("&amp;", title)
    for name in ("published", "updated"):
        if name in out and name + "_parsed" not in out:
            parsed = _parse_date(str(out[name]))  # "12 August 2012", "EST"
            if parsed is not None:
                out[name + "_parsed"] = parsed
    link = out.get("link")
    if not link and any(not (x.get("href") or "") for x in links):
        out["link_blanked"] = True  # it drops links to private addresses: a doubt
    elif link and get("guidislink"):
        try:  # a guid taken as the link must be a URL (feedparser drops one that is not)
            urlsplit(str(link))
        except ValueError:
            del out["link"]
    return out
