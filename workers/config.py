"""The sources file: which feeds, log endpoints, sites and TCP listener to run.

TOML (stdlib ``tomllib``), found as: ``--config``, else ``WATCHKEEPER_CONFIG``, else
``./watchkeeper.toml``, else the bundled example. Validation collects *every* problem as
``source '<name>': <field>: <problem>`` so a user fixes a file in one pass; an invalid file
raises ``ConfigError`` and never starts workers.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import soupsieve

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INTERVAL_RE = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")
LOG_FORMATS = ("json", "ndjson", "lines")
MIN_INTERVAL = 1.0


class ConfigError(Exception):
    """The sources file is missing, unreadable or invalid; ``problems`` lists every error."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Source:
    """What every polled source has: a unique name, a URL and an interval in seconds."""

    name: str
    url: str
    interval: float

    kind = "source"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.lower()


@dataclass(frozen=True)
class FeedSource(Source):
    locate: bool = True
    sanitize_html: bool = False
    resolve_relative_uris: bool = False

    kind = "feed"


@dataclass(frozen=True)
class HttpLogSource(Source):
    format: str = "ndjson"
    key: str | None = None

    kind = "http_log"


@dataclass(frozen=True)
class SiteSource(Source):
    item: str = ""
    id: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    next_page: str | None = None
    max_pages: int = 1
    price: str | None = None
    robots: bool = True

    kind = "site"


@dataclass(frozen=True)
class TcpConfig:
    host: str = "127.0.0.1"
    port: int = 5140


@dataclass(frozen=True)
class SourcesConfig:
    """A validated sources file."""

    path: str
    feeds: tuple[FeedSource, ...] = ()
    http_logs: tuple[HttpLogSource, ...] = ()
    sites: tuple[SiteSource, ...] = ()
    tcp: TcpConfig | None = None

    @property
    def sources(self) -> tuple[Source, ...]:
        return (*self.feeds, *self.http_logs, *self.sites)

    def get(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)


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


def find_config(explicit: str | None, env_config: str = "") -> Path:
    """The sources file to use, in the documented order of precedence."""
    for candidate in (explicit, env_config):
        if candidate:
            return Path(candidate)
    local = Path("watchkeeper.toml")
    return local if local.exists() else bundled_example()


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
    for key in raw:
        if key not in ("feeds", "http_logs", "sites", "tcp"):
            problems.append(f"config {path}: {key}: unknown section "
                            "(expected feeds, http_logs, sites, tcp)")
    feeds = _sources(raw, "feeds", _feed, problems)
    logs = _sources(raw, "http_logs", _http_log, problems)
    sites = _sources(raw, "sites", _site, problems)
    tcp = _tcp(raw["tcp"], problems) if "tcp" in raw else None
    seen: set[str] = set()
    for source in (*feeds, *logs, *sites):
        if source.name in seen:
            problems.append(f"source '{source.name}': name: duplicate name")
        seen.add(source.name)
    if problems:
        raise ConfigError(path, problems)
    return SourcesConfig(path, tuple(feeds), tuple(logs), tuple(sites), tcp)


class _Fields:
    """Reads one source table, recording problems instead of raising."""

    def __init__(self, table: dict[str, Any], label: str, problems: list[str]) -> None:
        self.table, self.label, self.problems = table, label, problems
        self.used: set[str] = set()

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"source '{self.label}': {name}: {text}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                self.problem(name, "missing")
            return default
        value = self.table[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            wanted = kind.__name__ if isinstance(kind, type) else " or ".join(
                k.__name__ for k in kind)
            self.problem(name, f"expected {wanted}, got {value!r}")
            return default
        return value

    def url(self) -> str:
        url = self.get("url", str, "", required=True)
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.netloc):
            self.problem("url", f"{url!r} is not an http(s) URL")
        return str(url)

    def interval(self, default: str = "5m") -> float:
        value = self.get("interval", (int, float, str), default)
        try:
            return parse_interval(value)
        except ValueError as exc:
            self.problem("interval", str(exc))
            return 300.0

    def selector(self, name: str, value: str) -> None:
        css = value.split("@", 1)[0].strip()
        try:
            soupsieve.compile(css)
        except Exception as exc:  # soupsieve raises SelectorSyntaxError and ValueError
            self.problem(name, f"bad CSS selector {css!r}: {str(exc).splitlines()[0]}")

    def finish(self) -> None:
        for key in self.table:
            if key not in self.used:
                self.problem(key, "unknown key")


