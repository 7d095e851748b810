"""``/api/v1/sources``: list (filters and a cursor), get, create, patch, delete, pause, resume
and check now — the rules of ``watchkeeper sources`` (``workers.ops.sources.manage``).

A list reads one page of the registry from its cursor (``workers.core.source_pages``), never
the whole registry; ``q`` searches names, masked URLs, titles and tags only (never a request
profile's values: a search must not be a way to guess them).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.core.dead_letters import Dispatch
from workers.core.redact import redact_url
from workers.core.runtime import Runtime
from workers.core.source_pages import BadCursor, Cursor, list_page
from workers.core.source_registry import Definition
from workers.core.sources_file import ConfigError
from workers.ops.sources import manage
from workers.ops.sources.commands import kind_name
from workers.ops.web.api.common import BadRequest, error, json_object, limit_of, text_param

STATES = {
    "paused": "paused",
    "new": "new",
    "ok": "ok",
    "backing-off": "backing off",
    "failing": "failing",
}
"""``state=`` values and the health words they select (``manage.health``)."""


def searchable(d: Definition) -> str:
    """What ``q`` searches: the name, the masked URL and site, the title and the tags."""
    table = d.table
    parts = [
        d.name,
        redact_url(str(table.get("url", ""))),
        redact_url(str(table.get("site_url", ""))),
    ]
    parts.append(str(table.get("title", "")))
    parts += [str(t) for t in table.get("tags") or () if isinstance(t, str)]
    return " ".join(parts).casefold()


class SourcesApi:
    def __init__(self, rt: Runtime, dispatch: Dispatch, queue: str) -> None:
        self.rt, self.dispatch, self.queue = rt, dispatch, queue

    def body(self, d: Definition, state: dict[str, str] | None = None) -> dict[str, Any]:
        if state is None:
            return manage.shown(self.rt, d)
        return manage.describe(d, state, self.rt.settings.notify_after_errors)

    async def list(self, request: Request) -> Response:
        rt = self.rt
        q = request.query_params
        try:
            kind = kind_name(q["kind"]) if q.get("kind") else ""
        except ConfigError as exc:
            raise BadRequest(exc.problems[0]) from None
        state = q.get("state", "")
        if state and state not in STATES:
            raise BadRequest(f"state: {state[:40]!r} is not one of {', '.join(STATES)}")
        try:
            cursor = Cursor.decode(q["cursor"]) if q.get("cursor") else Cursor()
        except BadCursor as exc:
            raise BadRequest(str(exc)) from None
        tag, needle = text_param(request, "tag"), text_param(request, "q").casefold().strip()
        owner = text_param(request, "owner", 4200)
        states: dict[str, dict[str, str]] = {}

        def keep(batch: list[Definition]) -> list[Definition]:
            out = [
                d
                for d in batch
                if (not kind or d.kind == kind)
                and (not tag or tag in (d.table.get("tags") or ()))
                and (not needle or needle in searchable(d))
            ]
            if not state or not out:
                return out
            read = manage.states(rt, [d.name for d in out])
            states.update(zip((d.name for d in out), read, strict=True))
            failing_after = rt.settings.notify_after_errors
            wanted = STATES[state]
            return [d for d in out if manage.health(states[d.name], failing_after) == wanted]

        found, following = list_page(rt.sources, cursor, limit_of(request), keep, owner)
        missing = [d.name for d in found if d.name not in states]
        states.update(zip(missing, manage.states(rt, missing), strict=True))
        return JSONResponse(
            {
                "sources": [self.body(d, states[d.name]) for d in found],
                "next": following.encode() if following else None,
            }
        )

    async def create(self, request: Request) -> Response:
        data = await json_object(request)
        kind = data.pop("kind", None)
        if not isinstance(kind, str) or not kind:
            raise BadRequest(f"source '{data.get('name', '?')}': kind: missing (feed, http_log, …)")
        d, _ = manage.create(self.rt, kind, data)
        return JSONResponse(
            self.body(d), status_code=201, headers={"Location": f"/api/v1/sources/{d.name}"}
        )

    async def get(self, request: Request) -> Response:
        d = manage.definition_of(self.rt, self.name(request))
        return JSONResponse(self.body(d), headers=self.etag(d))

    async def patch(self, request: Request) -> Response:
        changes = await json_object(request)
        name, if_match = self.name(request), request.headers.get("if-match")
        d, _ = manage.patch(self.rt, name, changes, if_match)
        now = manage.definition_of(self.rt, name)
        return JSONResponse(self.body(d), headers=self.etag(now))

    async def delete(self, request: Request) -> Response:
        name = self.name(request)
        written = manage.remove(self.rt, name, request.headers.get("if-match"))
        return JSONResponse({"removed": name, "revision": written.rev})

    async def pause(self, request: Request) -> Response:
        return self._pause(request, True)

    async def resume(self, request: Request) -> Response:
        return self._pause(request, False)

    def _pause(self, request: Request, paused: bool) -> Response:
        name = self.name(request)
        manage.pause(self.rt, name, paused)
        return JSONResponse(self.body(manage.definition_of(self.rt, name)))

    async def check(self, request: Request) -> Response:
        source = manage.source_of(self.rt, self.name(request))
        done = manage.check(self.rt, source, self.dispatch, self.queue)
        if done.failed:
            return error(503, [done.line])
        return JSONResponse(
            {"name": source.name, "outcome": done.outcome, "message": done.line}, status_code=202
        )

    def etag(self, d: Definition) -> dict[str, str]:
        """The ``ETag`` of a source's stored version: sent back as ``If-Match`` by a client
        that must not overwrite another's change (PATCH, DELETE: 412 when no longer current)."""
        return {"ETag": f'"{self.rt.sources.version(d)}"'}

    @staticmethod
    def name(request: Request) -> str:
        return str(request.path_params["name"])
