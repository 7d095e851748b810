"""A whole new source kind in one module: JSON Feed (jsonfeed.org) into the ``alerts`` stream.

"Adding a source kind" in docs/architecture.md shows this file; a test declares it and polls a
real feed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from celery import shared_task

from workers.core.runtime import Runtime, get_runtime
from workers.core.sources_file import FieldReader, Source
from workers.polling.errors import SourceProblem
from workers.polling.fetch import FetchResult
from workers.polling.kinds import Collected, Item, SourceKind, declare_kind
from workers.polling.poll import poll_by_name
from workers.polling.single_fetch import collect_one
from workers.polling.state import SourceState


@dataclass(frozen=True)
class JsonFeedSource(Source):
    kind: ClassVar[str] = "json_feed"


def read(f: FieldReader, name: str) -> JsonFeedSource:
    return JsonFeedSource(name=name, url=f.url(), interval=f.interval())


def parse(source: JsonFeedSource, result: FetchResult) -> tuple[list[Item], int]:
    try:
        entries = json.loads(result.body)["items"]
    except (ValueError, KeyError, TypeError):
        raise SourceProblem(f"{result.url}: not a JSON Feed") from None
    return [
        Item(
            str(e["id"]),
            {
                "source": source.name,
                "title": str(e.get("title", "")),
                "link": str(e.get("url", "")),
                "key": str(e["id"]),
            },
        )
        for e in entries
    ], 0


def collect(rt: Runtime, source: JsonFeedSource, state: SourceState) -> Collected:
    return collect_one(rt, source, state, "application/feed+json", parse)


JSON_FEEDS = declare_kind(
    SourceKind(
        name="json_feed",
        section="json_feeds",
        read=read,
        task="tasks.json_feed.poll",
        stream="alerts",
        collect=collect,
    )
)


@shared_task(name="tasks.json_feed.poll")
def poll(name: str, force: bool = False) -> dict[str, Any]:
    return poll_by_name(get_runtime(), JSON_FEEDS, name, force)
