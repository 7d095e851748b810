"""Writing the source registry: validate every definition, then write them all in one call.

Every write goes through ``write``: the definitions are read by their kind's reader (the same
code ``watchkeeper check`` runs, so the same one-line problems), bounded in size, and then one
Lua call (``lua/sources_write.lua``) checks ownership and the cap and writes everything with one
revision — or nothing. A file, an OPML import or a CLI edit is never half written.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.core.source_registry import Definition, check_json, owner_key
from workers.core.sources_file import KIND_SECTIONS, NAME_RE, ConfigError, read_sources
from workers.store.scripts import Script

_WRITE = Script("workers.store", "sources_write")


class RegistryError(ConfigError):
    """A write the registry refused (owner, cap, missing name): one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("registry", problems)


@dataclass(frozen=True)
class Written:
    rev: int
    added: int
    changed: int
    removed: int


def validate(settings: Settings, definitions: Sequence[Definition], read: bool = True) -> list[str]:
    """Every problem of these definitions, as ``check`` words them (nothing raised).
    ``read=False``: the tables were just read by their readers (a sources file ``load_config``
    validated) — only what the registry adds (names, JSON, size) is checked."""
    problems: list[str] = []
    by_section: dict[str, list[dict[str, Any]]] = {}
    for d in definitions:
        if d.kind not in KIND_SECTIONS:
            known = ", ".join(sorted(KIND_SECTIONS.names()))
            problems.append(f"source '{d.name}': kind: {d.kind!r} is not one of {known}")
            continue
        if not NAME_RE.match(d.name):
            problems.append(
                f"source '{d.name}': name: {d.name!r} must be 1-64 of letters, digits, "
                "'_', '.', '-'"
            )
            continue
        json_problems = check_json(d.name, d.table)
        if json_problems:
            problems += json_problems
            continue
        size = len(d.encode().encode("utf-8"))
        if size > settings.source_max_bytes:
            problems.append(
                f"source '{d.name}': definition: {size} bytes, more than "
                f"WATCHKEEPER_SOURCE_MAX_BYTES={settings.source_max_bytes}"
            )
            continue
        by_section.setdefault(d.section, []).append(d.file_table())
    for section, tables in by_section.items() if read else ():
        read_sources(section, tables, problems)
    return problems


def write(
    client: redis.Redis,
    settings: Settings,
    owner: str,
    puts: Sequence[Definition] = (),
    removes: Iterable[str] = (),
    *,
    mode: str = "",
    file_record: str = "",
    read: bool = True,
    expect: str = "",
) -> Written:
    """Write ``puts`` and remove ``removes``, all owned by ``owner``, in one atomic call.

    ``mode`` "new": every put must be a new name (``sources add``); "owned": every name must
    exist and belong to ``owner`` (edit, remove); "": create or update, absent removals skipped
    (apply, import). ``expect`` (with "owned"): the ``SourceRegistry.version`` each name must still
    have — an edit of what was read, refused ("changed meanwhile") if another write came
    between. ``read``: see ``validate``. Raises ``RegistryError`` (nothing written) on any
    problem."""
    removes = list(dict.fromkeys(removes))
    counts = Counter(d.name for d in puts)
    duplicates = sorted({n for n, c in counts.items() if c > 1} | (set(counts) & set(removes)))
    problems = [f"source '{n}': name: duplicate name" for n in duplicates]
    problems += [
        f"source '{d.name}': owner: {d.owner!r} is not {owner!r}" for d in puts if d.owner != owner
    ]
    problems += validate(settings, puts, read)
    if problems:
        raise RegistryError(problems)
    args: list[Any] = [
        owner,
        settings.max_sources,
        settings.sources_changes,
        uuid.uuid4().hex,
        file_record,
        f"{mode}@{expect}" if expect and mode == "owned" else mode,
        len(puts),
    ]
    for d in puts:
        args += [d.name, d.encode()]
    args += removes
    reply = _WRITE(
        client,
        [
            keys.SOURCES.key(settings),
            keys.SOURCES_LOG.key(settings),
            keys.SOURCES_META.key(settings),
            keys.SOURCES_OWNERS.key(settings),
            owner_key(settings, owner),
            keys.SOURCES_FILES.key(settings),
        ],
        args,
    )
    status = str(reply[0])
    if status != "ok":
        raise RegistryError([refusal(status, [str(x) for x in reply[1:]], settings)])
    written = Written(*(int(x) for x in reply[1:5]))
    if written.removed:
        age_out(client, settings, removes)
    return written


def age_out(client: redis.Redis, settings: Settings, names: Sequence[str]) -> None:
    """A removed source's state ages out as any source's does; a paused one's state has no TTL
    (nothing polls it), so it gets one here."""
    state = [keys.SOURCE_STATE.key(settings, name) for name in names]
    pipe = client.pipeline(transaction=False)
    for key in state:
        pipe.ttl(key)
    ttls = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for key, ttl in zip(state, ttls, strict=True):
        if int(ttl) == -1:
            pipe.expire(key, settings.state_ttl)
    pipe.execute()


def refusal(status: str, detail: list[str], settings: Settings) -> str:
    """The one line for a write the registry refused."""
    if status == "owned":
        name, other = detail
        return (
            f"source '{name}': name: already in the registry, owned by {other} "
            "(remove it there first, or choose another name)"
        )
    if status == "exists":
        name, other = detail
        return f"source '{name}': name: already in the registry (owner {other})"
    if status == "missing":
        return f"source '{detail[0]}': name: not in the registry"
    if status == "stale":
        return (
            f"source '{detail[0]}': changed by another edit since it was read; "
            "read it again and repeat the change"
        )
    if status == "cap":
        now, after, cap = detail
        return (
            f"registry: {after} sources would pass WATCHKEEPER_MAX_SOURCES={cap} "
            f"(it holds {now}); nothing was written"
        )
    return f"registry: write refused: {status} {' '.join(detail)}"
