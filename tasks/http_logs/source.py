"""An ``[[http_logs]]`` table: a log endpoint, its body format and its dedup key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from workers.core.sources_file import FieldReader, Source

LOG_FORMATS = ("json", "ndjson", "lines")


@dataclass(frozen=True)
class HttpLogSource(Source):
    format: str = "ndjson"
    key: str | None = None

    kind: ClassVar[str] = "http_log"


def read_http_log(f: FieldReader, name: str) -> HttpLogSource:
    fmt = f.get("format", str, "ndjson")
    if fmt not in LOG_FORMATS:
        f.problem("format", f"{fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    key = f.get("key", str, None)
    if key is not None and not key:
        f.problem("key", "must not be empty")
    return HttpLogSource(name=name, url=f.url(), interval=f.interval(), format=fmt, key=key)
