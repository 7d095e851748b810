""" "Test it now": one poll's work for a source not saved yet, without writing anything of it.

The source is read by its kind's reader, then its kind's ``collect`` runs — the poll's own
fetch path, with the source's request profile, under the usual caps (``WATCHKEEPER_HTTP_*``
bytes and seconds per request, the host's politeness slot) — on an empty state, so the fetch is
unconditional. Nothing of the poll loop's write runs: no state, no seen-set, no stream entry, no
hand-off. What would be emitted is shown: the first ``ROWS`` items' fields and, per field, how
many items it was found in (for a site: what each selector picks). The ``env:`` variables are
read in the dashboard's own process: one it lacks is the poll's one-line error here too.

At most ``CONCURRENT`` previews run at once per dashboard process (more: "busy"), each in a
thread of its own, never on the event loop. A preview is answered within a poll's time limit
(``WATCHKEEPER_TASK_TIME_LIMIT``) whatever the source does: one still running then is an error
shown at once, and it goes on holding its slot until it ends (a thread cannot be stopped; its
fetch ends at the fetch deadlines), so runaway previews are never more than ``CONCURRENT``.
"""

from __future__ import annotations

import contextvars
import json
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as Late
from dataclasses import dataclass, field
from typing import Any

from workers.core.redact import redact_text
from workers.core.runtime import Runtime
from workers.core.sources_file import Source
from workers.polling.errors import SourceError
from workers.polling.kinds import KINDS
from workers.polling.state import SourceState

ROWS = 20
COLUMNS = 10
CELL = 200
"""Characters of one value shown at most."""
MESSAGE = 500
CONCURRENT = 2
HIDDEN = ("source", "site", "schema", "seq", "key", "fetched_at", "location_method")
"""Bookkeeping every item carries: not what a person checks a source by."""

_RUNNING = threading.BoundedSemaphore(CONCURRENT)


@dataclass
class Preview:
    status: str
    """The poll's: ok, partial, error; or busy (too many previews at once)."""
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    http_status: int | None = None
    count: int = 0
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    """Per column, how many of the ``count`` items have a value in it."""


def flat(fields: dict[str, Any]) -> dict[str, Any]:
    """An item's fields with a site's own fields (``fields``) first, as columns of their own."""
    own = fields.get("fields")
    out = dict(own) if isinstance(own, dict) else {}
    out.update((k, v) for k, v in fields.items() if k != "fields" and k not in HIDDEN)
    return out


def cell(value: Any) -> str:
    if value in (None, [], {}):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def message(text: str) -> str:
    return redact_text(text.strip().splitlines()[0] if text.strip() else "")[:MESSAGE]


def preview(rt: Runtime, source: Source) -> Preview:
    """Run one collect of ``source``, waiting for it at most a poll's time limit (blocking:
    call it from a worker thread)."""
    if not _RUNNING.acquire(blocking=False):
        return Preview("busy", error="another preview is running; try again in a moment")
    result: Future[Preview] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            result.set_result(context.run(_run, rt, source))
        except BaseException as exc:  # handed to the caller, if it still waits
            result.set_exception(exc)
        finally:
            _RUNNING.release()

    threading.Thread(target=run, name=f"preview-{source.name}", daemon=True).start()
    limit = rt.settings.task_time_limit
    try:
        return result.result(timeout=limit)
    except Late:
        return Preview(
            "error",
            error=f"not finished within {limit}s (WATCHKEEPER_TASK_TIME_LIMIT, as a poll); it "
            "holds a preview slot until it ends",
        )


def _run(rt: Runtime, source: Source) -> Preview:
    try:
        collected = KINDS[source.kind].collect(rt, source, SourceState())
    except Exception as exc:  # as the poll loop words a failure
        text = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        return Preview("error", error=message(text), http_status=getattr(exc, "status", None))
    items = [flat(item.fields) for item in collected.items]
    columns: list[str] = []
    for item in items:
        columns += [k for k in item if k not in columns]
    site_fields = getattr(source, "fields", None)
    if isinstance(site_fields, dict):  # a site: every selector shown, found or not
        columns = [*site_fields, *(c for c in columns if c not in site_fields)]
    columns = columns[:COLUMNS]
    warnings = [message(str(w)) for w in collected.extra.get("warnings", []) if w]
    if collected.warning and message(collected.warning) not in warnings:
        warnings.insert(0, message(collected.warning))
    return Preview(
        collected.status,
        error=message(collected.error or ""),
        warnings=warnings,
        http_status=collected.http_status,
        count=len(items),
        columns=columns,
        rows=[[cell(item.get(c)) for c in columns] for item in items[:ROWS]],
        found={
            c: sum(1 for item in items if item.get(c) not in (None, "", [], {})) for c in columns
        },
    )
