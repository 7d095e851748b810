"""The items page: the newest entries of a stream, filtered by text, a page at a time.

Read straight from the capped streams with ``XREVRANGE``, newest first. A filter scans at most
``SCAN_LIMIT`` entries per page (in chunks), so a rare word in a full stream costs a bounded
read; the page then says how far back it looked. Stages add fields to what is shown through
``workers.core.item_views`` (alerts get their location). The REST API reads the same pages
(``keep`` adds its source and tag filters, a chunk at a time).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from workers.core import keys
from workers.core.item_views import ITEM_VIEWS, Entries
from workers.core.runtime import Runtime
from workers.store.streams import decode_fields

STREAMS = ("alerts", "logs", "listings", "changes")
PAGE = 50
CHUNK = 500
SCAN_LIMIT = 5000
TEXT_FIELDS = ("title", "line", "lines", "name", "message", "summary")
HIDDEN_FIELDS = ("source", "site", "schema", "seq", "location", "location_method", "link", "key")
"""Shown in their own columns, or only bookkeeping."""
MAX_QUERY = 200
"""Characters of a filter, at most."""
ENTRY_ID = re.compile(r"^([0-9]{1,20})(?:-([0-9]{1,20}))?$")
MAX_ID_PART = 2**64 - 1
WEB_LINK = re.compile(r"^https?://[^\s]", re.IGNORECASE)
"""What becomes a link: an http:// or https:// URL, nothing else (no javascript:, data:,
httpx:, relative or scheme-relative links)."""


Keep = Callable[[list[tuple[str, dict[str, str]]]], list[bool]]
"""Which entries of a chunk (``(id, raw fields)``, newest first) may be shown; one round trip
per chunk at most."""


class BadQuery(ValueError):
    """A query parameter the items page cannot use; the message names it (one line)."""


def page_params(params: Mapping[str, str]) -> tuple[str, str, str]:
    """``stream``, ``q`` and ``before`` of an items page request, checked: an unknown stream,
    a filter over ``MAX_QUERY`` characters or a ``before`` that is not a stream entry id
    (``1700000000000-0``, each part below 2**64) is a ``BadQuery``."""
    stream = params.get("stream", "alerts") or "alerts"
    if stream not in STREAMS:
        raise BadQuery(f"stream: {stream[:40]!r} is not one of {', '.join(STREAMS)}")
    query = params.get("q", "")
    if len(query) > MAX_QUERY:
        raise BadQuery(f"q: the filter is {len(query)} characters, over {MAX_QUERY}")
    before = params.get("before", "")
    found = ENTRY_ID.match(before)
    if not before:
        return stream, query, ""
    if not found or any(int(p) > MAX_ID_PART for p in found.groups("0")):
        raise BadQuery(f"before: {before[:40]!r} is not a stream entry id (like 1700000000000-0)")
    ms, seq = found.groups()
    return stream, query, f"{int(ms)}-{int(seq)}" if seq is not None else str(int(ms))


@dataclass
class ItemsPage:
    stream: str
    query: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    older: str = ""
    """The id to page on from (``before``); empty at the end of the stream."""
    scanned: int = 0
    size: int = 0
    found: Entries = field(default_factory=list)
    """The entries' fields, decoded and annotated (the API returns them whole)."""


def read_page(
    rt: Runtime,
    stream: str,
    query: str = "",
    before: str = "",
    size: int = PAGE,
    keep: Keep | None = None,
) -> ItemsPage:
    key = keys.STREAM.key(rt.settings, stream)
    page = ItemsPage(stream, query, size=int(rt.redis.xlen(key)))
    needle = query.casefold().strip()
    found: Entries = []
    top = f"({before}" if before else "+"
    if before == "0-0":  # nothing is older than the first possible id (Redis: invalid range)
        top = ""
    while top and len(found) < size and page.scanned < SCAN_LIMIT:
        rows = cast(list[Any], rt.redis.xrevrange(key, max=top, min="-", count=CHUNK))
        if not rows:
            top = ""
            break
        flags = keep(rows) if keep is not None else [True] * len(rows)
        for (entry_id, raw), kept in zip(rows, flags, strict=True):
            page.scanned += 1
            top = f"({entry_id}"
            if kept and (not needle or needle in _text_of(raw)):
                found.append((str(entry_id), decode_fields(raw)))
                if len(found) == size:
                    break
        if len(rows) < CHUNK and len(found) < size:
            top = ""
            break
    page.older = top[1:] if top else ""
    view = ITEM_VIEWS.get(stream)
    if view is not None:
        view.annotate(rt, found)
    page.entries = [shown(entry_id, fields) for entry_id, fields in found]
    page.found = found
    return page


def _text_of(raw: dict[str, str]) -> str:
    return " ".join(raw.values()).casefold()


def shown(entry_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One row: when, from where, the one line that says what it is, and details."""
    text = next((str(fields[f]) for f in TEXT_FIELDS if fields.get(f)), "")
    if not text:
        text = json.dumps(fields.get("fields") or fields, ensure_ascii=False, default=str)
    location = fields.get("location")
    where = ""
    if isinstance(location, dict):
        where = ", ".join(str(location[k]) for k in ("name", "country_code") if location.get(k))
        if not where and location.get("lat") is not None and location.get("lon") is not None:
            where = f"{float(location['lat']):.2f}, {float(location['lon']):.2f}"
        if fields.get("location_method"):
            where += f" ({fields['location_method']})"
    details = {
        k: v
        for k, v in fields.items()
        if k not in (*TEXT_FIELDS, *HIDDEN_FIELDS) and v not in (None, "", [], {})
    }
    return {
        "id": entry_id,
        "when": time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime(int(entry_id.split("-", 1)[0]) / 1000)
        ),
        "source": fields.get("source") or fields.get("site") or "",
        "text": text[:500],
        "link": web_link(fields.get("link")),
        "where": where,
        "details": json.dumps(details, ensure_ascii=False, default=str)[:300],
    }


def web_link(value: Any) -> str:
    """``value`` when it is an http(s) URL, else empty (it is then shown as text, if at all)."""
    return value if isinstance(value, str) and WEB_LINK.match(value) else ""
