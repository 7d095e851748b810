"""The work of a source that is one conditional GET (feeds, log endpoints): fetch, then parse.

Validators (ETag, Last-Modified) are stored only with the entries they cover — the poll loop
writes them in the same round trip as the items — and a 304 is a success with nothing new.
The response's caching headers, and what ``hints`` reads from the body (a feed's ``<ttl>``,
``<skipHours>``), say when to come back (``workers.polling.freshness``); the body's part is
stored with the state (``body_freshness``) so a 304, which has no body, keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.core.runtime import Runtime
from workers.core.source_env import env_policy
from workers.core.sources_file import Source
from workers.polling.fetch import FetchResult, fetch
from workers.polling.freshness import Freshness, from_headers
from workers.polling.kinds import Collected, Item
from workers.polling.profile import resolve
from workers.polling.state import SourceState

Parse = Callable[[Any, FetchResult], tuple[list[Item], int]]
"""``(source, fetched) → (items, bad entries)``; raises ``SourceProblem`` for an unusable body."""

Hints = Callable[[bytes], Freshness | None]
"""``body → what it says about when to come back`` (None: nothing); never raises."""


def collect_one(
    rt: Runtime,
    source: Source,
    state: SourceState,
    accept: str,
    parse: Parse,
    hints: Hints | None = None,
) -> Collected:
    result = fetch(
        source.url,
        rt.settings,
        rt.redis,
        etag=state.etag or None,
        last_modified=state.last_modified or None,
        accept=accept,
        profile=resolve(source, policy=env_policy(rt)),
    )
    items, bad = ([], 0) if result.not_modified else parse(source, result)
    values: dict[str, Any] = {}
    if "etag" in result.headers or not result.not_modified:
        values["etag"] = result.headers.get("etag", "")
    if "last-modified" in result.headers or not result.not_modified:
        values["last_modified"] = result.headers.get("last-modified", "")
    freshness = from_headers(result.headers)
    if hints is not None and source.honour_cache:
        if result.not_modified:
            body = Freshness.from_json(state.raw.get("body_freshness"))
        else:
            body = hints(result.body)
            values["body_freshness"] = body.to_json() if body is not None else ""
        freshness = body + freshness if body is not None else freshness
    return Collected(
        "not_modified" if result.not_modified else "ok",
        items,
        values,
        http_status=result.status,
        bad=bad,
        freshness=freshness,
    )
