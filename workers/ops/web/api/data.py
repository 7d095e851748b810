"""``/api/v1/items``, ``/dead-letters``, ``/status`` and ``/opml``: what the dashboard shows and
``watchkeeper status``, ``sources import-opml`` and ``export-opml`` do, as JSON (and OPML).

Items are the dashboard's items pages (``workers.ops.web.items``: newest first, a cursor by
stream entry id, a bounded scan per page) with two more filters, ``source`` and ``tag``; dead
letters go through the stages' dead-letter boxes (``workers.core.dead_letters``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.core.dead_letters import BOXES, Dispatch
from workers.core.runtime import Runtime
from workers.core.status_sections import SECTIONS
from workers.ops.sources.commands import selected
from workers.ops.sources.imports import Imported, import_parsed
from workers.ops.sources.manage import Refused
from workers.ops.sources.opml import OpmlError, export_opml, parse_opml
from workers.ops.status import collect_status, sections
from workers.ops.web.api.common import (
    BadRequest,
    error,
    flag_param,
    json_object,
    limit_of,
    text_param,
)
from workers.ops.web.items import STREAMS, BadQuery, Keep, page_params, read_page
from workers.store.source_writes import RegistryError

CONFLICTS = "already in the registry"
"""What the registry's refusal of a name held by another owner says."""
LETTER_FIELDS = ("ref", "when", "what", "why", "retryable")
"""What the API shows of a dead letter (as the dashboard does)."""


