"""Each source kind's fields as data: name, type, required, default, description, constraints.

The readers (``workers.core.sources_file`` and each kind's ``read``) stay the validators: they
word every problem as ``check`` does, and the CLI, the file, OPML and the API all go through
them. What they accept is also declared here, once per field, so that the REST API can publish
it (``/api/v1/openapi.json``: a JSON Schema per kind) and the dashboard can build a form per
kind. ``check_readers`` proves the two agree: it runs each kind's reader on a probing table and
compares the fields it reads — names, types, required, defaults — with the declarations (a unit
test calls it for every kind, so a field added to a reader and not declared, or declared and no
longer read, fails the suite naming the field).

A kind declares the fields of its own (``SourceKind.fields``); every kind has ``COMMON``:
name, URL, interval, the clamps of its next check and the request profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.core.request_profile import ENV_NAME_RE, PROXY_SCHEMES
from workers.core.sources_file import (
    INTERVAL_RE,
    NAME_RE,
    FieldReader,
    Source,
    read_common,
)

TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "duration": (int, float, str),
    "strings": list,
    "table": dict,
}
"""Each declared type and what the readers ask ``FieldReader.get`` for."""

DURATION_PATTERN = INTERVAL_RE.pattern
ENV_PATTERN = "^env:" + ENV_NAME_RE.pattern.lstrip("^")
"""``env:NAME``: what a secret is written as."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of a source's table.

    ``type``: one of ``TYPES`` ("duration": seconds, or text like "30s", "5m", "1h30m";
    "strings": a list of non-empty strings; "table": a table of strings). ``default``: what the
    reader uses when the field is absent (None: nothing). ``constraints``: JSON Schema keywords
    (``enum``, ``pattern``, ``minimum``, ``maxLength``, ``format``) the reader also enforces.
    ``group``: "request" for the request profile, whose values are never shown (names only).
    ``example``: a valid value (the OpenAPI document and the tests use it)."""

    name: str
    type: str
    description: str
    required: bool = False
    default: Any = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    group: str = ""
    example: Any = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"field {self.name!r}: type {self.type!r} is not one of {list(TYPES)}")

    def json_schema(self) -> dict[str, Any]:
        """This field as JSON Schema (2020-12, as OpenAPI 3.1 uses it)."""
        base: dict[str, Any]
        if self.type == "duration":
            base = {
                "anyOf": [
                    {"type": "number", "minimum": 1},
                    {"type": "string", "pattern": DURATION_PATTERN},
                ]
            }
        elif self.type == "strings":
            base = {"type": "array", "items": {"type": "string", "minLength": 1}}
        elif self.type == "table":
            base = {"type": "object", "additionalProperties": {"type": "string"}}
        else:
            base = {"type": self.type}
        base.update(self.constraints)
        base["description"] = self.description
        if self.default is not None:
            base["default"] = self.default
        if self.example is not None:
            base["examples"] = [self.example]
        return base


URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"

COMMON: tuple[FieldSpec, ...] = (
    FieldSpec(
        "name",
        "string",
        "Unique name of the source: 1-64 of letters, digits, '_', '.', '-'.",
        required=True,
        constraints={"pattern": NAME_RE.pattern, "maxLength": 64},
        example="world",
    ),
    FieldSpec(
        "url",
        "string",
        "The http(s) URL polled.",
        required=True,
        constraints={"pattern": URL_PATTERN, "format": "uri"},
        example="https://example.org/world.rss",
    ),
    FieldSpec(
        "interval",
        "duration",
        'Seconds between checks, or "30s", "5m", "1h30m" (at least 1 s).',
        default="5m",
        example="5m",
    ),
    FieldSpec(
        "interval_min",
        "duration",
        "Shortest wait the source's own word (Cache-Control, Expires, ttl) may set; "
        "default: the interval. Not longer than the interval.",
        example="5m",
    ),
    FieldSpec(
        "interval_max",
        "duration",
        "Longest wait it may set; default: the interval times "
        "WATCHKEEPER_INTERVAL_MAX_FACTOR. Not shorter than the interval.",
        example="2h",
    ),
    FieldSpec(
        "honour_cache",
        "boolean",
        "false: the source's word is ignored, every check is one interval after the last.",
        default=True,
    ),
    FieldSpec(
        "headers",
        "table",
        "Headers sent with each request. A credential (Authorization, X-Api-Key, anything "
        'named like auth, token, key, secret, password, session) only as "env:NAME". At most '
        "32 headers and cookies. Shown by name only.",
        default={},
        group="request",
        example={"X-Tenant": "acme", "X-Api-Key": "env:WK_SOURCE_MEMBERS_KEY"},
    ),
    FieldSpec(
        "cookies",
        "table",
        'Cookies sent with each request, each value "env:NAME". Shown by name only.',
        default={},
        constraints={"additionalProperties": {"type": "string", "pattern": ENV_PATTERN}},
        group="request",
        example={"session": "env:WK_SOURCE_MEMBERS_SESSION"},
    ),
    FieldSpec(
        "user_agent",
        "string",
        "User-Agent of its requests (one line of printable characters).",
        default="",
        group="request",
        example="Mozilla/5.0 (compatible; watchkeeper)",
    ),
    FieldSpec(
        "auth",
        "string",
        'Credentials, only as "env:NAME"; the variable holds "Bearer TOKEN", '
        '"Basic USER:PASSWORD" or "USER:PASSWORD".',
        default="",
        constraints={"pattern": f"^$|{ENV_PATTERN}"},
        group="request",
        example="env:WK_SOURCE_MEMBERS_AUTH",
    ),
    FieldSpec(
        "proxy",
        "string",
        f'Proxy URL ({", ".join(PROXY_SCHEMES)}), or "env:NAME" (required when it holds '
        "user:password@).",
        default="",
        group="request",
        example="env:WK_SOURCE_MEMBERS_PROXY",
    ),
    FieldSpec(
        "verify",
        "boolean",
        "false: no TLS verification (shown in status).",
        default=True,
        group="request",
    ),
    FieldSpec(
        "ca_bundle",
        "string",
        "Absolute path of a CA bundle to verify against instead of the system's.",
        default="",
        constraints={"pattern": "^(/.*)?$"},
        group="request",
        example="/etc/ssl/private-ca.pem",
    ),
)

REQUEST_FIELDS = tuple(f.name for f in COMMON if f.group == "request")


def fields_of(kind_fields: Sequence[FieldSpec]) -> tuple[FieldSpec, ...]:
    """Every field of a kind: ``name`` and ``url`` first, its own, then the other common ones."""
    head = tuple(f for f in COMMON if f.name in ("name", "url", "interval"))
    tail = tuple(f for f in COMMON if f.name not in ("name", "url", "interval"))
    return (*head, *kind_fields, *tail)


def input_schema(kind: str, specs: Iterable[FieldSpec], description: str = "") -> dict[str, Any]:
    """The JSON Schema of a source of ``kind`` as a client writes it: its table with ``kind``."""
    specs = list(specs)
    properties: dict[str, Any] = {"kind": {"const": kind, "description": "The source's kind."}}
    properties.update({f.name: f.json_schema() for f in specs})
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": ["kind", *(f.name for f in specs if f.required)],
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


# --- keeping the declarations and the readers in step -------------------------------------------


@dataclass(frozen=True)
class Read:
    """One ``FieldReader.get`` call a reader made."""

    name: str
    kind: Any
    default: Any
    required: bool


class ProbingReader(FieldReader):
    """A ``FieldReader`` that records every field asked for (and reads nothing else)."""

    def __init__(self, table: dict[str, Any]) -> None:
        super().__init__(table, "probe", [])
        self.reads: dict[str, Read] = {}

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.reads.setdefault(name, Read(name, kind, default, required))
        return super().get(name, kind, default, required)


def probe(read: Callable[[FieldReader, str], Source], table: dict[str, Any]) -> dict[str, Read]:
    """The fields the reader (with the common fields, as a file is read) asks for."""
    f = ProbingReader(table)
    name = f.get("name", str, "", required=True)
    read_common(f, read(f, name or "probe"))
    return f.reads


def check_readers(
    kind: str, read: Callable[[FieldReader, str], Source], specs: Sequence[FieldSpec]
) -> list[str]:
    """Where a kind's declared fields and its reader disagree (empty: they agree). The reader is
    probed twice — on a table with the name alone and on one with every declared example — so
    a field read only when another is present is found too."""
    declared = {f.name: f for f in specs}
    examples = {f.name: f.example for f in specs if f.example is not None}
    reads = probe(read, {"name": "probe"})
    for name, r in probe(read, {**examples, "name": "probe"}).items():
        reads.setdefault(name, r)
    problems = [
        f"{kind}: {name}: read by the reader, not declared"
        for name in reads
        if name not in declared
    ]
    problems += [
        f"{kind}: {name}: declared, never read by the reader"
        for name in declared
        if name not in reads
    ]
    for name, r in reads.items():
        spec = declared.get(name)
        if spec is None:
            continue
        if TYPES[spec.type] != r.kind:
            problems.append(f"{kind}: {name}: declared {spec.type}, the reader asks for {r.kind}")
        if spec.required != r.required:
            problems.append(f"{kind}: {name}: required {spec.required}, the reader {r.required}")
        if not spec.required and spec.default != r.default:
            problems.append(f"{kind}: {name}: default {spec.default!r}, the reader's {r.default!r}")
    return problems
