"""Message titles and bodies from an item's fields: ``{title}``, ``{fields.price}``.

A template names fields with ``{name}`` (dotted for nested values) and may give a format spec
(``{change_pct:.1f}``). A field the item does not have renders empty and is counted — never an
exception, since one odd item must not block a sink's queue. Every stream has a default that
reads well; a sink overrides it per stream (or with ``default``) in its ``templates`` table.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Template:
    title: str
    body: str


DEFAULTS: dict[str, Template] = {
    "alerts": Template("{title}", "{summary}\n{link}\n\n{source} · {published}"),
    "logs": Template("{source}: new log entry", "{_line}"),
    "listings": Template(
        "{site}: {fields.title}",
        "{price_amount} {price_currency}\n{fields.link}\n\n{site} · listing {id}",
    ),
    "locations": Template("{title}", "Located: {location.name} {location.country_code}"),
    "changes": Template(
        "{site}: {change_text} — {fields.title}",
        "{price_text}\n{fields.link}\n\n{site} · listing {id}",
    ),
    "health": Template("{title}", "{message}"),
}
GENERIC = Template("{stream} {id}", "{_all}")

CHANGE_TEXT = {
    "price_drop": "price drop",
    "price_rise": "price rise",
    "back": "back again",
    "currency": "currency changed",
}


def price_text(fields: Mapping[str, Any]) -> str:
    """A change's prices as one line: ``1000 USD → 900 EUR`` for a currency change (no
    percentage between currencies), else ``1000 → 900 USD (-10.0%)``, the percentage left out
    when there is none (a move from 0, a listing back)."""
    old, new = fields.get("old_price") or "", fields.get("new_price") or ""
    currency, pct = fields.get("currency") or "", fields.get("change_pct") or ""
    if fields.get("change") == "currency":
        return f"{old} {fields.get('old_currency') or ''} → {new} {currency}".replace("  ", " ")
    text = f"{old} → {new} {currency}".strip() if old or new else ""
    return f"{text} ({pct}%)" if text and pct else text


def default_template(stream: str) -> Template:
    return DEFAULTS.get(stream, GENERIC)


class _Formatter(string.Formatter):
    """``str.format`` over nested mappings; a missing field is empty and counted."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: list[str] = []

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        node: Any = kwargs
        for part in field_name.split("."):
            if isinstance(node, Mapping) and part in node and node[part] is not None:
                node = node[part]
            else:
                self.missing.append(field_name)
                return "", field_name
        return node, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if not format_spec:
            return "" if value is None else str(value)
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            try:
                return format(float(value), format_spec)
            except (TypeError, ValueError):
                return str(value)


def render(template: str, context: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The text and the names of the fields that were missing."""
    formatter = _Formatter()
    try:
        text = formatter.vformat(template, (), context)
    except (ValueError, IndexError, KeyError, AttributeError):
        return template, ["<template>"]
    return tidy(text), formatter.missing


def tidy(text: str) -> str:
    """No trailing spaces, no runs of blank lines left by empty fields."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def context_for(stream: str, entry_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a template can name: the entry's fields, plus ``stream``, ``id`` when the entry has
    none, ``change_text`` and ``price_text`` for changes, ``_line`` (a log entry's line or
    lines) and ``_all`` (every field, one per line)."""
    context: dict[str, Any] = {"stream": stream, "id": entry_id, **fields}
    if "change" in fields:
        context["change_text"] = CHANGE_TEXT.get(str(fields["change"]), str(fields["change"]))
        context["price_text"] = price_text(fields)
    context["_line"] = fields.get("line") or fields.get("lines") or ""
    context["_all"] = "\n".join(
        f"{k}: {v}" for k, v in fields.items() if k not in ("seq", "schema") and v not in ("", None)
    )
    return context
