"""The source registry a page at a time, from a cursor (the REST API's list of sources).

Reads what one page needs, never the whole registry: the registry's HASH (or, for one owner,
that owner's SET of names) is walked with ``HSCAN``/``SSCAN``, each batch sorted by name, so a
cursor is a scan position and the last name returned from its batch. A page holds at most
``limit`` sources and reads at most ``budget`` definitions: a filter that matches little gives
a short page and a cursor to go on from (only the last page has none). Redis's SCAN guarantee
holds — every source present from the first page to the last is listed at least once; one the
registry rehashed meanwhile may be listed twice.

Built on the registry's public parts only (its client, its key, ``definitions``,
``owner_key``): the registry's writers may change how they write without this module knowing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from workers.core.source_registry import Definition, SourceRegistry, owner_key
from workers.core.sources_file import NAME_RE

SCAN = 500
"""Entries asked of each ``HSCAN``/``SSCAN`` (a hint: small hashes come whole)."""
BUDGET = 5000
"""Definitions read per page at most, whatever the filters."""
CURSOR_RE = re.compile(r"^([0-9]{1,20}):(.{0,64})$")

Keep = Callable[[list[Definition]], list[Definition]]
"""Which definitions of a batch (in name order) belong on the page, in order; may read Redis
once per batch (a pipeline of the batch's states)."""


class BadCursor(ValueError):
    """Not a cursor this module made; the message says so in one line."""


@dataclass(frozen=True)
class Cursor:
    scan: int = 0
    after: str = ""
    """The last name returned from the batch at ``scan`` ("" : none yet)."""

    def encode(self) -> str:
        return f"{self.scan}:{self.after}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        found = CURSOR_RE.match(text)
        if not found or int(found.group(1)) >= 2**64:
            raise BadCursor(f"cursor: {text[:40]!r} is not a cursor from a previous page")
        after = found.group(2)
        if after and not NAME_RE.match(after):
            raise BadCursor(f"cursor: {text[:40]!r} is not a cursor from a previous page")
        return cls(int(found.group(1)), after)


def _batch(
    registry: SourceRegistry, scan: int, owner: str
) -> tuple[int, list[tuple[str, Any]] | list[Definition]]:
    client = registry.client
    if owner:
        nxt, names = client.sscan(owner_key(registry.settings, owner), scan, count=SCAN)
        found = registry.definitions(sorted(str(n) for n in names))
        return int(nxt), [d for d in found.values() if d is not None]
    nxt, raw = client.hscan(registry.key, scan, count=SCAN)
    pairs = cast(dict[Any, Any], raw)
    return int(nxt), sorted((str(k), v) for k, v in pairs.items())


def _decoded(rows: list[tuple[str, Any]] | list[Definition]) -> list[Definition]:
    out = []
    for row in rows:
        if isinstance(row, Definition):
            out.append(row)
            continue
        try:
            out.append(Definition.decode(row[0], str(row[1])))
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: the registry's own readers log it
    return out


def list_page(
    registry: SourceRegistry,
    cursor: Cursor,
    limit: int,
    keep: Keep | None = None,
    owner: str = "",
    budget: int = BUDGET,
) -> tuple[list[Definition], Cursor | None]:
    """Up to ``limit`` definitions from ``cursor`` that ``keep`` keeps (``owner``: only that
    owner's), and the cursor of the next page (None: that was the last)."""
    found: list[Definition] = []
    scan, after, read = cursor.scan, cursor.after, 0
    while True:
        following, rows = _batch(registry, scan, owner)
        batch = [d for d in _decoded(rows) if d.name > after]
        read += len(batch)
        kept = keep(batch) if keep is not None and batch else batch
        for d in kept[: limit - len(found)]:
            found.append(d)
        if len(found) >= limit and kept:
            last = found[-1].name
            if batch and batch[-1].name != last:
                return found, Cursor(scan, last)  # more of this batch on the next page
            return found, (Cursor(following) if following else None)
        if following == 0:
            return found, None
        scan, after = following, ""
        if read >= budget:
            return found, Cursor(scan)
