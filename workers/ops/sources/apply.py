"""Applying a sources file to the registry: the file owns its sources, and only those.

``watchkeeper sources apply FILE`` — and ``run`` and every beat, at start and when their file
changes — makes the registry match the file for the sources *that file owns* (owner
``file:<absolute path>``): the file's new sources are added, changed ones rewritten, and the
ones it owned but no longer lists removed. Sources of any other owner (``cli``, ``opml``,
``api``, another file) are never touched; a name another owner holds is a one-line error and
nothing is written. The diff is computed first (``--dry-run`` stops there) and the write is
one atomic call.

Two machines may hold different copies of one path. A beat applies its copy automatically
only when it is not older than the version in the registry that another host applied (the
record ``wk:sources:files`` keeps: digest, mtime, host); otherwise it logs one line and
leaves the registry alone — ``watchkeeper sources apply FILE`` applies a copy regardless.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from workers.core.redact import redact_text, redact_url
from workers.core.settings import Settings
from workers.core.source_env import EnvPolicy
from workers.core.source_registry import Definition, SourceRegistry, encode_json, file_owner
from workers.core.sources_file import (
    ConfigError,
    SourcesConfig,
    is_bundled,
    load_config,
    no_sources_file,
)
from workers.store.source_writes import RegistryError, Written, write

SHOWN = 50
"""Diff lines printed or logged at most (a summary line counts the rest)."""


@dataclass
class Diff:
    """How one owner's sources in the registry differ from what it wants."""

    owner: str
    added: list[Definition] = field(default_factory=list)
    changed: list[tuple[Definition, Definition]] = field(default_factory=list)
    removed: list[Definition] = field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def summary(self) -> str:
        return (
            f"{len(self.added)} to add, {len(self.changed)} to change, "
            f"{len(self.removed)} to remove, {self.unchanged} unchanged"
        )

    def lines(self, limit: int = SHOWN) -> list[str]:
        out = [f"  + {d.kind} {d.name}  {describe(d)}" for d in self.added]
        out += [f"  ~ {new.kind} {new.name}: {changes(old, new)}" for old, new in self.changed]
        out += [f"  - {d.kind} {d.name}" for d in self.removed]
        if len(out) > limit:
            out = [*out[:limit], f"  … and {len(out) - limit} more"]
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "added": [d.name for d in self.added],
            "changed": [new.name for _, new in self.changed],
            "removed": [d.name for d in self.removed],
            "unchanged": self.unchanged,
        }


def shown(value: Any) -> str:
    """A table value as a diff shows it: JSON, credentials masked, long values cut."""
    text = redact_text(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return text if len(text) <= 80 else text[:77] + "..."


def describe(d: Definition) -> str:
    url = d.table.get("url")
    every = d.table.get("interval", "default interval")
    return f"{redact_url(url) if isinstance(url, str) else '?'}  every {every}"


def changes(old: Definition, new: Definition) -> str:
    parts = [] if old.kind == new.kind else [f"kind {old.kind} → {new.kind}"]
    for key in sorted(set(old.table) | set(new.table)):
        before, after = old.table.get(key), new.table.get(key)
        if before != after:
            parts.append(
                f"{key} {shown(before) if key in old.table else '(unset)'} → "
                f"{shown(after) if key in new.table else '(unset)'}"
            )
    return ", ".join(parts) or "(reformatted)"


def diff(registry: SourceRegistry, owner: str, wanted: list[Definition]) -> Diff:
    """Compare ``wanted`` with what ``owner`` holds; a wanted name held by another owner is a
    ``RegistryError`` (one line each). Two round trips whatever the sizes."""
    held = registry.names_of(owner)
    current = registry.definitions([d.name for d in wanted] + sorted(held))
    problems = []
    result = Diff(owner)
    for d in wanted:
        existing = current.get(d.name)
        if existing is not None and existing.owner != owner:
            problems.append(
                f"source '{d.name}': name: already in the registry, owned by "
                f"{existing.owner} (remove it there first, or choose another name)"
            )
        elif existing is None:
            result.added.append(d)
        elif existing.encode() != d.encode():
            result.changed.append((existing, d))
        else:
            result.unchanged += 1
    if problems:
        raise RegistryError(problems)
    names = {d.name for d in wanted}
    gone = (current.get(n) for n in sorted(held - names))
    result.removed = [d for d in gone if d is not None]
    return result


def execute(
    client: redis.Redis,
    settings: Settings,
    result: Diff,
    file_record: str = "",
    read: bool = True,
) -> Written:
    """Write a diff — what is added or changed, what is removed — in one call. ``read=False``:
    the definitions come from a file ``load_config`` just validated."""
    puts = result.added + [new for _, new in result.changed]
    removes = [d.name for d in result.removed]
    return write(client, settings, result.owner, puts, removes, file_record=file_record, read=read)


# --- sources files ---------------------------------------------------------------------------


def file_definitions(config: SourcesConfig, owner: str) -> list[Definition]:
    """The file's sources as the registry stores them, in the file's order."""
    out = []
    for source in config.sources:
        _section, table = config.tables[source.name]
        rest = {k: v for k, v in table.items() if k != "name"}
        out.append(Definition(source.name, source.kind, owner, rest))
    return out


def digest(definitions: list[Definition]) -> str:
    """The digest of a file's sources (comments and order do not count)."""
    text = encode_json(sorted(d.encode() + d.name for d in definitions))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Applied:
    """What applying a file did: ``state`` "applied", "dry-run", "unchanged" (its digest is the
    registry's), or "stale" (another host applied a newer copy: left alone)."""

    path: str
    owner: str
    state: str
    diff: Diff | None = None
    written: Written | None = None
    note: str = ""

    def report(self) -> list[str]:
        """The lines a person reads: one summary, then the diff."""
        if self.state == "unchanged":
            return [f"{self.path}: the registry already matches it ({self.owner})"]
        if self.state == "stale":
            return [f"{self.path}: not applied: {self.note}"]
        assert self.diff is not None
        head = f"{self.path} ({self.owner}): {self.diff.summary()}"
        if self.state == "dry-run":
            head += " — dry run, nothing written"
        elif self.written is not None:
            head += f" — registry revision {self.written.rev}"
        return [head, *self.diff.lines()]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "owner": self.owner, "state": self.state}
        if self.diff is not None:
            out["diff"] = self.diff.as_json()
        if self.written is not None:
            out["revision"] = self.written.rev
        if self.note:
            out["note"] = self.note
        return out


