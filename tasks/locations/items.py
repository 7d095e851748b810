"""Alerts shown with their location (the dashboard's items page).

An alert's location is appended to the ``locations`` stream after the alert (stream entries
cannot be edited), naming the alert's stream id. For a page of alerts one ``XRANGE`` of the
``locations`` stream from the page's oldest alert on — at most ``SCAN_LOCATIONS`` entries —
finds theirs.
"""

from __future__ import annotations

from typing import Any, cast

from workers.core import keys
from workers.core.item_views import Entries, ItemView, declare_item_view
from workers.core.runtime import Runtime
from workers.store.streams import decode_fields

SCAN_LOCATIONS = 5000


def annotate_alerts(rt: Runtime, entries: Entries) -> None:
    if not entries:
        return
    oldest = min((entry_id for entry_id, _ in entries), key=_id_key)
    rows = cast(
        list[Any],
        rt.redis.xrange(
            keys.STREAM.key(rt.settings, "locations"), min=oldest, count=SCAN_LOCATIONS
        ),
    )
    found = {str(f.get("alert")): decode_fields(f) for _, f in rows}
    for entry_id, fields in entries:
        located = found.get(entry_id)
        if located is not None and "location" not in fields:
            fields["location"] = located.get("location")
            fields["location_method"] = located.get("location_method")


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


VIEW = declare_item_view(ItemView("alerts", annotate_alerts))
