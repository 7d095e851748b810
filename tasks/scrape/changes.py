"""Listing changes: a price that moved past the site's threshold, or a listing back again.

The seen-set only says whether a listing is new; this remembers, per listing id, the last
reported price and the last complete run that saw it, and writes each change to the capped
``changes`` stream (``lua/changes.lua``, one atomic call per run). Entry fields: ``site``,
``id``, ``change`` (``price_drop``, ``price_rise``, ``currency``, ``back``), ``old_price``,
``new_price``, ``change_pct`` (one decimal, signed; empty for a move from 0 or a currency
change), ``currency``, ``old_currency``, ``fields`` (the listing's fields, JSON), ``at`` (epoch
seconds), plus the stream contract's ``seq`` and ``schema``.

Prices travel to the script as plain decimal strings and are stored and written as such: a
number the scraper refused (``price.read_price``) never gets here, and one that is not finite,
negative or above WATCHKEEPER_SCRAPE_MAX_PRICE is dropped here too (and by the script), so one
listing can never fail the call for the others.

Thresholds are per site (``price_drop_pct``, ``price_rise_pct`` in ``[[sites]]``): ``None``
does not report that direction, ``0`` reports any move. Only a run that read every page
counts an absence, so a failed page never makes its listings "come back" later. The memory is
bounded like the seen-set: WATCHKEEPER_MAX_SEEN ids per site (least recently seen evicted) and
WATCHKEEPER_SEEN_MAX_AGE.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script
from workers.store.streams import SCHEMA

_CHANGES = Script("tasks.scrape", "changes", include=("workers.store:stream_budget",))
log = logging.getLogger(__name__)


def record_changes(
    rt: Runtime,
    site: str,
    listings: Iterable[Mapping[str, Any]],
    *,
    drop_pct: float | None,
    rise_pct: float | None,
    complete: bool,
) -> tuple[int, int]:
    """Compare a run's listings (``id``, ``price_amount``, ``price_currency``, ``fields``) with
    what the site had; returns (changes written, ids remembered)."""
    s = rt.settings
    rows = [
        [
            str(item["id"]),
            price_text(item.get("price_amount"), s.scrape_max_price),
            item.get("price_currency") or None,
            json.dumps(item.get("fields") or {}, ensure_ascii=False),
        ]
        for item in listings
        if item.get("id")
    ]
    written, tracked, refused = _CHANGES(
        rt.redis,
        [
            keys.LISTING_PRICES.key(s, site),
            keys.LISTING_SEEN.key(s, site),
            keys.STREAM.key(s, "changes"),
            keys.STREAM_SEQ.key(s, "changes"),
            keys.STREAM_BYTES.key(s, "changes"),
        ],
        [
            site,
            "" if drop_pct is None else drop_pct,
            "" if rise_pct is None else rise_pct,
            s.max_seen,
            s.seen_max_age,
            s.stream_cap("changes"),
            SCHEMA,
            "1" if complete else "0",
            json.dumps(rows, ensure_ascii=False),
            s.scrape_max_price,
            s.stream_budget("changes"),
        ],
    )
    if int(refused):
        log.warning("[scrape] site %r: %d prices refused by changes.lua", site, int(refused))
    return int(written), int(tracked)


def price_text(value: Any, max_price: float) -> str | None:
    """An amount as the plain decimal string the script takes (``880.0`` → ``"880"``), or None
    when there is none or it is unusable: not a finite number, negative, above ``max_price``."""
    try:
        amount = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    if amount is None or not math.isfinite(amount) or not 0 <= amount <= max_price:
        return None
    if amount == int(amount):
        return str(int(amount))
    text = repr(amount)
    return text if "e" not in text else f"{amount:.10f}".rstrip("0").rstrip(".")
