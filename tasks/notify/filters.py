"""Which items a sink lets through: its streams, sources or tags, then include/exclude regexes.

Patterns are compiled with RE2, whose matching time is linear in the text: a catastrophic
pattern such as ``(a+)+$`` costs the same as any other, so no user pattern can hang a worker.
The text a pattern sees is the item's human-readable fields (title, summary, log line, listing
fields, health message), capped at ``MAX_TEXT`` characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import re2

MAX_TEXT = 65536
TEXT_FIELDS = ("title", "summary", "line", "lines", "message", "last_error", "change", "location")
"""Fields whose values the include/exclude patterns see (``fields`` of listings too)."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported once, as a `check` problem


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """A compiled RE2 pattern; ``ValueError`` (one line) when RE2 rejects it."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text.splitlines()[0] if text else "not a valid RE2 pattern") from None


def searchable_text(entry: Mapping[str, Any]) -> str:
    """The item's readable text, one field per line."""
    parts: list[str] = []
    for name in TEXT_FIELDS:
        value = entry.get(name)
        if isinstance(value, dict):
            parts.extend(str(v) for v in value.values() if v not in (None, ""))
        elif value not in (None, ""):
            parts.append(str(value))
    fields = entry.get("fields")
    if isinstance(fields, dict):
        parts.extend(str(v) for v in fields.values() if v not in (None, ""))
    return "\n".join(parts)[:MAX_TEXT]


def any_match(patterns: Iterable[str], text: str) -> bool:
    return any(compile_pattern(p).search(text) is not None for p in patterns)


def source_of(entry: Mapping[str, Any]) -> str:
    """The source (or site) an entry came from."""
    return str(entry.get("source") or entry.get("site") or "")


def passes(
    entry: Mapping[str, Any],
    *,
    sources: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    source_tags: Mapping[str, tuple[str, ...]] | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    text: str | None = None,
) -> bool:
    """True when the entry passes one level of filters (global, then the sink's).

    ``sources`` and ``tags`` together mean "from one of these sources, or from a source carrying
    one of these tags"; ``source_tags`` maps a source name to its tags (``[[feeds]] tags``).
    """
    if sources or tags:
        origin = source_of(entry)
        tagged = bool(tags) and bool(set(tags) & set((source_tags or {}).get(origin, ())))
        if origin not in sources and not tagged:
            return False
    if not include and not exclude:
        return True
    body = searchable_text(entry) if text is None else text
    if include and not any_match(include, body):
        return False
    return not (exclude and any_match(exclude, body))
