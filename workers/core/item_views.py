"""How a stage adds to the entries of a stream when they are shown (the dashboard's items).

A stream's entries cannot be edited after they are written: the ``alerts`` stream's locations,
for instance, arrive later in the ``locations`` stream. The stage that knows declares an
``ItemView`` for the stream; the dashboard calls ``annotate(rt, entries)`` on each page of
entries (newest first, ``(id, fields)``), which adds fields in place with a bounded number of
round trips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.core.registry import Registry

if TYPE_CHECKING:
    from workers.core.runtime import Runtime

Entries = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class ItemView:
    stream: str
    annotate: Callable[[Runtime, Entries], None]


ITEM_VIEWS: Registry[ItemView] = Registry("item view")


def declare_item_view(view: ItemView) -> ItemView:
    return ITEM_VIEWS.add(view.stream, view)
