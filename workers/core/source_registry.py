"""The source registry in Redis: the one place every process reads its sources from.

Each source is stored once, as its *definition* — its kind, its owner (``file:<path>``,
``cli``, ``opml``, ``api``) and its table exactly as the sources file would hold it — in one
HASH (``wk:sources``). Definitions are validated by the sources file's own readers before they
are written (``workers.store.source_writes``) and built into ``Source`` objects by the same
readers when read, so a registry source and a file source are the same thing.

Reading costs what is needed, never the whole registry unless asked:

* a worker resolves one source by name with one ``HGET`` (``SourceRegistry.get``); the built
  source is memoised by its stored text, so an unchanged source is not read twice;
* a process that needs every source (beat, ``status``, ``sources list``) follows the registry
  (``ChangeTracker``): one ``HMGET`` of the revision tells it nothing changed; otherwise it reads
  the names changed since its revision from the change log (``wk:sources:log``) and only
  their definitions — the whole registry again only at its first look, when the log was
  trimmed past its revision, or when the registry is new (Redis lost its data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.core.sources_file import KIND_SECTIONS, ConfigError, Source, read_sources

log = logging.getLogger(__name__)

OWNERS = ("cli", "opml", "api")
"""Owners other than sources files (``file:<path>``)."""

MEMO = 4096
"""Built sources one process keeps (by their stored text), most recently used first."""

SCAN = 1000
"""Definitions read per round trip when the whole registry is read (``HSCAN``)."""


def file_owner(path: str) -> str:
    return f"file:{path}"


def owner_key(settings: Settings, owner: str) -> str:
    """The SET of one owner's names; keyed by a digest (paths can hold anything)."""
    digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return keys.SOURCES_OWNED.key(settings, digest)


@dataclass(frozen=True)
class Definition:
    """One stored source: its name, kind ("feed"), owner and table (without ``name``)."""

    name: str
    kind: str
    owner: str
    table: dict[str, Any]
    raw: str = field(default="", compare=False, repr=False)
    """The stored text it was read from ("" for one not read from the registry)."""

    def encode(self) -> str:
        """Canonical JSON (sorted keys): an unchanged definition is the same text."""
        return encode_json({"kind": self.kind, "owner": self.owner, "table": self.table})

    @classmethod
    def decode(cls, name: str, raw: str) -> Definition:
        data = json.loads(raw)
        return cls(name, str(data["kind"]), str(data["owner"]), dict(data["table"]), raw)

    def version(self, salt: str) -> str:
        """The version of the stored text, keyed by the registry's ``salt`` (its epoch, shown
        nowhere): an edit that read this version is refused once another one replaced it. The
        key keeps the tag from being a way to test guesses at a secret in the definition (the
        URL's token, a literal header) against what a read-only API client sees. SHA-1 as
        Redis's ``redis.sha1hex`` writes it, for ``sources_write.lua`` to compare."""
        text = salt + (self.raw or self.encode())
        return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def section(self) -> str:
        return KIND_SECTIONS.get(self.kind) or self.kind

    def file_table(self) -> dict[str, Any]:
        """The table as the sources file holds it: ``name`` first."""
        return {"name": self.name, **self.table}

    def build(self) -> Source:
        """The source, read by its kind's reader; ``ConfigError`` with ``check``'s lines."""
        problems: list[str] = []
        if self.kind not in KIND_SECTIONS:
            known = ", ".join(sorted(KIND_SECTIONS.names()))
            raise ConfigError("", [f"source '{self.name}': kind: {self.kind!r} (known: {known})"])
        built = read_sources(self.section, [self.file_table()], problems)
        if problems or not built:
            raise ConfigError("", problems or [f"source '{self.name}': cannot be read"])
        return built[0]


def _decoded(name: str, raw: Any) -> Definition | None:
    """``raw`` decoded, or None with one warning line: not JSON, or not a definition."""
    try:
        return Definition.decode(name, str(raw))
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("[sources] %r: unreadable definition in the registry (skipped)", name)
        return None


