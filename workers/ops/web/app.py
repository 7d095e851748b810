"""The dashboard's routes: pages, the fragments they refresh live, and the actions.

Every page is server-rendered (Jinja2); htmx swaps in a fresh fragment of each table every
``WATCHKEEPER_WEB_REFRESH`` seconds, and the memory page redraws its uPlot charts from
``/api/memory``. Both libraries are vendored under ``static/`` (no CDN: works offline). All
state is read from Redis per request, as ``watchkeeper status`` reads it: the dashboard holds
none, so any number of them can run. Actions are POSTs.

Before a route sees a request: ``hosts`` refuses foreign Host headers (DNS rebinding) and
actions from other origins, ``body`` reads the body under its byte and time caps, ``auth``
checks the session, the login and the CSRF token.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

import workers.guard.dead_letters
import workers.ops.status  # noqa: F401 (declare the tasks box and the runtime's sections)
from workers.core.dead_letters import BOXES, Dispatch
from workers.core.redact import redact_text
from workers.core.runtime import Runtime
from workers.core.sources_file import ConfigError, Source
from workers.core.status_sections import SECTIONS
from workers.ops.sources import manage
from workers.ops.web.api import OPML_PATH, api_mount
from workers.ops.web.api.access import ApiAccess
from workers.ops.web.auth import Access, Guard, throttled
from workers.ops.web.body import BodyLimit
from workers.ops.web.editing import Editing
from workers.ops.web.hosts import Hosts, SameOrigin
from workers.ops.web.items import STREAMS, BadQuery, page_params, read_page
from workers.ops.web.memory import memory_data
from workers.ops.web.replies import refusal
from workers.ops.web.sources import source_rows
from workers.ops.web.throttle import Throttle, attempt, client_of
from workers.polling.pause import set_paused

log = logging.getLogger("watchkeeper.web")
HERE = Path(__file__).parent
PANELS = ("locations", "tcp")
"""Status sections shown beside the memory charts (location buffer health, TCP counters)."""
PANEL_HIDDEN = ("keys.", "limits.")
"""Rows of those sections left to ``watchkeeper status`` (key names and fixed limits)."""
DEAD_SHOWN = 50
UPLOAD_PATHS = (OPML_PATH, "/opml/import")
"""Requests whose body may be an OPML file (``WATCHKEEPER_WEB_MAX_UPLOAD``)."""


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A status section as ``(dotted name, value)`` rows, for a generic table."""
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value[:10]) if value else "-")]
    return [(prefix, value)]


class Dashboard:
    """The endpoints, sharing the runtime, the access rules and the templates."""

    def __init__(self, rt: Runtime, dispatch: Dispatch, access: Access, queue: str) -> None:
        self.rt, self.dispatch, self.access, self.queue = rt, dispatch, access, queue
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        ctx.update(
            csrf=request.state.csrf,
            read_only=self.access.read_only,
            refresh=self.rt.settings.web_refresh,
            login=bool(self.access.token),
            path=request.url.path,
        )
        return self.templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def login_page(self, request: Request, status_code: int) -> Response:
        return self.render(request, "login.html", status_code, error=False)

    def page(self, request: Request, full: str, fragment: str, **ctx: Any) -> Response:
        """The whole page, or only its live part when htmx asks for it."""
        return self.render(request, fragment if request.headers.get("hx-request") else full, **ctx)

    # --- pages and their live fragments ---------------------------------------------------

    async def index(self, request: Request) -> Response:
        return RedirectResponse("/sources", status_code=303)

    async def sources(self, request: Request) -> Response:
        return self.page(request, "sources.html", "_sources.html", rows=source_rows(self.rt))

    async def items(self, request: Request) -> Response:
        try:
            stream, query, before = page_params(request.query_params)
        except BadQuery as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        found = read_page(self.rt, stream, query, before)
        return self.page(request, "items.html", "_items.html", page=found, streams=STREAMS)

    async def dead(self, request: Request) -> Response:
        boxes = []
        for box in BOXES:
            try:
                boxes.append((box, box.list(self.rt, DEAD_SHOWN), box.size(self.rt), ""))
            except Exception as exc:  # one broken box never hides the others
                boxes.append((box, [], {}, f"{type(exc).__name__}: {exc}"))
        return self.page(request, "dead.html", "_dead.html", boxes=boxes)

    async def memory(self, request: Request) -> Response:
        panels = []
        for name in PANELS:
            section = SECTIONS.get(name)
            if section is None:
                continue
            try:
                rows = flatten(section.collect(self.rt))
                panels.append((name, [r for r in rows if not r[0].startswith(PANEL_HIDDEN)]))
            except Exception as exc:  # a failing section shows its error, the page stays
                panels.append((name, [("error", f"{type(exc).__name__}: {exc}")]))
        return self.page(request, "memory.html", "_panels.html", panels=panels)

    async def memory_api(self, request: Request) -> Response:
        return JSONResponse(memory_data(self.rt))

    # --- actions --------------------------------------------------------------------------

    @staticmethod
    def done(request: Request, to: str, message: str) -> Response:
        """htmx: a message and a ``refresh`` event (the tables reload); a plain form: back."""
        log.info("[web] %s", message)
        if request.headers.get("hx-request"):
            return Response(message, headers={"HX-Trigger": "refresh"})
        return RedirectResponse(to, status_code=303)

    async def source_action(self, request: Request) -> Response:
        source = self.rt.sources.get(request.path_params["name"])
        action = request.path_params["action"]
        if source is None or action not in ("pause", "resume", "check"):
            return Response("no such source or action", status_code=404)
        back = "/sources"
        if (await request.form()).get("back") == "source":  # from the source's own page
            back = f"/sources/{source.name}"
        if action == "check":
            return self.check(request, source, back)
        set_paused(self.rt.redis, self.rt.settings, source, action == "pause")
        return self.done(request, back, f"{source.name}: {action}")

    def check(self, request: Request, source: Source, back: str) -> Response:
        """Check now: one forced poll, through beat's queued marker and queue cap."""
        done = manage.check(self.rt, source, self.dispatch, self.queue)
        if done.failed:
            log.warning("[web] %s", done.line)
            return PlainTextResponse(done.line + "\n", status_code=503)
        return self.done(request, back, done.line)

    async def dead_action(self, request: Request) -> Response:
        box = BOXES.get(request.path_params["box"])
        action = request.path_params["action"]
        ref = str((await request.form()).get("ref", ""))
        if box is None or not ref or action not in ("retry", "drop"):
            return Response("no such dead letter", status_code=404)
        try:
            handled = (
                box.retry(self.rt, ref, self.dispatch)
                if action == "retry"
                else box.drop(self.rt, ref)
            )
        except ValueError as exc:
            return Response(str(exc), status_code=409)
        if not handled:
            return Response("no such dead letter", status_code=404)
        return self.done(request, "/dead", f"dead letter {box.name} {ref}: {action}")

    async def login(self, request: Request) -> Response:
        """The login form; a sign-in counts against the client's attempts (``throttle``) and
        starts a new session (the visitor's id and CSRF token die with it)."""
        if request.method == "GET":
            return self.login_page(request, 200)
        client = client_of(request.scope)
        wait = attempt(self.rt, client)
        if wait:
            log.warning("[web] %s: too many sign-in attempts; refused for %d s", client, wait)
            return throttled(wait)
        form = await request.form()
        if not self.access.token_matches(str(form.get("token", ""))):
            return self.render(request, "login.html", 401, error=True)
        response = RedirectResponse("/sources", status_code=303)
        self.access.set_cookie(response, request, self.access.new_session(signed_in=True))
        return response


