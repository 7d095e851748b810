"""One-line refusals, as text for the dashboard and as JSON for the REST API.

The checks every request passes before an endpoint sees it (``hosts``, ``body``, ``auth``)
answer in the form the client reads: a page or a script gets a line of text, a request under
``/api/v1/`` gets the API's error object, ``{"error": line, "problems": [line]}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Scope

API_PREFIX = "/api/v1"


def is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def problems_body(problems: list[str]) -> dict[str, object]:
    """The API's error object: the first line, and every line."""
    return {"error": problems[0] if problems else "error", "problems": problems}


def refusal(
    scope: Scope, status: int, line: str, headers: Mapping[str, str] | None = None
) -> Response:
    if is_api(str(scope.get("path", ""))):
        return JSONResponse(problems_body([line]), status_code=status, headers=headers)
    return PlainTextResponse(line + "\n", status_code=status, headers=headers)
