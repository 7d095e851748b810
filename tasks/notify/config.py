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
secrets live in the environment (``env:NAME``), and a URL written in the file that Apprise
considers secret-bearing is itself a problem. Regexes are RE2 (linear time), so no pattern can
hang a worker; one RE2 does not support (look-around, back-references) is a ``check`` error.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.notify.filters import compile_pattern
from tasks.notify.send import describe, url_problem
from tasks.notify.templates import Template, default_template
from workers.core.settings import STREAM_CAPS
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


@dataclass(frozen=True)
class Destination:
    """One Apprise URL of a sink, as written (``env:NAME`` or a secret-free URL).

    ``id`` is stable while the text is unchanged (so reordering ``urls`` keeps each
    destination's queue); ``label`` is what logs and status show — never the secret."""

    id: str
    raw: str
    label: str

    def url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to send to, read from the environment now for ``env:NAME``."""
        if not self.raw.startswith(ENV_PREFIX):
            return self.raw
        env = os.environ if environ is None else environ
        return env.get(self.raw[len(ENV_PREFIX) :], "")


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
    destinations = tuple(_destination(f, i, raw, environ) for i, raw in enumerate(urls))
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


def _destination(
    f: FieldReader, index: int, raw: str, environ: Mapping[str, str] | None
) -> Destination:
    where = f"urls[{index}]"
    dest_id = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:10]
    if raw.startswith(ENV_PREFIX):
        var = raw[len(ENV_PREFIX) :]
        if not ENV_NAME_RE.match(var):
            f.problem(where, f"{raw!r}: not an environment variable name")
            return Destination(dest_id, raw, raw)
        url = (os.environ if environ is None else environ).get(var, "")
        if not url:
            f.problem(where, f"environment variable {var} is not set")
            return Destination(dest_id, raw, raw)
        problem = url_problem(url, secret_allowed=True)
        if problem:
            f.problem(where, f"{raw}: {problem}")
        return Destination(dest_id, raw, f"{raw} ({describe(url, secret_allowed=True)})")
    problem = url_problem(raw, secret_allowed=False)
    if problem:
        f.problem(where, problem)
    return Destination(dest_id, raw, describe(raw, secret_allowed=False))


declare_section("notify", read_sinks)
declare_section("notify_filters", read_filters)
