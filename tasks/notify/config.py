"""``[[notify]]`` sinks and ``[notify_filters]`` in the sources file, validated into frozen values.

A sink names its destinations (Apprise URLs), the streams it takes and what it lets through::

    [[notify]]
    name = "ops"
    urls = ["env:WATCHKEEPER_NOTIFY_OPS"]   # Apprise URLs; a secret only through the environment
    streams = ["alerts", "changes"]          # default: every stream
    sources = ["world"]                      # optional: only these sources (or sites)
    tags = ["news"]                          # optional: only sources carrying one of these tags
    include = ["(?i)earthquake|flood"]       # optional: at least one must match
    exclude = ["(?i)test"]                   # optional: none may match
    digest = "15m"                           # optional: one message per period
    [notify.templates.alerts]                # optional, per stream or "default"
    title = "{title}"
    body = "{summary}\\n{link}"

    [notify_filters]                         # optional: applied to every sink first
    exclude = ["(?i)advert"]

Every problem is one line, ``sink '<name>': <field>: <problem>``, and a URL is never printed:
secrets live in the environment (``env:NAME``), and a URL written in the file that holds a
secret — a password or token Apprise masks, or a header, payload field or query parameter
named like one (``?+Authorization=Bearer …``, ``?-apikey=…``) — is itself a problem. Regexes are
RE2 (linear time), so no pattern can hang a worker; one RE2 does not support (look-around,
back-references) is a ``check`` error.

Destinations. One ``env:NAME`` may hold several URLs, separated by whitespace and/or commas as
Apprise writes URL lists: each is a destination of its own. A destination's ``id`` (its queue in
Redis) is stable: a URL written in the file is identified by its text, a variable holding one URL
by the variable's name (so a secret can be rotated without losing what it owes), and a variable
holding several by the variable's name and each URL's public form (Apprise's privacy URL) — the
id is a hash, and the secret parts of a URL never enter it. Its ``label`` (logs, status,
metrics, the dashboard) is the service and host, never a path, query or user.

Only the process that sends needs the secrets. Where a variable is not set (``status``,
``web``, the poll workers on another machine), the file still loads: the variable is one
destination labelled ``env:NAME (secret not set here)``; ``unset_variables`` lists them for
``check`` (a warning; an error with ``check --strict``), and the delivery worker logs each one.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.notify.filters import compile_pattern
from tasks.notify.send import plugin_for, service_host, split_urls, url_problem
from tasks.notify.templates import Template, default_template
from workers.core.settings import STREAM_CAPS
from workers.core.source_env import declare_secret_variables
from workers.core.sources_file import (
    NAME_RE,
    FieldReader,
    SourcesConfig,
    declare_section,
    parse_interval,
)

STREAMS = tuple(STREAM_CAPS)
"""Every stream a sink can take (the default)."""
ENV_PREFIX = "env:"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TEMPLATE_KEYS = ("title", "body")


UNSET = "secret not set here"


@dataclass(frozen=True)
class Destination:
    """One Apprise URL of a sink: written in the file, or one of those an ``env:NAME`` holds.

    ``id`` is stable while the URL is unchanged (so reordering ``urls`` keeps each
    destination's queue); ``label`` is what logs and status show — never the secret. ``unset``:
    the variable is not set in this process (``raw`` stands for whatever it would hold)."""

    id: str
    raw: str
    label: str
    unset: bool = False
    _url: str = field(default="", repr=False, compare=False)

    def url(self) -> str:
        """The URL to send to ("" where its variable is not set)."""
        if not self.raw.startswith(ENV_PREFIX):
            return self.raw
        return self._url

    @property
    def variable(self) -> str:
        return self.raw[len(ENV_PREFIX) :] if self.raw.startswith(ENV_PREFIX) else ""


@dataclass(frozen=True)
class Filters:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sink:
    name: str
    destinations: tuple[Destination, ...]
    streams: tuple[str, ...] = STREAMS
    sources: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    filters: Filters = Filters()
    digest: float | None = None
    templates: tuple[tuple[str, Template], ...] = ()
    urls: tuple[str, ...] = ()
    """The ``urls`` as written (``env:NAME`` or a URL), in the file's order."""

    def template(self, stream: str) -> Template | None:
        """The sink's template for a stream (or its ``default``); None: the built-in one."""
        found = dict(self.templates)
        return found.get(stream) or found.get("default")

    def destination(self, dest_id: str) -> Destination | None:
        return next((d for d in self.destinations if d.id == dest_id), None)


@dataclass(frozen=True)
class NotifyConfig:
    sinks: tuple[Sink, ...] = ()
    filters: Filters = field(default_factory=Filters)

    def sink(self, name: str) -> Sink | None:
        return next((s for s in self.sinks if s.name == name), None)

    def taking(self, stream: str) -> tuple[Sink, ...]:
        return tuple(s for s in self.sinks if stream in s.streams)


def notify_config(config: SourcesConfig) -> NotifyConfig:
    """The sinks and global filters of a validated sources file."""
    return NotifyConfig(
        tuple(config.sections.get("notify") or ()),
        config.sections.get("notify_filters") or Filters(),
    )


# --- reading ---------------------------------------------------------------------------------


def read_sinks(
    raw: Any, problems: list[str], environ: Mapping[str, str] | None = None
) -> tuple[Sink, ...]:
    """Every ``[[notify]]`` table as a ``Sink``; problems recorded, never raised."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append("config: notify: must be an array of tables ([[notify]])")
        return ()
    sinks: list[Sink] = []
    names: set[str] = set()
    for index, table in enumerate(raw, 1):
        name = table.get("name")
        label = name if isinstance(name, str) and name else f"notify[{index}]"
        before = len(problems)
        sink = _read_sink(FieldReader(table, label, problems, what="sink"), environ)
        if sink.name in names:
            problems.append(f"sink '{sink.name}': name: duplicate name")
        names.add(sink.name)
        if len(problems) == before:
            sinks.append(sink)
    return tuple(sinks)


def _read_sink(f: FieldReader, environ: Mapping[str, str] | None) -> Sink:
    name = f.get("name", str, "", required=True)
    if name and not NAME_RE.match(name):
        f.problem("name", f"{name!r} must be 1-64 of letters, digits, '_', '.', '-'")
    urls = _strings(f, "urls", required=True)
    if "urls" in f.table and not urls:
        f.problem("urls", "needs at least one Apprise URL")
    destinations = unique_labels(
        [d for i, raw in enumerate(urls) for d in _destinations(f, i, raw, environ)]
    )
    if len({d.id for d in destinations}) != len(destinations):
        f.problem("urls", "the same URL is listed twice")
    streams = _strings(f, "streams") or list(STREAMS)
    for stream in streams:
        if stream not in STREAMS:
            f.problem("streams", f"{stream!r} is not a stream ({', '.join(STREAMS)})")
    digest = None
    if "digest" in f.table:
        try:
            digest = parse_interval(f.get("digest", (int, float, str)))
        except ValueError as exc:
            f.problem("digest", str(exc))
    sink = Sink(
        name=name,
        destinations=destinations,
        streams=tuple(dict.fromkeys(streams)),
        sources=tuple(_strings(f, "sources")),
        tags=tuple(_strings(f, "tags")),
        filters=_filters(f),
        digest=digest,
        templates=_templates(f),
        urls=tuple(urls),
    )
    f.finish()
    return sink


def read_filters(raw: Any, problems: list[str]) -> Filters:
    """``[notify_filters]``: include/exclude applied to every sink before its own."""
    if raw is None:
        return Filters()
    if not isinstance(raw, dict):
        problems.append("config: notify_filters: must be a table ([notify_filters])")
        return Filters()
    f = FieldReader(raw, "notify_filters", problems, what="sink")
    filters = _filters(f)
    f.finish()
    return filters


def _strings(f: FieldReader, name: str, required: bool = False) -> list[str]:
    values = f.get(name, list, [], required=required)
    good = [v for v in values if isinstance(v, str) and v.strip()]
    if len(good) != len(values):
        f.problem(name, "expected a list of non-empty strings")
    return good


def _filters(f: FieldReader) -> Filters:
    include, exclude = _strings(f, "include"), _strings(f, "exclude")
    for name, patterns in (("include", include), ("exclude", exclude)):
        for i, pattern in enumerate(patterns):
            problem = regex_problem(pattern)
            if problem:
                f.problem(f"{name}[{i}]", f"bad regex {pattern!r}: {problem}")
    return Filters(tuple(include), tuple(exclude))


def regex_problem(pattern: str) -> str | None:
    """Why RE2 rejects ``pattern`` (None when it compiles)."""
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        return str(exc)
    return None


def _templates(f: FieldReader) -> tuple[tuple[str, Template], ...]:
    table = f.get("templates", dict, {})
    out: list[tuple[str, Template]] = []
    for stream, spec in table.items():
        where = f"templates.{stream}"
        if stream not in (*STREAMS, "default"):
            f.problem(where, f"not a stream or 'default' ({', '.join(STREAMS)})")
            continue
        if not isinstance(spec, dict):
            f.problem(where, "must be a table with title and/or body")
            continue
        for key in spec:
            if key not in TEMPLATE_KEYS:
                f.problem(f"{where}.{key}", "unknown key")
        parts: dict[str, str] = {}
        for key in TEMPLATE_KEYS:
            value = spec.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                f.problem(f"{where}.{key}", "expected a string")
                continue
            problem = template_problem(value)
            if problem:
                f.problem(f"{where}.{key}", problem)
            parts[key] = value
        base = default_template(stream)
        out.append((stream, Template(parts.get("title", base.title), parts.get("body", base.body))))
    return tuple(out)


def template_problem(text: str) -> str | None:
    """Why a template cannot be used (unbalanced braces, positional fields), or None."""
    try:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is not None and (name == "" or name.isdigit()):
                return "fields are named, as {title} or {fields.price}"
    except ValueError as exc:
        return f"bad template: {exc}"
    return None


def _destinations(
    f: FieldReader, index: int, raw: str, environ: Mapping[str, str] | None
) -> list[Destination]:
    where = f"urls[{index}]"
    base_id = _hash(raw)
    if not raw.startswith(ENV_PREFIX):
        problem = url_problem(raw, secret_allowed=False)
        if problem:
            f.problem(where, problem)
            return [Destination(base_id, raw, raw.split("://", 1)[0])]
        return [Destination(base_id, raw, _label(raw))]
    var = raw[len(ENV_PREFIX) :]
    if not ENV_NAME_RE.match(var):
        f.problem(where, f"{raw!r}: not an environment variable name")
        return [Destination(base_id, raw, raw)]
    urls = split_urls((os.environ if environ is None else environ).get(var, ""))
    if not urls:  # only the process that sends needs it: see unset_variables
        return [Destination(base_id, raw, f"{raw} ({UNSET})", unset=True)]
    out: list[Destination] = []
    seen: dict[str, int] = {}
    for n, url in enumerate(urls, 1):
        problem = url_problem(url, secret_allowed=True)
        if problem:
            which = f"URL {n} of {len(urls)}: " if len(urls) > 1 else ""
            f.problem(where, f"{raw}: {which}{problem}")
            continue
        if len(urls) == 1:
            out.append(Destination(base_id, raw, f"{raw} ({_label(url)})", _url=url))
            continue
        public = str(plugin_for(url).url(privacy=True))
        seen[public] = seen.get(public, 0) + 1
        dest_id = _hash(f"{raw}\n{public}\n{seen[public]}")
        out.append(Destination(dest_id, raw, f"{raw}[{n}] ({_label(url)})", _url=url))
    return out


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def _label(url: str) -> str:
    plugin = plugin_for(url)
    return service_host(plugin, url) if plugin is not None else url.split("://", 1)[0]


def unique_labels(destinations: list[Destination]) -> tuple[Destination, ...]:
    """Labels made unique within a sink (two hooks on one host: ``JSON h``, ``JSON h #2``), as
    status and metrics key destinations by label."""
    counts: dict[str, int] = {}
    out = []
    for d in destinations:
        counts[d.label] = counts.get(d.label, 0) + 1
        n = counts[d.label]
        out.append(d if n == 1 else replace(d, label=f"{d.label} #{n}"))
    return tuple(out)


def unset_variables(config: SourcesConfig) -> list[str]:
    """One line per destination whose variable is not set in this process."""
    lines = []
    for sink in notify_config(config).sinks:
        for d in sink.destinations:
            if d.unset:
                lines.append(
                    f"sink '{sink.name}': urls[{sink.urls.index(d.raw)}]: environment variable "
                    f"{d.variable} is not set here (only the process that sends needs it)"
                )
    return lines


def sink_variables(config: SourcesConfig) -> list[str]:
    """Every variable a sink's ``env:`` URL names: no source may read one (``source_env``)."""
    return [
        raw[len(ENV_PREFIX) :]
        for sink in notify_config(config).sinks
        for raw in sink.urls
        if raw.startswith(ENV_PREFIX)
    ]


declare_section("notify", read_sinks)
declare_section("notify_filters", read_filters)
declare_secret_variables("notify", sink_variables)
