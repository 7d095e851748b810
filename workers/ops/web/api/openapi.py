"""The REST API's OpenAPI 3.1 document (``/api/v1/openapi.json``), generated.

A source's schema comes from the same declarations its kind's reader is kept in step with
(``SourceKind.fields``, ``workers.core.source_schema``): one schema per kind to create it, one
per kind to show it, and a patch schema from all of them. Everything else the API returns is
described here; a test validates every endpoint's answers — successes and errors — against
this document, and the document against OpenAPI 3.1.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from workers.core.source_schema import (
    ENV_PATTERN,
    REQUEST_FIELDS,
    FieldSpec,
    fields_of,
    input_schema,
)
from workers.core.version import VERSION
from workers.ops.sources.manage import HEALTH, STATE_SHOWN
from workers.ops.web.api.common import MAX_LIMIT
from workers.ops.web.items import STREAMS
from workers.polling.dispatch import CHECK_OUTCOMES
from workers.polling.kinds import KINDS

ERROR = {"$ref": "#/components/schemas/Error"}
ERRORS = {
    "400": "A parameter or body the API cannot use, or a definition a reader refuses (one "
    "line per problem, as `watchkeeper check` words it); or a Host the server does not "
    "answer to.",
    "401": "No token, or a wrong one (or a write while no WATCHKEEPER_API_TOKEN is set).",
    "403": "A read-only token writing; the server is read-only; an action from another origin.",
    "404": "No such source, stream, box or letter.",
    "408": "The body was not sent within WATCHKEEPER_WEB_BODY_TIMEOUT seconds.",
    "409": "A conflict with the registry: the source is owned by a sources file (change it "
    "there), its name is taken, the registry is full, another edit of it came between this "
    "one's read and write (read it again); a letter that cannot be retried.",
    "412": "`If-Match` names a version the source no longer has: someone changed it since "
    "you read it (GET it again for its new `ETag`).",
    "413": "The body is over WATCHKEEPER_WEB_MAX_BODY bytes (an OPML upload: "
    "WATCHKEEPER_WEB_MAX_UPLOAD).",
    "503": "Redis is unreachable; check now could not send the poll or the queue is full.",
}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "The `ETag` a GET answered: change or remove the source only if it still "
    "has that version (else 412), so two clients never overwrite each other's edits unseen.",
    "schema": {"type": "string"},
}
ALWAYS = ("400", "401", "408", "413", "503")
"""Answers any request may get, from the checks before the endpoint."""


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    out = dict(ok)
    for code in sorted({*ALWAYS, *errors}):
        out[code] = {"$ref": f"#/components/responses/E{code}"}
    return out


def param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


LIMIT = param(
    "limit",
    f"Entries per page, 1 to {MAX_LIMIT} (default 50).",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
)
NAME = path_param("name", "The source's name.", {"type": "string", "pattern": "^[A-Za-z0-9]"})


def kind_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


def shown_fields(kind: str, specs: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """A source's table as shown: no ``name``, no request profile (see ``request``)."""
    return {
        "type": "object",
        "description": f"The {kind} source's table as stored, URLs with credentials masked.",
        "properties": {
            f.name: f.json_schema()
            for f in specs
            if f.name != "name" and f.name not in REQUEST_FIELDS
        },
        "additionalProperties": False,
    }


def patch_field(spec: FieldSpec) -> dict[str, Any]:
    if spec.type == "table":
        return {
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "null"]},
            "description": spec.description + " Merged: a member null removes it.",
        }
    return {"anyOf": [spec.json_schema(), {"type": "null"}], "description": spec.description}


