"""Parsing log endpoints: a JSON array, newline-delimited JSON, or plain lines.

Each entry is deduplicated on the source's ``key`` field when it has one, else on a hash of the
whole entry, so an endpoint that re-serves its last N lines yields each line once. In ndjson a
broken line is counted (``bad``) and skipped while the good lines are kept; a body with nothing
but broken lines is an error for the source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from tasks.http_logs.source import HttpLogSource
from workers.core.clock import now_iso
from workers.polling.errors import SourceProblem
from workers.polling.kinds import Item

ACCEPT = {
    "json": "application/json",
    "ndjson": "application/x-ndjson, application/json;q=0.9, text/plain;q=0.8",
    "lines": "text/plain, */*;q=0.5",
}


def body_text(body: bytes, headers: dict[str, str]) -> str:
    charset = "utf-8"
    for part in headers.get("content-type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip("\"' ")
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def field_value(data: Any, path: str) -> Any:
    """``data[path]``, or a dotted path into nested objects; None when absent."""
    if isinstance(data, dict) and path in data:
        return data[path]
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def entry_key(source: HttpLogSource, line: str, data: Any) -> str:
    if source.key is not None:
        value = field_value(data, source.key)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
            return f"{source.key}={value}"
    canonical = line if data is None else json.dumps(data, sort_keys=True, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _json_array(text: str, url: str) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SourceProblem(f'{url}: not JSON (format = "json"): {exc}') from None
    if not isinstance(data, list):
        raise SourceProblem(
            f'{url}: expected a JSON array (format = "json"), got {type(data).__name__}'
        )
    for value in data:
        yield json.dumps(value, ensure_ascii=False, separators=(",", ":")), value


def parse_log_body(
    source: HttpLogSource, body: bytes, headers: dict[str, str], url: str
) -> tuple[list[Item], int]:
    """Entries of a fetched log body in the source's format, and the count of broken lines."""
    text = body_text(body, headers)
    fetched_at = now_iso()
    bad = 0
    rows: list[tuple[str, Any]] = []
    if source.format == "json":
        rows = list(_json_array(text, url))
    else:
        for raw in text.splitlines():
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            if source.format == "lines":
                rows.append((line, None))
                continue
            try:
                rows.append((line, json.loads(line)))
            except ValueError:
                bad += 1
        if bad and not rows:
            raise SourceProblem(f'{url}: none of {bad} lines is valid JSON (format = "ndjson")')
    items = []
    for line, data in rows:
        key = entry_key(source, line, data)
        fields: dict[str, Any] = {
            "source": source.name,
            "fetched_at": fetched_at,
            "line": line,
            "key": key,
        }
        if data is not None:
            fields["data"] = data
        items.append(Item(key, fields))
    return items, bad
