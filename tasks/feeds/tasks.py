"""The feed source kind: RSS/Atom/JSON Feed polled into the ``alerts`` stream, new alerts of
``locate = true`` feeds handed on to location batching.

Each poll records in the source's state which parser read the document (``parser``: fast,
feedparser or json, ``parser_format``), whether ``auto`` fell back to feedparser and why
(``parser_fallback``, ``parser_fallback_detail``), and running counts (``parser_polls``,
``parser_fallbacks``, ``parser_fallbacks_<reason>``): ``status`` shows them and
``watchkeeper metrics`` exports them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from celery import shared_task

from tasks.feeds.fields import FEED_FIELDS
from tasks.feeds.freshness import feed_freshness
from tasks.feeds.parse import ACCEPT, parse_feed
from tasks.feeds.parsers import Options, Parsed
from tasks.feeds.source import FeedSource, read_feed
from tasks.locations import alerts_handed_over, coordinates_of, location_handoff, payload
from workers.core.runtime import Runtime, get_runtime
from workers.polling.fetch import FetchResult
from workers.polling.kinds import Collected, Item, SourceKind, declare_kind
from workers.polling.poll import poll_by_name
from workers.polling.single_fetch import collect_one
from workers.polling.state import SourceState, as_float
from workers.store.seen import Added, Handoff

log = logging.getLogger(__name__)


def collect(rt: Runtime, source: FeedSource, state: SourceState) -> Collected:
    options = Options.of(
        rt.settings, source.parser, source.sanitize_html, source.resolve_relative_uris
    )
    seen: list[Parsed] = []

    def parse(source: FeedSource, result: FetchResult) -> tuple[list[Item], int]:
        items, parsed = parse_feed(source, result.body, result.headers, result.url, options)
        seen.append(parsed)
        if source.locate:  # what location batching keeps of each alert, handed over when new
            items = [replace(item, handoff=payload(item.fields)) for item in items]
        return items, parsed.bad

    collected = collect_one(rt, source, state, ACCEPT, parse, hints=feed_freshness)
    if seen:
        collected.values.update(parser_values(state.raw, seen[0]))
        if seen[0].cut:
            collected.warning = (
                f"kept the first {options.max_entries} entries of a longer document "
                f"(WATCHKEEPER_FEED_MAX_ENTRIES={options.max_entries})"
            )
    return collected


def parser_values(raw: dict[str, str], parsed: Parsed) -> dict[str, Any]:
    """The state fields recording one poll's parser (counts carried on from the stored state:
    polls of one source never overlap, they hold its lock)."""

    def plus_one(name: str) -> int:
        return int(as_float(raw.get(name))) + 1

    values: dict[str, Any] = {
        "parser": parsed.parser,
        "parser_format": parsed.format,
        "parser_fallback": parsed.fallback,
        "parser_fallback_detail": parsed.detail[:200] if parsed.fallback else "",
        "parser_polls": plus_one("parser_polls"),
    }
    if parsed.fallback:
        values["parser_fallbacks"] = plus_one("parser_fallbacks")
        name = f"parser_fallbacks_{parsed.fallback}"
        values[name] = plus_one(name)
    return values


def status(rt: Runtime, source: FeedSource) -> dict[str, Any]:
    """The parser this feed is configured with (its state holds what each poll used)."""
    return {"parser": source.parser or rt.settings.feed_parser}


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
    collect=collect, written=after_handoff, handoff=handoff, status=status, fields=FEED_FIELDS))
# fmt: on


@shared_task(name="tasks.feeds.poll_feed")
def poll_feed(name: str, force: bool = False) -> dict[str, Any]:
    """Scheduled poll of one feed (``force``: "check now", ignoring the due time)."""
    return poll_by_name(get_runtime(), FEEDS, name, force)