def source_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    shown, created, mapping_shown, mapping_new = [], [], {}, {}
    patchable: dict[str, Any] = {}
    for kind in KINDS:
        specs = fields_of(kind.fields)
        title = kind_name(kind.name)
        schemas[f"{title}Fields"] = shown_fields(kind.name, specs)
        schemas[f"{title}Source"] = {
            "type": "object",
            "required": ["name", "kind", "owner", "paused", "health", "fields", "request", "state"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"const": kind.name},
                "owner": {
                    "type": "string",
                    "description": "file:<path>, cli, opml or api (created through the API or "
                    "the dashboard)",
                },
                "paused": {"type": "boolean"},
                "health": {"enum": list(HEALTH)},
                "fields": ref(f"{title}Fields"),
                "request": ref("RequestSummary"),
                "state": ref("SourceState"),
            },
            "additionalProperties": False,
        }
        schemas[f"{title}SourceNew"] = input_schema(
            kind.name, specs, f"A new {kind.name} source: its [[{kind.section}]] table and kind."
        )
        shown.append(ref(f"{title}Source"))
        created.append(ref(f"{title}SourceNew"))
        mapping_shown[kind.name] = f"#/components/schemas/{title}Source"
        mapping_new[kind.name] = f"#/components/schemas/{title}SourceNew"
        for spec in specs:
            if spec.name != "name":
                patchable.setdefault(spec.name, patch_field(spec))
    schemas["Source"] = {
        "oneOf": shown,
        "discriminator": {"propertyName": "kind", "mapping": mapping_shown},
    }
    schemas["SourceNew"] = {
        "oneOf": created,
        "discriminator": {"propertyName": "kind", "mapping": mapping_new},
    }
    schemas["SourcePatch"] = {
        "type": "object",
        "description": "A JSON merge patch (RFC 7396) of the source's table: a member null "
        "removes the field, a table (headers, cookies, fields) merges member by member. "
        "name and kind cannot change.",
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            **patchable,
        },
        "additionalProperties": False,
    }
    return schemas


