"""Listing changes: a price that moved past the site's threshold, or a listing back again.

The seen-set only says whether a listing is new; this remembers, per listing id, the last
reported price and the last complete run that saw it, and writes each change to the capped
``changes`` stream (``lua/changes.lua``, one atomic call per run). Entry fields: ``site``,
``id``, ``change`` (``price_drop``, ``price_rise``, ``back``), ``old_price``, ``new_price``,
``change_pct`` (one decimal, signed), ``currency``, ``fields`` (the listing's fields, JSON),
``at`` (epoch seconds), plus the stream contract's ``seq`` and ``schema``.

Thresholds are per site (``price_drop_pct``, ``price_rise_pct`` in ``[[sites]]``): ``None``
does not report that direction, ``0`` reports any move. Only a run that read every page
counts an absence, so a failed page never makes its listings "come back" later. The memory is
bounded like the seen-set: WATCHKEEPER_MAX_SEEN ids per site (least recently seen evicted) and
WATCHKEEPER_SEEN_MAX_AGE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script
from workers.store.streams import SCHEMA

_CHANGES = Script("tasks.scrape", "changes")


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
            _number(item.get("price_amount")),
            item.get("price_currency") or None,
            json.dumps(item.get("fields") or {}, ensure_ascii=False),
        ]
        for item in listings
        if item.get("id")
    ]
    written, tracked = _CHANGES(
        rt.redis,
        [
            keys.LISTING_PRICES.key(s, site),
            keys.LISTING_SEEN.key(s, site),
            keys.STREAM.key(s, "changes"),
            keys.STREAM_SEQ.key(s, "changes"),
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
        ],
    )
    return int(written), int(tracked)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