class DataApi:
    def __init__(self, rt: Runtime, dispatch: Dispatch) -> None:
        self.rt, self.dispatch = rt, dispatch

    # --- items -----------------------------------------------------------------------------

    async def items(self, request: Request) -> Response:
        q = request.query_params
        stream = str(request.path_params["stream"])
        if stream not in STREAMS:
            raise Refused(404, [f"stream: {stream[:40]!r} is not one of {', '.join(STREAMS)}"])
        params = {"stream": stream, "q": q.get("q", ""), "before": q.get("cursor", "")}
        try:
            stream, query, before = page_params(params)
        except BadQuery as exc:
            if str(exc).startswith("before:"):
                raise BadRequest("cursor:" + str(exc)[len("before:") :]) from None
            raise BadRequest(str(exc)) from None
        keep = self.filter(text_param(request, "source", 64), text_param(request, "tag"))
        page = read_page(self.rt, stream, query, before, limit_of(request), keep)
        return JSONResponse(
            {
                "stream": stream,
                "items": [
                    {
                        "id": row["id"],
                        "time": row["when"] + "Z",
                        "source": row["source"],
                        "text": row["text"],
                        "link": row["link"],
                        "fields": fields,
                    }
                    for row, (_, fields) in zip(page.entries, page.found, strict=True)
                ],
                "next": page.older or None,
                "scanned": page.scanned,
                "size": page.size,
            }
        )

    def filter(self, source: str, tag: str) -> Keep | None:
        """Entries of one source, or of sources carrying a tag (their tags read once per
        chunk, for the sources the chunk names)."""
        if not source and not tag:
            return None
        tags: dict[str, list[str]] = {}

        def keep(rows: list[tuple[str, dict[str, str]]]) -> list[bool]:
            names = [str(raw.get("source") or raw.get("site") or "") for _, raw in rows]
            if tag:
                unknown = sorted({n for n in names if n and n not in tags})
                for name, d in self.rt.sources.definitions(unknown).items():
                    tags[name] = list(d.table.get("tags") or ()) if d is not None else []
            return [
                (not source or name == source) and (not tag or tag in tags.get(name, ()))
                for name in names
            ]

        return keep

    # --- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, request: Request) -> Response:
        wanted = request.query_params.get("box", "")
        if wanted and wanted not in BOXES:
            raise Refused(404, [f"box: {wanted[:40]!r} is not one of {', '.join(BOXES.names())}"])
        limit = limit_of(request)
        boxes: list[dict[str, Any]] = []
        for box in BOXES:
            if wanted and box.name != wanted:
                continue
            entry: dict[str, Any] = {"name": box.name, "label": box.label}
            try:
                letters = box.list(self.rt, limit)
                entry["size"] = box.size(self.rt)
                entry["letters"] = [
                    {k: letter.get(k, "") for k in LETTER_FIELDS} for letter in letters
                ]
            except Exception as exc:  # one broken box never hides the others
                entry.update(size={}, letters=[], error=f"{type(exc).__name__}: {exc}")
            boxes.append(entry)
        return JSONResponse({"boxes": boxes})

    async def retry(self, request: Request) -> Response:
        return await self._dead(request, "retry")

    async def drop(self, request: Request) -> Response:
        return await self._dead(request, "drop")

    async def _dead(self, request: Request, action: str) -> Response:
        name = str(request.path_params["box"])
        box = BOXES.get(name)
        if box is None:
            raise Refused(404, [f"box: {name[:40]!r} is not one of {', '.join(BOXES.names())}"])
        ref = (await json_object(request)).get("ref")
        if not isinstance(ref, str) or not ref:
            raise BadRequest("ref: missing (the letter's ref, as listed)")
        try:
            handled = (
                box.retry(self.rt, ref, self.dispatch)
                if action == "retry"
                else box.drop(self.rt, ref)
            )
        except ValueError as exc:
            return error(409, [str(exc)])
        if not handled:
            raise Refused(404, [f"dead letter {name} {ref[:200]}: not in the box"])
        return JSONResponse({"box": name, "ref": ref, "action": action, "handled": handled})

    # --- status ----------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        wanted = request.query_params.getlist("section")
        unknown = [w for w in wanted if w not in SECTIONS]
        if unknown:
            known = ", ".join(s.name for s in sections())
            raise BadRequest(f"section: {unknown[0][:40]!r} is not one of {known}")
        if not wanted:
            return JSONResponse({"sections": collect_status(self.rt)})
        out: dict[str, Any] = {}
        for name in wanted:
            try:
                out[name] = SECTIONS[name].collect(self.rt)
            except Exception as exc:  # as `status` does: the error, not a trace
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return JSONResponse({"sections": out})

    # --- OPML ------------------------------------------------------------------------------

    async def export_opml(self, request: Request) -> Response:
        owner = text_param(request, "owner", 4200) or None
        tag = text_param(request, "tag") or None
        title = text_param(request, "title") or "watchkeeper"
        text = export_opml(selected(self.rt, "feed", owner, tag), title=title, masked=True)
        return Response(
            text,
            media_type="text/x-opml",
            headers={"Content-Disposition": 'attachment; filename="watchkeeper.opml"'},
        )

    async def import_opml(self, request: Request) -> Response:
        interval = text_param(request, "interval", 40) or None
        dry_run = flag_param(request, "dry_run")
        data = await request.body()
        if not data:
            raise BadRequest("body: empty (POST the OPML file as the body)")
        if len(data) > self.rt.settings.opml_max_bytes:
            limit = self.rt.settings.opml_max_bytes
            raise BadRequest(
                f"OPML upload: larger than WATCHKEEPER_OPML_MAX_BYTES={limit} bytes; "
                "nothing imported"
            )
        try:
            imported = await run_in_threadpool(self._import, data, interval, dry_run)
        except OpmlError as exc:
            raise BadRequest(str(exc)) from None
        except RegistryError as exc:  # a feed's problem (400), or the registry's (409)
            conflict = any(CONFLICTS in p or "WATCHKEEPER_MAX_SOURCES" in p for p in exc.problems)
            raise Refused(409 if conflict else 400, exc.problems) from None
        return JSONResponse(imported.as_json(), status_code=200 if dry_run else 201)

    def _import(self, data: bytes, interval: str | None, dry_run: bool) -> Imported:
        """Parse and import, off the event loop (a large file takes a while)."""
        parsed = parse_opml(data, "upload", self.rt.settings.max_sources)
        return import_parsed(self.rt, parsed, "upload", interval, dry_run)
