"""The work of a source that is one conditional GET (feeds, log endpoints): fetch, then parse.

Validators (ETag, Last-Modified) are stored only with the entries they cover — the poll loop
writes them in the same round trip as the items — and a 304 is a success with nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.core.runtime import Runtime
from workers.core.sources_file import Source
from workers.polling.fetch import FetchResult, fetch
from workers.polling.kinds import Collected, Item
from workers.polling.state import SourceState

Parse = Callable[[Any, FetchResult], tuple[list[Item], int]]
"""``(source, fetched) → (items, bad entries)``; raises ``SourceProblem`` for an unusable body."""


def collect_one(
    rt: Runtime, source: Source, state: SourceState, accept: str, parse: Parse
) -> Collected:
    result = fetch(
        source.url,
        rt.settings,
        rt.redis,
        etag=state.etag or None,
        last_modified=state.last_modified or None,
        accept=accept,
    )
    items, bad = ([], 0) if result.not_modified else parse(source, result)
    values: dict[str, Any] = {}
    if "etag" in result.headers or not result.not_modified:
        values["etag"] = result.headers.get("etag", "")
    if "last-modified" in result.headers or not result.not_modified:
        values["last_modified"] = result.headers.get("last-modified", "")
    return Collected(
        "not_modified" if result.not_modified else "ok",
        items,
        values,
        http_status=result.status,
        bad=bad,
    )