def create_app(
    rt: Runtime,
    dispatch: Dispatch,
    *,
    token: str = "",
    read_only: bool = False,
    host: str = "127.0.0.1",
    queue: str = "celery",
    api_token: str | None = None,
    api_read_tokens: tuple[str, ...] | None = None,
) -> Starlette:
    """The ASGI app bound to ``host``. ``dispatch`` sends a Celery task by name ("check now",
    retry); ``queue`` is the broker queue polls go to (its length caps "check now"). The REST
    API's tokens default to the settings' (``WATCHKEEPER_API_TOKEN``, ``…_READ_TOKENS``)."""
    s = rt.settings
    access = Access(token=token, read_only=read_only, max_age=s.web_session_max_age)
    api_access = ApiAccess(
        token=s.api_token if api_token is None else api_token,
        read_tokens=s.api_read_token_list if api_read_tokens is None else api_read_tokens,
        open_reads=not token,
        read_only=read_only,
        throttle=Throttle(rt),
    )
    d = Dashboard(rt, dispatch, access, queue)
    e = Editing(rt, dispatch, queue, d.render, signed=bool(access.token))
    routes = [
        api_mount(rt, dispatch, api_access, queue),
        Route("/", d.index),
        Route("/sources", d.sources),
        Route("/add-source", e.add_form),
        Route("/add-source", e.add, methods=["POST"]),
        Route("/bulk", e.bulk, methods=["POST"]),
        Route("/opml/export", e.opml_export),
        Route("/opml/import", e.opml_import, methods=["POST"]),
        Route("/sources/{name}", e.detail),
        Route("/sources/{name}/edit", e.edit_form),
        Route("/sources/{name}/edit", e.edit, methods=["POST"]),
        Route("/sources/{name}/remove", e.remove, methods=["POST"]),
        Route("/items", d.items),
        Route("/dead", d.dead),
        Route("/memory", d.memory),
        Route("/api/memory", d.memory_api),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/sources/{name}/{action}", d.source_action, methods=["POST"]),
        Route("/dead/{box}/{action}", d.dead_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [  # outermost first
        Middleware(SameOrigin, hosts=Hosts.of(host, s.web_allowed_host_list)),
        Middleware(
            BodyLimit,
            max_bytes=s.web_max_body,
            timeout=s.web_body_timeout,
            upload_bytes=s.web_max_upload,
            upload_paths=UPLOAD_PATHS,
        ),
        Middleware(Guard, access=access, login_page=d.login_page, throttle=Throttle(rt)),
    ]
    handlers = {
        ConfigError: config_problem,
        redis.RedisError: redis_problem,
        HTTPException: http_problem,
    }
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


async def http_problem(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such page, a method not allowed): JSON under the API."""
    status = getattr(exc, "status_code", 500)
    detail = str(getattr(exc, "detail", "") or "error")
    return refusal(request.scope, status, detail, getattr(exc, "headers", None))


async def config_problem(request: Request, exc: Exception) -> Response:
    """A broken sources file (edited while running): its problems, one a line, not a trace."""
    problems = getattr(exc, "problems", None) or [str(exc)]
    return PlainTextResponse("\n".join(problems) + "\n", status_code=503)


async def redis_problem(request: Request, exc: Exception) -> Response:
    """Redis unreachable or refusing: one line in the log and the reply, not a trace."""
    why = redact_text(f"{type(exc).__name__}: {exc}").replace("\n", " ")[:300]
    log.warning("[web] %s %s: Redis: %s", request.method, request.url.path, why)
    return PlainTextResponse(f"Redis: {why}\n", status_code=503)
