"""The sources file: which sources to poll, the TCP listener, and the sections stages declare.

TOML (stdlib ``tomllib``), found as: ``--config``, else ``WATCHKEEPER_CONFIG``, else
``./watchkeeper.toml`` (``own_config``; ``check`` falls back to the bundled example). The
file's sources are applied to the source registry in Redis (``workers.core.source_registry``),
where every process reads them. Validation collects *every* problem as
``source '<name>': <field>: <problem>`` so a user fixes a file in one pass; an invalid file
raises ``ConfigError`` and never starts workers.

This module knows what every polled source has (a unique name, an http(s) URL, an interval,
the bounds within which the source's own word may move its next check, and its request
profile — ``read_common``, for every kind) and the ``[tcp]`` table. Everything else is
declared by the stages: a source kind declares its ``[[section]]`` and how to read one table
(``declare_source_section``, done for it by ``workers.polling.kinds.declare_kind``), other
stages declare further top-level sections (``declare_section``). A section nobody declared is
an error naming the known ones.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from workers.core.redact import redact_url
from workers.core.registry import Registry
from workers.core.request_profile import EMPTY_PROFILE, ProfileReader, RequestProfile

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INTERVAL_RE = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)
MIN_INTERVAL = 1.0


class ConfigError(Exception):
    """The sources file is missing, unreadable or invalid; ``problems`` lists every error."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Source:
    """What every polled source has; each kind's stage subclasses it with its own fields."""

    name: str
    url: str
    interval: float
    interval_min: float | None = None
    """Shortest wait the source's own word (Cache-Control, Expires, ttl) may set; None: the
    interval (the source can only slow polling down)."""
    interval_max: float | None = None
    """Longest wait it may set; None: the interval times WATCHKEEPER_INTERVAL_MAX_FACTOR."""
    honour_cache: bool = True
    """False: the source's word is ignored, every poll is one interval after the last."""
    request: RequestProfile = EMPTY_PROFILE
    """Headers, cookies, credentials, proxy and TLS settings of its requests."""

    kind: ClassVar[str] = "source"

    @property
    def host(self) -> str:
        """``host[:port]`` of the URL — without any user info, so never a credential."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class TcpConfig:
    host: str = "127.0.0.1"
    port: int = 5140


@dataclass(frozen=True)
class SourcesConfig:
    """A validated sources file."""

    path: str
    sources: tuple[Source, ...] = ()
    tcp: TcpConfig | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Each source's table as written (its ``[[section]]`` and its keys): what the source
    registry stores (``workers.core.source_registry``)."""

    def get(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def of_kind(self, kind: str) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.kind == kind)


