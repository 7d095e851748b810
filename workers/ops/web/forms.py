"""The dashboard's form for a source, built from its kind's declared fields
(``workers.core.source_schema``), and the table a submitted form makes.

Every field is a text input (numbers, durations, comma-separated lists), a yes/no/default choice
(booleans) or a text area of ``key = value`` lines (headers, cookies, a site's fields). A form
holds text; the table it makes is read by the kind's reader like any other, so a form's problems
are ``check``'s lines. Only what cannot reach the reader is worded here (a line of a text area
that is not ``key = value``).

Request profile values are never put in a page: an ``env:NAME`` reference is shown (a name), any
other value as ``(unchanged)``, which keeps the stored value when the form is saved — so editing
a source's interval needs none of its headers, and a page never carries one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.core.request_profile import is_env
from workers.core.source_schema import FieldSpec, fields_of
from workers.polling.kinds import KINDS

KEEP = "(unchanged)"
"""What a form shows for a value it does not show, and what keeps it."""
PREFIX = "f."
NUMBER_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
SHOWN_REQUEST = ("verify", "ca_bundle")
"""Request profile fields that are no secret and are shown as they are."""


@dataclass(frozen=True)
class FormField:
    spec: FieldSpec
    value: str
    fixed: bool = False
    """Shown, not editable (a source's name when it is edited)."""

    @property
    def input(self) -> str:
        if self.spec.type == "boolean":
            return "choice"
        return "lines" if self.spec.type == "table" else "text"

    @property
    def field(self) -> str:
        return PREFIX + self.spec.name

    @property
    def hint(self) -> str:
        spec = self.spec
        if spec.type == "table":
            return "one key = value a line"
        if spec.type == "strings":
            return "comma-separated"
        if spec.default not in (None, "", [], {}) and spec.type != "boolean":
            return f"default {spec.default}"
        return ""


def specs(kind: str) -> tuple[FieldSpec, ...]:
    return fields_of(KINDS[kind].fields)


def hidden(spec: FieldSpec, value: Any) -> bool:
    """Whether a stored value stays out of the page (a request profile value, not a name)."""
    if spec.group != "request" or spec.name in SHOWN_REQUEST or isinstance(value, bool):
        return False
    return not (isinstance(value, str) and is_env(value))


def text_of(spec: FieldSpec, value: Any) -> str:
    """A stored value as its input shows it."""
    if value is None:
        return ""
    if spec.type == "table" and isinstance(value, Mapping):
        return "\n".join(f"{k} = {KEEP if hidden(spec, v) else v}" for k, v in value.items())
    if hidden(spec, value):
        return KEEP
    if spec.type == "strings" and isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def form_fields(
    kind: str,
    table: Mapping[str, Any] | None = None,
    form: Mapping[str, str] | None = None,
    editing: bool = False,
) -> list[FormField]:
    """The inputs of a ``kind`` source's form: as submitted (``form``), else from a stored
    table, else empty."""
    out = []
    for spec in specs(kind):
        if form is not None and not (editing and spec.name == "name"):
            value = str(form.get(PREFIX + spec.name, ""))
        else:
            value = text_of(spec, (table or {}).get(spec.name))
        out.append(FormField(spec, value, fixed=editing and spec.name == "name"))
    return out


def _scalar(spec: FieldSpec, text: str) -> Any:
    """Text as the reader expects it; what does not convert goes as text (the reader words
    the problem)."""
    if spec.type == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    if spec.type == "strings":
        return [part.strip() for part in text.split(",") if part.strip()]
    if spec.type in ("integer", "number", "duration") and NUMBER_RE.match(text):
        number = float(text)
        return int(number) if number.is_integer() and "." not in text else number
    return text


def _lines(
    spec: FieldSpec, text: str, old: Mapping[str, Any], label: str, problems: list[str]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            problems.append(f"source '{label}': {spec.name}: line {number} is not key = value")
            continue
        if value == KEEP:
            if key not in old:
                problems.append(
                    f"source '{label}': {spec.name}.{key}: {KEEP}, but it has no value to keep"
                )
                continue
            value = str(old[key])
        out[key] = value
    return out


def table_of(
    kind: str, form: Mapping[str, str], old: Mapping[str, Any] | None = None, name: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """The table (``name`` included) a submitted form makes, and the problems the form itself
    has. ``old``: the stored table an edit started from (its hidden values are kept)."""
    old = old or {}
    table: dict[str, Any] = {"name": name or str(form.get(PREFIX + "name", "")).strip()}
    label = table["name"] or "?"
    problems: list[str] = []
    for spec in specs(kind):
        if spec.name == "name":
            continue
        text = str(form.get(PREFIX + spec.name, ""))
        if spec.type == "table":
            before = old.get(spec.name)
            lines = _lines(
                spec, text, before if isinstance(before, Mapping) else {}, label, problems
            )
            if lines:
                table[spec.name] = lines
            continue
        text = text.strip()
        if not text:
            continue
        if text == KEEP and spec.name in old:
            table[spec.name] = old[spec.name]
            continue
        table[spec.name] = _scalar(spec, text)
    return table, problems