def other_schemas() -> dict[str, Any]:
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "problems"],
            "properties": {
                "error": {"type": "string", "description": "The first problem, one line."},
                "problems": {**string_list, "minItems": 1, "description": "Every problem."},
            },
            "additionalProperties": False,
        },
        "RequestSummary": {
            "type": "object",
            "description": "The request profile by names only: never a value.",
            "properties": {
                "headers": {**string_list, "description": "Header names."},
                "cookies": {**string_list, "description": "Cookie names."},
                "user_agent": {"const": True},
                "auth": {"type": "string", "pattern": ENV_PATTERN},
                "proxy": {"type": "string", "description": "env:NAME, or scheme://host:port"},
                "verify": {"const": False},
                "ca_bundle": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "SourceState": {
            "type": "object",
            "description": "What its polls left (as `watchkeeper status` shows it).",
            "properties": {
                k: {"type": "number"}
                if k in ("last_poll", "last_ok", "next_check")
                else {"type": "integer"}
                if k == "errors"
                else {"type": "string"}
                for k in STATE_SHOWN
            },
            "additionalProperties": False,
        },
        "SourceList": {
            "type": "object",
            "required": ["sources", "next"],
            "properties": {
                "sources": {"type": "array", "items": ref("Source")},
                "next": {
                    "type": ["string", "null"],
                    "description": "The cursor of the next page; null after the last.",
                },
            },
            "additionalProperties": False,
        },
        "Removed": {
            "type": "object",
            "required": ["removed", "revision"],
            "properties": {"removed": {"type": "string"}, "revision": {"type": "integer"}},
            "additionalProperties": False,
        },
        "Checked": {
            "type": "object",
            "required": ["name", "outcome", "message"],
            "properties": {
                "name": {"type": "string"},
                "outcome": {
                    "enum": [k for k in CHECK_OUTCOMES if k not in ("failed", "skipped_queue_full")]
                },
                "message": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "Item": {
            "type": "object",
            "required": ["id", "time", "source", "text", "link", "fields"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                "time": {"type": "string", "description": "UTC, from the entry's id"},
                "source": {"type": "string"},
                "text": {"type": "string", "description": "The line that says what it is."},
                "link": {"type": "string", "description": "An http(s) link, or empty."},
                "fields": {
                    "type": "object",
                    "description": "The entry's fields (see docs/streams.md).",
                },
            },
            "additionalProperties": False,
        },
        "ItemPage": {
            "type": "object",
            "required": ["stream", "items", "next", "scanned", "size"],
            "properties": {
                "stream": {"enum": list(STREAMS)},
                "items": {"type": "array", "items": ref("Item")},
                "next": {"type": ["string", "null"], "description": "cursor of older entries"},
                "scanned": {"type": "integer"},
                "size": {"type": "integer"},
            },
            "additionalProperties": False,
        },
        "DeadLetter": {
            "type": "object",
            "required": ["ref", "when", "what", "why", "retryable"],
            "properties": {
                "ref": {"type": "string"},
                "when": {"type": "string"},
                "what": {"type": "string"},
                "why": {"type": "string"},
                "retryable": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "DeadLetters": {
            "type": "object",
            "required": ["boxes"],
            "properties": {
                "boxes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "label", "size", "letters"],
                        "properties": {
                            "name": {"type": "string"},
                            "label": {"type": "string"},
                            "size": {"type": "object"},
                            "letters": {"type": "array", "items": ref("DeadLetter")},
                            "error": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
        "LetterRef": {
            "type": "object",
            "required": ["ref"],
            "properties": {"ref": {"type": "string", "minLength": 1}},
            "additionalProperties": False,
        },
        "LetterDone": {
            "type": "object",
            "required": ["box", "ref", "action", "handled"],
            "properties": {
                "box": {"type": "string"},
                "ref": {"type": "string"},
                "action": {"enum": ["retry", "drop"]},
                "handled": {"type": "integer", "minimum": 1},
            },
            "additionalProperties": False,
        },
        "Status": {
            "type": "object",
            "required": ["sections"],
            "properties": {
                "sections": {
                    "type": "object",
                    "additionalProperties": {"type": "object"},
                    "description": "Each section of `watchkeeper status --json`.",
                }
            },
            "additionalProperties": False,
        },
        "OpmlImported": {
            "type": "object",
            "required": [
                "owner",
                "added",
                "changed",
                "removed",
                "unchanged",
                "feeds",
                "skipped_types",
                "duplicates",
                "dry_run",
            ],
            "properties": {
                "owner": {"const": "opml"},
                "added": string_list,
                "changed": string_list,
                "removed": {"type": "array", "maxItems": 0},
                "unchanged": {"type": "integer"},
                "feeds": {"type": "integer"},
                "skipped_types": {"type": "integer"},
                "duplicates": {"type": "integer"},
                "dry_run": {"type": "boolean"},
                "revision": {"type": "integer"},
            },
            "additionalProperties": False,
        },
    }


def sources_paths() -> dict[str, Any]:
    source = json_body(ref("Source"), "The source.")
    return {
        "/sources": {
            "get": {
                "operationId": "listSources",
                "summary": "List sources, a page at a time",
                "parameters": [
                    param("kind", "Only this kind (feed, http_log, site, …)."),
                    param("owner", "Only this owner: file:<path>, cli, opml or api."),
                    param("tag", "Only sources carrying this tag."),
                    param("q", "Text in the name, URL (masked), title or tags."),
                    param(
                        "state",
                        "Only sources in this state.",
                        {"enum": ["paused", "new", "ok", "backing-off", "failing"]},
                    ),
                    param("cursor", "The `next` of the previous page."),
                    LIMIT,
                ],
                "responses": responses({"200": json_body(ref("SourceList"), "A page.")}),
            },
            "post": {
                "operationId": "createSource",
                "summary": "Create a source (owner api)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("SourceNew")}},
                },
                "responses": responses({"201": source}, "403", "409"),
            },
        },
        "/sources/{name}": {
            "parameters": [NAME],
            "get": {
                "operationId": "getSource",
                "summary": "One source",
                "responses": responses({"200": source}, "404"),
            },
            "patch": {
                "operationId": "patchSource",
                "summary": "Change a source (not one a sources file owns)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/merge-patch+json": {"schema": ref("SourcePatch")},
                        "application/json": {"schema": ref("SourcePatch")},
                    },
                },
                "parameters": [IF_MATCH],
                "responses": responses({"200": source}, "403", "404", "409", "412"),
            },
            "delete": {
                "operationId": "deleteSource",
                "summary": "Remove a source (not one a sources file owns)",
                "parameters": [IF_MATCH],
                "responses": responses(
                    {"200": json_body(ref("Removed"), "Removed.")}, "403", "404", "409", "412"
                ),
            },
        },
        **{
            f"/sources/{{name}}/{action}": {
                "parameters": [NAME],
                "post": {
                    "operationId": f"{action}Source",
                    "summary": summary,
                    "responses": responses({"200": source}, "403", "404", "409"),
                },
            }
            for action, summary in (
                ("pause", "Pause a source (scheduled polls skip it)"),
                ("resume", "Resume a source (due at once)"),
            )
        },
        "/sources/{name}/check": {
            "parameters": [NAME],
            "post": {
                "operationId": "checkSource",
                "summary": "Check now: one forced poll, never a second while one waits",
                "responses": responses(
                    {"202": json_body(ref("Checked"), "What check now did.")}, "403", "404", "409"
                ),
            },
        },
    }


def other_paths() -> dict[str, Any]:
    letter = {"required": True, "content": {"application/json": {"schema": ref("LetterRef")}}}
    box = path_param("box", "The dead-letter box (tasks, deliveries, …).")
    return {
        "/items/{stream}": {
            "get": {
                "operationId": "listItems",
                "summary": "A stream's entries, newest first",
                "parameters": [
                    path_param("stream", "The stream.", {"enum": list(STREAMS)}),
                    param("q", "Text in the entry (at most 200 characters)."),
                    param("source", "Only entries of this source."),
                    param("tag", "Only entries of sources carrying this tag."),
                    param("cursor", "The `next` of the previous page (a stream entry id)."),
                    LIMIT,
                ],
                "responses": responses({"200": json_body(ref("ItemPage"), "A page.")}, "404"),
            }
        },
        "/dead-letters": {
            "get": {
                "operationId": "listDeadLetters",
                "summary": "The newest letters of each dead-letter box",
                "parameters": [param("box", "Only this box."), LIMIT],
                "responses": responses({"200": json_body(ref("DeadLetters"), "The boxes.")}, "404"),
            }
        },
        **{
            f"/dead-letters/{{box}}/{action}": {
                "parameters": [box],
                "post": {
                    "operationId": f"{action}DeadLetter",
                    "summary": summary,
                    "requestBody": letter,
                    "responses": responses(
                        {"200": json_body(ref("LetterDone"), "Done.")}, "403", "404", "409"
                    ),
                },
            }
            for action, summary in (
                ("retry", "Send a dead letter again"),
                ("drop", "Drop a dead letter"),
            )
        },
        "/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "The sections of `watchkeeper status`",
                "parameters": [
                    {
                        **param("section", "Only these sections (repeat the parameter)."),
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "explode": True,
                    }
                ],
                "responses": responses({"200": json_body(ref("Status"), "Status.")}),
            }
        },
        "/opml": {
            "get": {
                "operationId": "exportOpml",
                "summary": "The feeds as OPML 2.0 (Miniflux's form)",
                "description": (
                    "Credentials in a feed's URL (user:password@, ?token=…) are masked as *** "
                    "(`watchkeeper sources export-opml` keeps them)."
                ),
                "parameters": [
                    param("owner", "Only this owner's feeds."),
                    param("tag", "Only feeds carrying this tag."),
                    param("title", "The OPML head's title."),
                ],
                "responses": responses(
                    {
                        "200": {
                            "description": "OPML 2.0.",
                            "content": {"text/x-opml": {"schema": {"type": "string"}}},
                        }
                    }
                ),
            },
            "post": {
                "operationId": "importOpml",
                "summary": "Import the feeds of an OPML file (owner opml; adds and updates)",
                "parameters": [
                    param("interval", "Every imported feed's interval (default: the feed's)."),
                    param(
                        "dry_run", "true: say what it would do, write nothing.", {"type": "boolean"}
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"text/x-opml": {"schema": {"type": "string"}}},
                },
                "responses": responses(
                    {
                        "200": json_body(ref("OpmlImported"), "Dry run: what it would do."),
                        "201": json_body(ref("OpmlImported"), "Imported."),
                    },
                    "403",
                    "409",
                ),
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": responses(
                    {"200": json_body({"type": "object"}, "The OpenAPI 3.1 document.")}
                ),
            }
        },
    }


DESCRIPTION = """The REST API of watchkeeper's web process: the source registry, the streams'
items, dead letters and status. Send `Authorization: Bearer <WATCHKEEPER_API_TOKEN>` (reads and
writes) or one of `WATCHKEEPER_API_READ_TOKENS` (reads). Without any API token configured, reads
need none where the dashboard needs no login (loopback, no WATCHKEEPER_WEB_TOKEN), and writes are
refused. Errors are `{"error": "<first line>", "problems": ["<every line>"]}`, worded as the CLI
words them. Request profile values are never returned: names only."""


def document() -> dict[str, Any]:
    """The document, built once per set of declared kinds (they are declared at import)."""
    return _document(tuple(KINDS.names()))


@cache
def _document(kinds: tuple[str, ...]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "watchkeeper", "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {**sources_paths(), **other_paths()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**source_schemas(), **other_schemas()},
            "responses": {
                f"E{code}": json_body(ERROR, text) for code, text in sorted(ERRORS.items())
            },
        },
    }