def apply_file(
    client: redis.Redis,
    settings: Settings,
    path: Path,
    *,
    config: SourcesConfig | None = None,
    dry_run: bool = False,
    automatic: bool = False,
) -> Applied:
    """Make the registry match the sources file at ``path`` for the sources it owns.

    ``automatic`` (``run``, beat): skip when the registry already holds this version, and leave
    the registry alone when another host applied a newer copy of the same path. Raises
    ``ConfigError`` (an invalid file, a profile naming a variable no source may read —
    ``source_env``) and ``RegistryError`` (a name
    another owner holds, the cap) with one line per problem; nothing is written then."""
    path = path.resolve()
    if is_bundled(path):
        raise RegistryError([no_sources_file()])
    config = load_config(path) if config is None else config
    refused = EnvPolicy.of(settings, config).config_problems(config)
    if refused:
        raise ConfigError(str(path), refused)
    owner = file_owner(str(path))
    wanted = file_definitions(config, owner)
    registry = SourceRegistry(client, settings)
    version = digest(wanted)
    mtime = _mtime(path)
    if automatic:
        record = registry.file_record(owner) or {}
        if record.get("digest") == version:
            return Applied(str(path), owner, "unchanged")
        if record and record.get("host") != socket.gethostname() and record.get("mtime", 0) > mtime:
            note = (
                f"the registry holds a newer copy, applied from {record.get('host')} (modified "
                f"{_when(record.get('mtime', 0))}); `watchkeeper sources apply {path}` applies "
                "this one anyway"
            )
            return Applied(str(path), owner, "stale", note=note)
    result = diff(registry, owner, wanted)
    if dry_run:
        return Applied(str(path), owner, "dry-run", result)
    record_text = encode_json(
        {"digest": version, "mtime": mtime, "host": socket.gethostname(), "at": time.time()}
    )
    written = execute(client, settings, result, record_text, read=False)
    return Applied(str(path), owner, "applied", result, written)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(stamp)))


def release(
    client: redis.Redis, settings: Settings, owner: str, *, dry_run: bool = False
) -> tuple[Diff, Written | None]:
    """Remove every source ``owner`` holds (``sources remove --owner``: a file that moved or
    is gone; the demo's sources when a real run starts) — one atomic call."""
    registry = SourceRegistry(client, settings)
    held = registry.definitions(sorted(registry.names_of(owner)))
    result = Diff(owner, removed=[d for d in held.values() if d is not None])
    if dry_run or result.empty:
        return result, None
    return result, execute(client, settings, result)
