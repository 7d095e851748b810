"""Importing an OPML file into the registry: the one path the CLI, the dashboard and the REST
API share. Every feed is named, validated and diffed against what ``opml`` holds; the import
adds and updates, never removes, and writes in one atomic call (or, ``dry_run``, not at all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.core.runtime import Runtime
from workers.ops.sources.apply import Diff, diff, execute
from workers.ops.sources.opml import OWNER, Parsed, definitions
from workers.store.source_writes import Written


@dataclass
class Imported:
    label: str
    parsed: Parsed
    diff: Diff
    dry_run: bool
    written: Written | None = None

    def head(self) -> str:
        """The summary line ``sources import-opml`` prints."""
        d, p = self.diff, self.parsed
        line = (
            f"OPML {self.label}: {len(p.feeds)} feeds: {len(d.added)} to add, "
            f"{len(d.changed)} to change, {d.unchanged} unchanged"
        )
        if p.skipped_types or p.duplicates:
            line += (
                f"; skipped {p.skipped_types} outlines of another type and "
                f"{p.duplicates} repeated URLs"
            )
        return line + (" — dry run, nothing written" if self.dry_run else f" (owner {OWNER})")

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.diff.as_json(),
            "feeds": len(self.parsed.feeds),
            "skipped_types": self.parsed.skipped_types,
            "duplicates": self.parsed.duplicates,
            "dry_run": self.dry_run,
        }
        if self.written is not None:
            data["revision"] = self.written.rev
        return data


def import_parsed(
    rt: Runtime, parsed: Parsed, label: str, interval: str | None = None, dry_run: bool = False
) -> Imported:
    """Raises ``RegistryError`` (a feed's problem, a name another owner holds, the cap): one
    line each, nothing written."""
    wanted = definitions(rt.sources, parsed, interval)
    result = diff(rt.sources, OWNER, wanted)
    result.removed = []  # an import adds and updates; it never removes
    imported = Imported(label, parsed, result, dry_run)
    if not dry_run:
        imported.written = execute(rt.redis, rt.settings, result)
    return imported
