"""The feed source kind: RSS/Atom polled into the ``alerts`` stream, new alerts of
``locate = true`` feeds handed on to location batching."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from celery import shared_task

from tasks.feeds.freshness import feed_freshness
from tasks.feeds.parse import ACCEPT, parse_feed
from tasks.feeds.source import FeedSource, read_feed
from tasks.locations import alerts_handed_over, coordinates_of, location_handoff, payload
from workers.core.runtime import Runtime, get_runtime
from workers.polling.fetch import FetchResult
from workers.polling.kinds import Collected, Item, SourceKind, declare_kind
from workers.polling.poll import poll_by_name
from workers.polling.single_fetch import collect_one
from workers.polling.state import SourceState
from workers.store.seen import Added, Handoff

log = logging.getLogger(__name__)


def _parse(source: FeedSource, result: FetchResult) -> tuple[list[Item], int]:
    items = parse_feed(source, result.body, result.headers, result.url)
    if source.locate:  # what location batching keeps of each alert, handed over when new
        items = [replace(item, handoff=payload(item.fields)) for item in items]
    return items, 0


def collect(rt: Runtime, source: FeedSource, state: SourceState) -> Collected:
    return collect_one(rt, source, state, ACCEPT, _parse, hints=feed_freshness)


def handoff(rt: Runtime, source: FeedSource) -> Handoff | None:
    """New alerts of ``locate = true`` feeds enter location batching in the same atomic step
    that writes them to the stream: no crash in between can leave one unlocated."""
    return location_handoff(rt) if source.locate else None


def after_handoff(
    rt: Runtime, source: FeedSource, collected: Collected, added: Added
) -> dict[str, Any] | None:
    """Locate at once the new alerts their feed placed; fall back the ones the buffer evicted."""
    if not source.locate or not (added.new or added.evicted):
        return None
    placed = [sid for i, sid in added.new if coordinates_of(collected.items[i].fields)]
    try:
        alerts_handed_over(rt, placed, added.evicted)
    except Exception:  # each alert already has its marker: a flush or the expiry finishes it
        log.exception("[feeds] location follow-up of %d alerts failed", len(added.new))
    return None


# fmt: off
FEEDS = declare_kind(SourceKind(
    name="feed", section="feeds", read=read_feed, task="tasks.feeds.poll_feed", stream="alerts",
    collect=collect, written=after_handoff, handoff=handoff))
# fmt: on


@shared_task(name="tasks.feeds.poll_feed")
def poll_feed(name: str, force: bool = False) -> dict[str, Any]:
    """Scheduled poll of one feed (``force``: "check now", ignoring the due time)."""
    return poll_by_name(get_runtime(), FEEDS, name, force)