def _sources(raw: dict[str, Any], section: str, build: Callable[[_Fields, str], Any],
             problems: list[str]) -> list[Any]:
    tables = raw.get(section, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"config: {section}: must be an array of tables ([[{section}]])")
        return []
    built = []
    for index, table in enumerate(tables, 1):
        name = table.get("name")
        label = name if isinstance(name, str) and name else f"{section}[{index}]"
        f = _Fields(table, label, problems)
        name = f.get("name", str, "", required=True)
        if name and not NAME_RE.match(name):
            f.problem("name", f"{name!r} must be 1-64 of letters, digits, '_', '.', '-'")
        before = len(problems)
        source = build(f, name)
        f.finish()
        if len(problems) == before:
            built.append(source)
    return built


def _feed(f: _Fields, name: str) -> FeedSource:
    return FeedSource(
        name=name, url=f.url(), interval=f.interval(),
        locate=f.get("locate", bool, True),
        sanitize_html=f.get("sanitize_html", bool, False),
        resolve_relative_uris=f.get("resolve_relative_uris", bool, False))


def _http_log(f: _Fields, name: str) -> HttpLogSource:
    fmt = f.get("format", str, "ndjson")
    if fmt not in LOG_FORMATS:
        f.problem("format", f"{fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    key = f.get("key", str, None)
    if key is not None and not key:
        f.problem("key", "must not be empty")
    return HttpLogSource(name=name, url=f.url(), interval=f.interval(), format=fmt, key=key)


def _site(f: _Fields, name: str) -> SiteSource:
    item = f.get("item", str, "", required=True)
    if item:
        f.selector("item", item)
    fields_table = f.get("fields", dict, {}, required=True)
    site_fields: dict[str, str] = {}
    for fname, css in fields_table.items():
        if not isinstance(css, str) or not css.strip():
            f.problem(f"fields.{fname}", "expected a CSS selector string ('css' or 'css@attr')")
            continue
        f.selector(f"fields.{fname}", css)
        site_fields[fname] = css
    if "fields" in f.table and not fields_table:
        f.problem("fields", "needs at least one field")
    id_field = f.get("id", str, "", required=True)
    if id_field and site_fields and id_field not in site_fields:
        f.problem("id", f"{id_field!r} is not one of the fields ({', '.join(site_fields)})")
    next_page = f.get("next_page", str, None)
    if next_page is not None:
        f.selector("next_page", next_page)
    max_pages = f.get("max_pages", int, 1)
    if max_pages < 1:
        f.problem("max_pages", f"{max_pages} must be at least 1")
    price = f.get("price", str, None)
    if price is not None and site_fields and price not in site_fields:
        f.problem("price", f"{price!r} is not one of the fields ({', '.join(site_fields)})")
    return SiteSource(
        name=name, url=f.url(), interval=f.interval(), item=item, id=id_field,
        fields=site_fields, next_page=next_page, max_pages=max_pages, price=price,
        robots=f.get("robots", bool, True))


def _tcp(table: Any, problems: list[str]) -> TcpConfig | None:
    if not isinstance(table, dict):
        problems.append("source 'tcp': tcp: must be a table ([tcp])")
        return None
    f = _Fields(table, "tcp", problems)
    host = f.get("host", str, "127.0.0.1")
    port = f.get("port", int, 5140)
    if not 0 <= port <= 65535:
        f.problem("port", f"{port} is not a TCP port (0-65535)")
    f.finish()
    return TcpConfig(host=host, port=port)
