"""The REST API, ``/api/v1/``, served by the dashboard's web process (same Host, Origin and
body checks; its own tokens: ``access``).

    GET    /sources?kind&owner&tag&q&state&cursor&limit   list, a page at a time
    POST   /sources                                       create (owner api)
    GET    /sources/{name}        PATCH (merge patch)     DELETE
    POST   /sources/{name}/pause | resume | check
    GET    /items/{stream}?q&source&tag&cursor&limit      a stream's entries, newest first
    GET    /dead-letters?box&limit                         POST /dead-letters/{box}/retry | drop
    GET    /status?section=…                               the sections of `watchkeeper status`
    GET    /opml?owner&tag   POST /opml?interval&dry_run  OPML export and import
    GET    /openapi.json                                   the OpenAPI 3.1 document
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from workers.core.dead_letters import Dispatch
from workers.core.runtime import Runtime
from workers.ops.web.api.access import ApiAccess
from workers.ops.web.api.common import endpoint
from workers.ops.web.api.data import DataApi
from workers.ops.web.api.openapi import document
from workers.ops.web.api.sources import SourcesApi
from workers.ops.web.replies import API_PREFIX

OPML_PATH = API_PREFIX + "/opml"
"""The API path whose body may be an OPML file (``WATCHKEEPER_WEB_MAX_UPLOAD``)."""


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


def api_mount(rt: Runtime, dispatch: Dispatch, access: ApiAccess, queue: str) -> BaseRoute:
    s, d = SourcesApi(rt, dispatch, queue), DataApi(rt, dispatch)

    def route(path: str, handler: object, method: str, write: bool = False) -> Route:
        return Route(path, endpoint(access, write)(handler), methods=[method])  # type: ignore[arg-type]

    routes = [
        route("/sources", s.list, "GET"),
        route("/sources", s.create, "POST", True),
        route("/sources/{name}", s.get, "GET"),
        route("/sources/{name}", s.patch, "PATCH", True),
        route("/sources/{name}", s.delete, "DELETE", True),
        route("/sources/{name}/pause", s.pause, "POST", True),
        route("/sources/{name}/resume", s.resume, "POST", True),
        route("/sources/{name}/check", s.check, "POST", True),
        route("/items/{stream}", d.items, "GET"),
        route("/dead-letters", d.dead_letters, "GET"),
        route("/dead-letters/{box}/retry", d.retry, "POST", True),
        route("/dead-letters/{box}/drop", d.drop, "POST", True),
        route("/status", d.status, "GET"),
        route("/opml", d.export_opml, "GET"),
        route("/opml", d.import_opml, "POST", True),
        route("/openapi.json", endpoint(access)(openapi), "GET"),
    ]
    return Mount(API_PREFIX, routes=routes)