def encode_json(value: Any) -> str:
    """JSON as the registry stores it: sorted keys, no spaces, finite numbers only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_json(name: str, table: Mapping[str, Any]) -> list[str]:
    """Problems that would keep a table out of JSON (TOML dates, non-finite numbers)."""
    problems: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"source '{name}': {where}: {value!r} is not a finite number")
        elif not isinstance(value, str | int | float | bool):
            problems.append(
                f"source '{name}': {where}: {type(value).__name__} values are not supported"
            )

    walk(table, "")
    return problems


@dataclass(frozen=True)
class Meta:
    """The registry's revision, the newest revision trimmed from its change log, its epoch
    (empty: no registry yet) and its size."""

    rev: int
    floor: int
    epoch: str
    size: int


class SourceRegistry:
    """The registry as one process reads it (``Runtime.sources``)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self._memo: OrderedDict[str, tuple[str, Source]] = OrderedDict()
        self._view: SourceView | None = None

    @property
    def key(self) -> str:
        return keys.SOURCES.key(self.settings)

    # --- one source ----------------------------------------------------------------------

    def get(self, name: str) -> Source | None:
        """The source called ``name``, or None (absent, or no longer valid: logged)."""
        raw = self.client.hget(self.key, name)
        return self._built(name, raw) if raw is not None else None

    def get_many(self, names: Iterable[str]) -> dict[str, Source | None]:
        """Several sources in one round trip (a batch of polls)."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        raws = self.client.hmget(self.key, wanted)
        return {
            name: (self._built(name, raw) if raw is not None else None)
            for name, raw in zip(wanted, raws, strict=True)
        }

    def definition(self, name: str) -> Definition | None:
        """The stored definition of ``name``; None when absent or unreadable (logged)."""
        raw = self.client.hget(self.key, name)
        return _decoded(name, raw) if raw is not None else None

    def version(self, d: Definition) -> str:
        """``d``'s version tag (``Definition.version``), keyed by this registry's epoch."""
        return d.version(str(self.client.hget(keys.SOURCES_META.key(self.settings), "epoch") or ""))

    def definitions(self, names: Iterable[str]) -> dict[str, Definition | None]:
        """Several stored definitions in one round trip; an unreadable one is None, as if
        absent (logged), so one corrupt entry never stops a process that follows them all."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        raws = self.client.hmget(self.key, wanted)
        return {
            n: (_decoded(n, r) if r is not None else None)
            for n, r in zip(wanted, raws, strict=True)
        }

    def _built(self, name: str, raw: Any) -> Source | None:
        text = str(raw)
        memo = self._memo.get(name)
        if memo is not None and memo[0] == text:
            self._memo.move_to_end(name)
            return memo[1]
        try:
            source = Definition.decode(name, text).build()
        except (ConfigError, ValueError, KeyError, TypeError) as exc:
            why = "; ".join(exc.problems) if isinstance(exc, ConfigError) else repr(exc)
            log.warning("[sources] %r in the registry is not valid here: %s", name, why)
            return None
        self._memo[name] = (text, source)
        if len(self._memo) > MEMO:
            self._memo.popitem(last=False)
        return source

    # --- the whole registry --------------------------------------------------------------

    def meta(self) -> Meta:
        """One round trip: revision, log floor, epoch and size."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.SOURCES_META.key(self.settings), "rev", "floor", "epoch")
        pipe.hlen(self.key)
        (rev, floor, epoch), size = pipe.execute()
        return Meta(int(rev or 0), int(floor or 0), str(epoch or ""), int(size))

    def scan(self) -> Iterator[Definition]:
        """Every definition, ``SCAN`` definitions a round trip (never one long command)."""
        for name, raw in self.client.hscan_iter(self.key, count=SCAN):
            found = _decoded(str(name), raw)
            if found is not None:
                yield found

    def changed_since(self, rev: int) -> list[tuple[str, int]]:
        """Names changed after revision ``rev`` with the revision of their last change."""
        log_key = keys.SOURCES_LOG.key(self.settings)
        pairs: list[tuple[Any, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            log_key, f"({rev}", "+inf", withscores=True
        )
        return [(str(name), int(score)) for name, score in pairs]

    def names_of(self, owner: str) -> set[str]:
        return {str(n) for n in self.client.smembers(owner_key(self.settings, owner))}

    def owners(self) -> dict[str, int]:
        raw = self.client.hgetall(keys.SOURCES_OWNERS.key(self.settings))
        return {str(k): int(v) for k, v in raw.items()}

    def file_record(self, owner: str) -> dict[str, Any] | None:
        raw = self.client.hget(keys.SOURCES_FILES.key(self.settings), owner)
        try:
            return dict(json.loads(raw)) if raw else None
        except (ValueError, TypeError):
            return None

    def view(self) -> SourceView:
        """Every source, kept up to date by following the change log (built on first use)."""
        if self._view is None:
            self._view = SourceView(self)
        self._view.refresh()
        return self._view


@dataclass
class Update:
    """What changed since a tracker last looked: ``full`` (everything is in ``changed``:
    start afresh) or only ``changed``; a definition None means removed."""

    full: bool
    changed: dict[str, Definition | None] = field(default_factory=dict)
    rev: int = 0


class ChangeTracker:
    """Follows the registry from one process: ``poll()`` returns what changed since the last
    call — one ``HMGET`` when nothing did."""

    def __init__(self, registry: SourceRegistry) -> None:
        self.registry = registry
        self.rev = -1
        self.epoch: str | None = None

    def poll(self) -> Update:
        meta = self.registry.meta()
        if self.epoch != meta.epoch or meta.rev < self.rev or meta.floor > self.rev:
            return self._reload(meta)
        if meta.rev == self.rev:
            return Update(False, rev=self.rev)
        changed = self.registry.changed_since(self.rev)
        if not changed:  # the log was emptied under us: only a reload knows
            return self._reload(meta)
        definitions = self.registry.definitions(name for name, _ in changed)
        self.rev = max(meta.rev, *(rev for _, rev in changed))
        return Update(False, definitions, self.rev)

    def _reload(self, meta: Meta) -> Update:
        """The whole registry, read after its revision: anything written meanwhile has a later
        revision and is read again at the next poll."""
        everything: dict[str, Definition | None] = {d.name: d for d in self.registry.scan()}
        self.rev, self.epoch = meta.rev, meta.epoch
        return Update(True, everything, meta.rev)


class SourceView:
    """Every source of the registry, built, for a process that shows or schedules them all."""

    def __init__(self, registry: SourceRegistry) -> None:
        self.tracker = ChangeTracker(registry)
        self.definitions: dict[str, Definition] = {}
        self._sources: dict[str, Source] = {}
        self.invalid: dict[str, list[str]] = {}
        """Definitions this process cannot build (a kind not installed here, a stricter
        reader after an upgrade), with their problems."""

    def refresh(self) -> Update:
        update = self.tracker.poll()
        if update.full:
            self.definitions, self._sources, self.invalid = {}, {}, {}
        for name, definition in update.changed.items():
            self.definitions.pop(name, None)
            self._sources.pop(name, None)
            self.invalid.pop(name, None)
            if definition is None:
                continue
            self.definitions[name] = definition
            try:
                self._sources[name] = definition.build()
            except ConfigError as exc:
                self.invalid[name] = exc.problems
            except (ValueError, KeyError, TypeError) as exc:  # a table no reader expects
                self.invalid[name] = [f"source '{name}': cannot be read: {exc!r}"]
        return update

    @property
    def rev(self) -> int:
        return self.tracker.rev

    def sources(self) -> list[Source]:
        """Every source, by name."""
        return [self._sources[name] for name in sorted(self._sources)]

    def get(self, name: str) -> Source | None:
        return self._sources.get(name)

    def of_kind(self, kind: str) -> list[Source]:
        return [s for s in self.sources() if s.kind == kind]

    def __len__(self) -> int:
        return len(self._sources)
