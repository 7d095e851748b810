"""The ``[[http_logs]]`` table's own fields, as data (``workers.core.source_schema``);
``read_http_log`` validates them."""

from __future__ import annotations

from tasks.http_logs.source import LOG_FORMATS
from workers.core.source_schema import FieldSpec

HTTP_LOG_FIELDS = (
    FieldSpec(
        "format",
        "string",
        "The body: json (an array), ndjson (one JSON object a line) or lines (plain text).",
        default="ndjson",
        constraints={"enum": list(LOG_FORMATS)},
        example="ndjson",
    ),
    FieldSpec(
        "key",
        "string",
        "The entry field that identifies an entry (dedup); absent: a hash of the whole entry.",
        constraints={"minLength": 1},
        example="id",
    ),
)
