"""The dashboard's source editing: add (with "test it now"), a source's page, edit, remove,
bulk actions on failing sources, and OPML import and export.

Pages are plain HTML forms (they work without JavaScript); every action is a POST that passes
the Origin check and carries the session's CSRF token (``auth``), and the rules are those of
the API and ``watchkeeper sources`` (``workers.ops.sources.manage``): a sources file's source is
changed in that file, what is added here is owned by ``api``, every problem is ``check``'s line.

    GET  /add-source?kind=K          the form            POST /add-source           preview / save
    GET  /sources/{name}             its page            POST /sources/{name}/remove
    GET  /sources/{name}/edit        the form            POST /sources/{name}/edit  preview / save
    POST /bulk                       retry now, pause or remove the failing sources ticked
    POST /opml/import                upload (WATCHKEEPER_WEB_MAX_UPLOAD)
    GET  /opml/export                download
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from workers.core.dead_letters import Dispatch
from workers.core.runtime import Runtime
from workers.core.source_registry import Definition
from workers.core.sources_file import ConfigError, Source
from workers.ops.sources import manage
from workers.ops.sources.commands import selected
from workers.ops.sources.imports import import_parsed
from workers.ops.sources.opml import OpmlError, export_opml, parse_opml
from workers.ops.web.forms import KEEP, form_fields, table_of
from workers.ops.web.preview import Preview, preview
from workers.polling.kinds import KINDS
from workers.store.source_writes import RegistryError

log = logging.getLogger("watchkeeper.web")

Render = Callable[..., Response]
BULK = {"retry": "retry now", "pause": "pause", "remove": "remove"}
BULK_MAX = 1000
"""Sources one bulk action takes at most."""


class Editing:
    def __init__(
        self, rt: Runtime, dispatch: Dispatch, queue: str, render: Render, signed: bool = False
    ) -> None:
        self.rt, self.dispatch, self.queue, self.render = rt, dispatch, queue, render
        self.signed = signed
        """Whether the dashboard has a token (WATCHKEEPER_WEB_TOKEN): only then may a form name
        environment credentials."""

    # --- add and edit ------------------------------------------------------------------------

    def form_page(
        self,
        request: Request,
        kind: str,
        *,
        editing: Definition | None = None,
        form: Mapping[str, str] | None = None,
        problems: list[str] | None = None,
        tested: Preview | None = None,
        status_code: int = 200,
    ) -> Response:
        table = editing.table if editing is not None else None
        if editing is not None:
            table = {"name": editing.name, **editing.table}
        return self.render(
            request,
            "source_form.html",
            status_code,
            kind=kind,
            kinds=[k.name for k in KINDS],
            fields=form_fields(kind, table, form, editing=editing is not None),
            editing=editing,
            # the version the form was first shown with: saved only over that version
            version=(form or {}).get("version")
            or (self.rt.sources.version(editing) if editing else ""),
            problems=problems or [],
            preview=tested,
            keep=KEEP,
        )

    async def add_form(self, request: Request) -> Response:
        kind = request.query_params.get("kind", "feed")
        if kind not in KINDS:
            kind = "feed"
        return self.form_page(request, kind)

    async def add(self, request: Request) -> Response:
        form = await self.form(request)
        kind = form.get("kind", "")
        if kind not in KINDS:
            return self.message(request, 400, "Add a source", [f"kind {kind[:40]!r}: unknown"])
        table, problems = table_of(kind, form)
        name = str(table.pop("name"))
        d = Definition(name, kind, manage.API_OWNER, table)
        return await self.submit(request, kind, form, d, problems, None)

    async def edit_form(self, request: Request) -> Response:
        d = self.definition(request)
        if isinstance(d, Response):
            return d
        return self.form_page(request, d.kind, editing=d)

    async def edit(self, request: Request) -> Response:
        old = self.definition(request)
        if isinstance(old, Response):
            return old
        form = await self.form(request)
        table, problems = table_of(old.kind, form, old.table, old.name)
        table.pop("name")
        d = Definition(old.name, old.kind, old.owner, table)
        return await self.submit(request, old.kind, form, d, problems, old)

    async def submit(
        self,
        request: Request,
        kind: str,
        form: Mapping[str, str],
        d: Definition,
        problems: list[str],
        old: Definition | None,
    ) -> Response:
        """Preview or save a submitted form; its problems shown above it, one a line."""

        def again(status: int, lines: list[str], tested: Preview | None = None) -> Response:
            return self.form_page(
                request,
                kind,
                editing=old,
                form=form,
                problems=lines,
                tested=tested,
                status_code=status,
            )

        if problems:
            return again(400, problems)
        try:
            if form.get("do") == "preview" or not self.signed:
                source = self.build(d)
                unsigned = self.credentials_problem(d.name, source)
                if unsigned:
                    return again(403, [unsigned])
            if form.get("do") == "preview":
                return again(200, [], await run_in_threadpool(preview, self.rt, source))
            if old is None:
                manage.create(self.rt, kind, {"name": d.name, **d.table})
            else:
                manage.change(
                    self.rt, old.name, d.table, if_match=form.get("version") or None, read=old
                )
        except manage.Refused as exc:
            return again(exc.status, exc.problems)
        log.info("[web] %s: %s (%s)", d.name, "added" if old is None else "changed", kind)
        return RedirectResponse(f"/sources/{d.name}", status_code=303)

    def credentials_problem(self, name: str, source: Source) -> str:
        """Why this dashboard may not use the source's ``env:`` credentials, or "".

        Without WATCHKEEPER_WEB_TOKEN the loopback dashboard answers every local user; naming
        ``auth = "env:SECRET"`` on a URL of one's choosing (or previewing it) would send the
        worker's secret there. So only a signed-in dashboard — or the CLI and the API, which
        need a token to write — may name environment credentials."""
        if self.signed:
            return ""
        variables = source.request.variables()
        if not variables:
            return ""
        field = variables[0][0]
        return (
            f"source '{name}': {field}: environment credentials can be named here only when the "
            "dashboard has a token (WATCHKEEPER_WEB_TOKEN); use `watchkeeper sources` or the API"
        )

    def build(self, d: Definition) -> Source:
        manage.checked(self.rt, d)
        try:
            return d.build()
        except ConfigError as exc:
            raise manage.refused(400, exc) from None

    # --- a source's page, remove -------------------------------------------------------------

    def definition(self, request: Request) -> Definition | Response:
        try:
            return manage.definition_of(self.rt, str(request.path_params["name"]))
        except manage.Refused as exc:
            return self.message(request, exc.status, "No such source", exc.problems)

    async def detail(self, request: Request) -> Response:
        d = self.definition(request)
        if isinstance(d, Response):
            return d
        return self.render(
            request, "source.html", source=manage.shown(self.rt, d), file_owned=is_filed(d)
        )

    async def remove(self, request: Request) -> Response:
        form = await self.form(request)
        name = str(request.path_params["name"])
        if form.get("confirm") != "yes":
            return self.message(request, 400, "Remove", [f"{name}: tick the box to confirm"])
        try:
            manage.remove(self.rt, name)
        except manage.Refused as exc:
            return self.message(request, exc.status, "Remove", exc.problems)
        log.info("[web] %s: removed", name)
        return RedirectResponse("/sources", status_code=303)

    # --- bulk ----------------------------------------------------------------------------------

    async def bulk(self, request: Request) -> Response:
        form = await request.form()
        action = str(form.get("action", ""))
        names = [str(n) for n in form.getlist("names")][:BULK_MAX]
        if action not in BULK or not names:
            return self.message(request, 400, "Failing sources", ["choose sources and an action"])
        if action == "remove" and form.get("confirm") != "yes":
            return self.message(request, 400, "Failing sources", ["tick the box to confirm"])
        lines = [self.one(action, name) for name in names]
        log.info("[web] bulk %s of %d sources", action, len(names))
        return self.message(request, 200, f"Failing sources: {BULK[action]}", lines)

    def one(self, action: str, name: str) -> str:
        try:
            if action == "remove":
                manage.remove(self.rt, name)
                return f"{name}: removed"
            source = manage.source_of(self.rt, name)
            if action == "pause":
                manage.pause(self.rt, name, True)
                return f"{name}: paused"
            return manage.check(self.rt, source, self.dispatch, self.queue).line
        except manage.Refused as exc:
            return "; ".join(exc.problems)

    # --- OPML ----------------------------------------------------------------------------------

    async def opml_export(self, request: Request) -> Response:
        return Response(
            export_opml(selected(self.rt, "feed"), masked=True),
            media_type="text/x-opml",
            headers={"Content-Disposition": 'attachment; filename="watchkeeper.opml"'},
        )

    async def opml_import(self, request: Request) -> Response:
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return self.message(request, 400, "Import OPML", ["OPML upload: choose a file"])
        data = await upload.read(self.rt.settings.opml_max_bytes + 1)
        interval = str(form.get("interval", "")).strip() or None
        dry_run = form.get("dry_run") == "yes"
        label = (upload.filename or "upload")[:100]
        try:
            if len(data) > self.rt.settings.opml_max_bytes:
                limit = self.rt.settings.opml_max_bytes
                raise OpmlError(
                    f"OPML {label}: larger than WATCHKEEPER_OPML_MAX_BYTES={limit} bytes"
                )
            imported = await run_in_threadpool(self._import, data, label, interval, dry_run)
        except OpmlError as exc:
            return self.message(request, 400, "Import OPML", [str(exc)])
        except RegistryError as exc:
            return self.message(request, 400, "Import OPML", exc.problems)
        return self.message(request, 200, "Import OPML", [imported.head(), *imported.diff.lines()])

    def _import(self, data: bytes, label: str, interval: str | None, dry_run: bool) -> Any:
        parsed = parse_opml(data, label, self.rt.settings.max_sources)
        return import_parsed(self.rt, parsed, label, interval, dry_run)

    # --- shared --------------------------------------------------------------------------------

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def message(self, request: Request, status: int, title: str, lines: list[str]) -> Response:
        return self.render(request, "message.html", status, title=title, lines=lines)


def is_filed(d: Definition) -> bool:
    return d.owner.startswith("file:")
