"""HTTP log-endpoint polling → the ``logs`` stream.

An endpoint serves a JSON array, newline-delimited JSON, or plain lines. Each entry is
deduplicated on the source's ``key`` field when it has one, else on a hash of the whole entry,
so an endpoint that re-serves its last N lines yields each line once. In ndjson a broken line
is counted (``bad``) and skipped while the good lines are kept; a body with nothing but broken
lines is an error for the source.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from celery import shared_task

from tasks.fetch import FetchResult, fetch
from workers.bounded import CappedStream
from workers.config import HttpLogSource
from workers.runtime import Runtime, get_runtime
from workers.sources import Item, Parsed, SourceProblem, now_iso, poll_source

log = logging.getLogger(__name__)

ACCEPT = {"json": "application/json", "ndjson": "application/x-ndjson, application/json;q=0.9, "
          "text/plain;q=0.8", "lines": "text/plain, */*;q=0.5"}


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
        raise SourceProblem(f"{url}: not JSON (format = \"json\"): {exc}") from None
    if not isinstance(data, list):
        raise SourceProblem(f"{url}: expected a JSON array (format = \"json\"), "
                            f"got {type(data).__name__}")
    for value in data:
        yield json.dumps(value, ensure_ascii=False, separators=(",", ":")), value


def parse_log_body(source: HttpLogSource, body: bytes, headers: dict[str, str],
                   url: str) -> Parsed:
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
            raise SourceProblem(f"{url}: none of {bad} lines is valid JSON (format = \"ndjson\")")
    items = []
    for line, data in rows:
        key = entry_key(source, line, data)
        fields: dict[str, Any] = {"source": source.name, "fetched_at": fetched_at,
                                  "line": line, "key": key}
        if data is not None:
            fields["data"] = data
        items.append(Item(key, fields))
    return Parsed(items, bad)


class HttpLogKind:
    def __init__(self, accept: str) -> None:
        self.accept = accept

    def parse(self, source: HttpLogSource, result: FetchResult) -> Parsed:
        return parse_log_body(source, result.body, result.headers, result.url)

    def stream(self, rt: Runtime) -> CappedStream:
        return CappedStream(rt.redis, rt.settings.key("stream", "logs"), rt.settings.max_logs)

    def emitted(self, rt: Runtime, source: HttpLogSource,
                written: list[tuple[str, dict[str, Any]]]) -> None:
        """Log entries have no later stage."""


def kind_for(source: HttpLogSource) -> HttpLogKind:
    return HttpLogKind(ACCEPT.get(source.format, "*/*"))


def poll_now(rt: Runtime, source: HttpLogSource, show_items: bool = False) -> dict[str, Any]:
    """One poll now, for ``watchkeeper poll``: ignores the backoff, never the lock."""
    return poll_source(rt, source, kind_for(source), fetch, scheduled=False,
                       show_items=show_items)


@shared_task(name="tasks.http_logs.poll_http_log")
def poll_http_log(name: str) -> dict[str, Any]:
    """Scheduled poll of one log endpoint; one removed from the sources file is skipped."""
    rt = get_runtime()
    source = rt.config().get(name)
    if not isinstance(source, HttpLogSource):
        log.info("[http_logs] %r is no longer a configured log endpoint; skipped", name)
        return {"source": name, "status": "skipped", "reason": "not a configured log endpoint"}
    return poll_source(rt, source, kind_for(source), fetch)