class FieldReader:
    """Reads one table of the sources file, recording problems instead of raising."""

    def __init__(
        self, table: dict[str, Any], label: str, problems: list[str], what: str = "source"
    ) -> None:
        self.table, self.label, self.problems, self.what = table, label, problems, what
        self.used: set[str] = set()

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{self.what} '{self.label}': {name}: {text}")

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                self.problem(name, "missing")
            return default
        value = self.table[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            wanted = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            self.problem(name, f"expected {wanted}, got {_shown(value)}")
            return default
        return value

    def url(self) -> str:
        url = self.get("url", str, "", required=True)
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.netloc):
            self.problem("url", f"{redact_url(url)!r} is not an http(s) URL")
        return str(url)

    def interval(self, default: str = "5m") -> float:
        value = self.get("interval", (int, float, str), default)
        try:
            return parse_interval(value)
        except ValueError as exc:
            self.problem("interval", str(exc))
            return 300.0

    def duration(self, name: str) -> float | None:
        """An optional duration field (seconds, or "30s", "5m", "1h")."""
        value = self.get(name, (int, float, str), None)
        if value is None:
            return None
        try:
            return parse_interval(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None

    def finish(self) -> None:
        for key in self.table:
            if key not in self.used:
                self.problem(key, "unknown key")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


SourceReader = Callable[[FieldReader, str], Source]
SectionReader = Callable[[Any, list[str]], Any]

SOURCE_SECTIONS: Registry[SourceReader] = Registry("sources-file section")
OTHER_SECTIONS: Registry[SectionReader] = Registry("sources-file section")
KIND_SECTIONS: Registry[str] = Registry("source kind")
"""Each source kind's ``[[section]]`` ("feed" → "feeds"): the registry stores a source's kind."""


def declare_source_section(section: str, read: SourceReader, kind: str = "") -> None:
    """``[[section]]`` tables are sources of one kind (``kind``), each read with ``read``."""
    SOURCE_SECTIONS.add(section, read)
    if kind:
        KIND_SECTIONS.add(kind, section)


def declare_section(section: str, read: SectionReader) -> None:
    """A top-level section of another kind: ``read(value, problems)`` returns what
    ``SourcesConfig.sections[section]`` holds (recording problems, never raising)."""
    OTHER_SECTIONS.add(section, read)


def parse_interval(value: Any) -> float:
    """Seconds from a number or a string like ``"90"``, ``"30s"``, ``"5m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and (m := INTERVAL_RE.match(value)):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    else:
        raise ValueError(f"{value!r} is not a duration (seconds, or e.g. '30s', '5m', '1h')")
    if seconds < MIN_INTERVAL:
        raise ValueError(f"{value!r} is shorter than {MIN_INTERVAL:g}s")
    return seconds


def bundled_example() -> Path:
    return Path(str(resources.files("workers") / "data" / "watchkeeper.example.toml"))


def no_sources_file() -> str:
    """The one line for a beat, run or apply pointed at the bundled example: its sample
    sources must never reach a shared registry."""
    return (
        f"the bundled example ({bundled_example()}) is never applied to the source registry "
        "(`watchkeeper run --demo` runs its own copy): copy it to ./watchkeeper.toml and edit it"
    )


def is_bundled(path: Path) -> bool:
    return path.resolve() == bundled_example().resolve()


def find_config(explicit: str | None, env_config: str = "") -> Path:
    """The sources file to use, in the documented order of precedence."""
    return own_config(explicit, env_config) or bundled_example()


def own_config(explicit: str | None, env_config: str = "") -> Path | None:
    """This machine's sources file: ``--config``, else ``WATCHKEEPER_CONFIG``, else
    ``./watchkeeper.toml``; None when there is none (workers and beat then serve the source
    registry alone — never the bundled example)."""
    for candidate in (explicit, env_config):
        if candidate:
            return Path(candidate)
    local = Path("watchkeeper.toml")
    return local if local.exists() else None


def no_file_config() -> SourcesConfig:
    """What a process without a sources file has: no file sources, no ``[tcp]``, every
    declared section empty."""
    return validate_config({}, "")


def load_config(path: str | Path) -> SourcesConfig:
    """Read and validate a sources file; raise ``ConfigError`` listing every problem."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), [f"config {p}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"config {p}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [f"config {p}: invalid TOML: {exc}"]) from None
    return validate_config(raw, str(p))


def validate_config(raw: dict[str, Any], path: str = "<memory>") -> SourcesConfig:
    problems: list[str] = []
    known = ["tcp", *SOURCE_SECTIONS.names(), *OTHER_SECTIONS.names()]
    for key in raw:
        if key not in known:
            problems.append(
                f"config {path}: {key}: unknown section (expected {', '.join(sorted(known))})"
            )
    sources: list[Source] = []
    tables: dict[str, tuple[str, dict[str, Any]]] = {}
    for section in sorted(SOURCE_SECTIONS.names()):
        sources += _sources(raw, section, SOURCE_SECTIONS[section], problems, tables)
    tcp = _tcp(raw["tcp"], problems) if "tcp" in raw else None
    sections = {
        name: OTHER_SECTIONS[name](raw.get(name), problems) for name in OTHER_SECTIONS.names()
    }
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            problems.append(f"source '{source.name}': name: duplicate name")
        seen.add(source.name)
    if problems:
        raise ConfigError(path, problems)
    return SourcesConfig(path, tuple(sources), tcp, sections, tables)


def read_sources(section: str, tables: list[dict[str, Any]], problems: list[str]) -> list[Source]:
    """Sources of one ``[[section]]`` from tables as the file would hold them (``name``
    included), read exactly as ``check`` reads a file: what fails adds its problems."""
    reader = SOURCE_SECTIONS.get(section)
    if reader is None:
        known = ", ".join(sorted(SOURCE_SECTIONS.names()))
        problems.append(f"config: {section}: unknown section (expected {known})")
        return []
    return _sources({section: tables}, section, reader, problems)


def _sources(
    raw: dict[str, Any],
    section: str,
    read: SourceReader,
    problems: list[str],
    kept: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> list[Source]:
    tables = raw.get(section, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"config: {section}: must be an array of tables ([[{section}]])")
        return []
    built = []
    for index, table in enumerate(tables, 1):
        name = table.get("name")
        label = name if isinstance(name, str) and name else f"{section}[{index}]"
        f = FieldReader(table, label, problems)
        name = f.get("name", str, "", required=True)
        if name and not NAME_RE.match(name):
            f.problem("name", f"{name!r} must be 1-64 of letters, digits, '_', '.', '-'")
        before = len(problems)
        source = read_common(f, read(f, name))
        f.finish()
        if len(problems) == before:
            built.append(source)
            if kept is not None:
                kept[name] = (section, table)
    return built


def read_common(f: FieldReader, source: Source) -> Source:
    """The fields every kind has beyond name, URL and interval: the clamps of its next check
    (``interval_min`` <= ``interval`` <= ``interval_max``), ``honour_cache`` and the request
    profile (``headers``, ``cookies``, ``user_agent``, ``auth``, ``proxy``, ``verify``,
    ``ca_bundle``)."""
    low, high = f.duration("interval_min"), f.duration("interval_max")
    if low is not None and low > source.interval:
        f.problem("interval_min", f"{low:g}s is longer than the interval ({source.interval:g}s)")
    if high is not None and high < source.interval:
        f.problem("interval_max", f"{high:g}s is shorter than the interval ({source.interval:g}s)")
    return replace(
        source,
        interval_min=low,
        interval_max=high,
        honour_cache=f.get("honour_cache", bool, True),
        request=ProfileReader(f).read(),
    )


def _tcp(table: Any, problems: list[str]) -> TcpConfig | None:
    if not isinstance(table, dict):
        problems.append("source 'tcp': tcp: must be a table ([tcp])")
        return None
    f = FieldReader(table, "tcp", problems)
    host = f.get("host", str, "127.0.0.1")
    port = f.get("port", int, 5140)
    if not 0 <= port <= 65535:
        f.problem("port", f"{port} is not a TCP port (0-65535)")
    f.finish()
    return TcpConfig(host=host, port=port)
