"""Sources as TOML the sources file accepts (``watchkeeper sources export``).

A small writer for what a source table holds (strings, integers, finite floats, booleans,
lists, tables — the registry stores nothing else): one ``[[section]]`` per source, nested
tables inline, so ``watchkeeper check`` and ``apply`` read the output back unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from workers.core.source_registry import Definition

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"{type(value).__name__} has no TOML form here")


def source_toml(d: Definition) -> str:
    lines = [f"[[{d.section}]]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in d.file_table().items()]
    return "\n".join(lines) + "\n"


def sources_toml(definitions: Iterable[Definition], header: str = "") -> str:
    parts = [f"# {line}\n" for line in header.splitlines()]
    body = "\n".join(source_toml(d) for d in definitions)
    return "".join(parts) + ("\n" if parts and body else "") + body
