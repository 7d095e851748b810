"""Every Redis key watchkeeper writes: its name pattern, type and bound, declared once.

The declarations live in ``keys.toml`` beside this module (pattern, type, bound, documentation
group); this module gives each a typed name. Code builds key names only through them
(``SEEN.key(settings, name)``), so a key cannot exist without a documented bound; the key
tables of docs/ are generated from them (``python -m workers.core.keys --docs docs``) and a
test checks both that they agree and
that every key a real run leaves in Redis matches a declaration here.

A pattern is the part after ``WATCHKEEPER_PREFIX`` (``wk:``); ``{field}`` parts are filled in
order by ``key()``. ``group`` names the table (``keys:GROUP`` markers in docs/) a key is listed in.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Protocol


class HasPrefix(Protocol):
    @property
    def prefix(self) -> str: ...


@dataclass(frozen=True)
class KeySpec:
    """One key pattern: how it is named, its Redis type, and what keeps it bounded."""

    pattern: str
    type: str
    bound: str
    group: str

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.pattern))

    @cached_property
    def _literals(self) -> tuple[str, ...]:
        """The text around the ``{field}`` parts (computed once: ``key`` is on hot paths)."""
        return tuple(re.split(r"\{\w+\}", self.pattern))

    def key(self, settings: HasPrefix, *parts: str) -> str:
        """The full key name: ``SEEN.key(settings, "bbc")`` → ``wk:seen:bbc``."""
        literals = self._literals
        if len(parts) != len(literals) - 1:
            raise ValueError(
                f"key {self.pattern!r} takes {len(literals) - 1} parts, got {len(parts)}"
            )
        out = [settings.prefix, literals[0]]
        for part, literal in zip(parts, literals[1:], strict=True):
            out += (part, literal)
        return "".join(out)

    def glob(self, settings: HasPrefix) -> str:
        """A SCAN pattern matching every key of this declaration."""
        return settings.prefix + re.sub(r"\{\w+\}", "*", self.pattern)

    def prefix_of(self, settings: HasPrefix) -> str:
        """The literal start of the key names, for stripping: ``wk:seen:``."""
        return settings.prefix + self.pattern.split("{", 1)[0]

    def regex(self) -> re.Pattern[str]:
        parts = re.split(r"\{\w+\}", self.pattern)
        return re.compile("^" + "(.+)".join(re.escape(p) for p in parts) + "$")

    @property
    def literal_length(self) -> int:
        return len(re.sub(r"\{\w+\}", "", self.pattern))


def _load() -> dict[str, KeySpec]:
    text = resources.files("workers.core").joinpath("keys.toml").read_text(encoding="utf-8")
    return {
        name: KeySpec(row["pattern"], row["type"], row["bound"], row["group"])
        for name, row in tomllib.loads(text).items()
    }


_DECLARED: dict[str, KeySpec] = _load()

# The declarations in keys.toml, one name each (checked against the file at import).
SEEN: KeySpec
SOURCE_STATE: KeySpec
SOURCE_LOCK: KeySpec
HOST_SLOTS: KeySpec
HOST_NEXT: KeySpec
STREAM: KeySpec
STREAM_SEQ: KeySpec
STREAM_BYTES: KeySpec
MEM_NODE: KeySpec
MEM_SERIES: KeySpec
TASK_MEMORY: KeySpec
KILLS: KeySpec
DEAD_LETTERS: KeySpec
LOC_ALERTS: KeySpec
LOC_BUFFER: KeySpec
LOC_QUEUED: KeySpec
LOC_LEASE: KeySpec
LOC_BATCHES: KeySpec
LOC_RETRIES: KeySpec
LOC_FAILED: KeySpec
LOC_STATS: KeySpec
LOC_LAST_ERROR: KeySpec
LOC_FLUSH_FLAG: KeySpec
LEGACY_ALERT: KeySpec
LEGACY_BATCH: KeySpec
HISTORY: KeySpec
ROBOTS_INDEX: KeySpec
LISTING_PRICES: KeySpec
LISTING_SEEN: KeySpec
ROBOTS_TEXT: KeySpec
TCP_STATS: KeySpec
TCP_BATCH: KeySpec
NOTIFY_OUTBOX: KeySpec
NOTIFY_QUEUE: KeySpec
NOTIFY_DUE: KeySpec
NOTIFY_DEAD: KeySpec
NOTIFY_LOG: KeySpec
NOTIFY_STATE: KeySpec
NOTIFY_DIGEST: KeySpec
NOTIFY_LOCK: KeySpec
NOTIFY_KICK: KeySpec
NOTIFY_PENDING: KeySpec
NOTIFY_HEALTH: KeySpec
QUEUED: KeySpec
BEAT_ENTRY: KeySpec
BEAT_LOCK: KeySpec
BEAT_STATS: KeySpec
BEAT_DUE: KeySpec
SOURCES: KeySpec
SOURCES_LOG: KeySpec
SOURCES_META: KeySpec
SOURCES_OWNERS: KeySpec
SOURCES_OWNED: KeySpec
SOURCES_FILES: KeySpec
WEB_LOGINS: KeySpec
REPLICA_FENCE: KeySpec

_missing = {n for n in __annotations__ if not n.startswith("_")} ^ set(_DECLARED)
if _missing:
    raise ImportError(f"workers/core/keys.py and keys.toml disagree on {sorted(_missing)}")
globals().update(_DECLARED)


def declared() -> tuple[KeySpec, ...]:
    return tuple(_DECLARED.values())


def match(name: str, settings: HasPrefix) -> KeySpec | None:
    """The declaration a full key name belongs to (the most specific one), or None."""
    if not name.startswith(settings.prefix):
        return None
    rest = name[len(settings.prefix) :]
    found = [s for s in _DECLARED.values() if s.regex().match(rest)]
    return max(found, key=lambda s: s.literal_length) if found else None


# --- documentation tables (docs/) -----------------------------------------------------------------
def markdown_table(group: str) -> str:
    lines = ["| Key | Type | Bound |", "|---|---|---|"]
    lines += [
        f"| `wk:{s.pattern}` | {s.type} | {s.bound} |"
        for s in _DECLARED.values()
        if s.group == group
    ]
    return "\n".join(lines)


def groups() -> list[str]:
    return list(dict.fromkeys(s.group for s in _DECLARED.values()))


def doc_tables() -> dict[str, str]:
    """The generated blocks this module owns: ``keys:GROUP`` (docs/keys.md, each stage's page)."""
    return {f"keys:{g}": markdown_table(g) for g in groups()}


if __name__ == "__main__":
    if sys.argv[1:]:
        from workers.core import doc_tables as _doc_tables

        sys.exit(_doc_tables.main(sys.argv[1:], doc_tables, "workers.core.keys"))
    for g in groups():
        print(f"## {g}\n{markdown_table(g)}\n")
