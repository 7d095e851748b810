"""Source kinds: everything about one kind of polled source, declared once by its stage.

A stage declares a ``SourceKind`` and calls ``declare_kind``; from that one declaration the
sources file learns its ``[[section]]`` and schema, beat schedules its task per source,
``watchkeeper poll`` and ``status`` handle its sources, and the one poll loop
(``workers.polling.poll``) runs it. See "Adding a source kind" in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.core.registry import Registry
from workers.core.source_schema import FieldSpec
from workers.core.sources_file import FieldReader, Source, declare_source_section

if TYPE_CHECKING:
    from workers.core.runtime import Runtime
    from workers.polling.freshness import Freshness
    from workers.polling.state import SourceState
    from workers.store.seen import Added, Handoff


@dataclass(frozen=True)
class Item:
    """One parsed entry: its dedup key, the fields written to the output stream, and what is
    handed on with it when it is new (the kind's ``handoff``; None: not handed on)."""

    key: str
    fields: dict[str, Any]
    handoff: str | None = None


@dataclass
class Collected:
    """What one poll's work produced, written by the loop in one round trip.

    ``status`` is "ok", "not_modified", "partial" (some of the work failed, what was read is
    kept) or "error" (nothing usable: the source backs off). ``values`` are extra state fields
    (validators, counts); ``extra`` goes into the poll's outcome as is.
    """

    status: str
    items: list[Item] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    warning: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    bad: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    freshness: Freshness | None = None
    """What the source said about when to come back (``workers.polling.freshness``)."""
    context: Any = None
    """Anything the kind's ``written`` hook needs; not part of the outcome."""


Collect = Callable[["Runtime", Any, "SourceState"], Collected]
Written = Callable[["Runtime", Any, Collected, "Added"], dict[str, Any] | None]


@dataclass(frozen=True)
class SourceKind:
    """``name``: "feed" (status, beat entry names, ``Source.kind``); ``section``: "feeds" (the
    sources file's ``[[feeds]]``); ``read``: builds one Source from a table, recording problems;
    ``task``: the scheduled poll's Celery task (takes the source name); ``stream``: where new
    items go; ``collect``: one poll's work (raise ``SourceError`` for a failure); ``written``:
    optional, after new items were written (``Added``: ``(index, stream id)`` of each, ids the
    hand-off evicted) — may return more outcome fields; ``status``: optional extra status
    fields per source; ``handoff``: optional, the capped queue new items are handed to in the
    same atomic step that writes them (``Item.handoff`` is each item's payload); ``fields``:
    the fields ``read`` reads beyond the common ones, as data (``workers.core.source_schema``:
    the REST API's schema and the dashboard's form; a test keeps them in step with ``read``)."""

    name: str
    section: str
    read: Callable[[FieldReader, str], Source]
    task: str
    stream: str
    collect: Collect
    written: Written | None = None
    status: Callable[[Runtime, Any], dict[str, Any]] | None = None
    handoff: Callable[[Runtime, Any], Handoff | None] | None = None
    fields: tuple[FieldSpec, ...] = ()


KINDS: Registry[SourceKind] = Registry("source kind")

PollHook = Callable[["Runtime", Source, str, dict[str, Any], int, int], None]
"""``hook(rt, source, stream, saved state values, errors before the poll, new items)``, called
after every poll's write; it must not raise (the poll loop logs and ignores it if it does)."""

POLL_HOOKS: Registry[PollHook] = Registry("poll hook")


def declare_poll_hook(hook: PollHook) -> PollHook:
    """Another stage follows every poll (notifications: source health, delivery requests)."""
    return POLL_HOOKS.add(f"{hook.__module__}.{hook.__qualname__}", hook)


def declare_kind(kind: SourceKind) -> SourceKind:
    declare_source_section(kind.section, kind.read, kind.name)
    return KINDS.add(kind.name, kind)


def kind_of(source: Source) -> SourceKind:
    return KINDS[source.kind]
