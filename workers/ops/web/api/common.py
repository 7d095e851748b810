"""What every REST API endpoint shares: the token check, JSON bodies, query parameters and the
error object — one line per problem, worded as the CLI words it (``source 'x': interval: …``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.core.redact import redact_text
from workers.ops.sources.manage import Refused
from workers.ops.web.api.access import ApiAccess, Denied
from workers.ops.web.replies import problems_body

log = logging.getLogger("watchkeeper.api")

Handler = Callable[[Request], Awaitable[Response]]
MAX_LIMIT = 200
"""Entries of one page at most (sources, items, dead letters)."""


class BadRequest(Exception):
    """A parameter or body the API cannot use (400): one line naming it."""


def error(status: int, problems: list[str], headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(problems_body(problems), status_code=status, headers=headers)


def endpoint(access: ApiAccess, write: bool = False) -> Callable[[Handler], Handler]:
    """Check the token (a write needs the write token), then run the handler; every refusal
    becomes the API's error object."""

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def run(request: Request) -> Response:
            try:
                access.require(request, write)
                return await handler(request)
            except Denied as exc:
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
                if exc.retry_after:
                    headers["Retry-After"] = str(exc.retry_after)
                return error(exc.status, [exc.line], headers or None)
            except BadRequest as exc:
                return error(400, [str(exc)])
            except Refused as exc:
                return error(exc.status, exc.problems)
            except redis.RedisError as exc:
                why = redact_text(f"{type(exc).__name__}: {exc}").replace("\n", " ")[:300]
                log.warning("[api] %s %s: Redis: %s", request.method, request.url.path, why)
                return error(503, [f"Redis: {why}"])

        return run

    return wrap


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number watchkeeper takes")


async def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object (the body middleware already bounded it)."""
    body = await request.body()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise BadRequest(f"body: not JSON ({why})") from None
    if not isinstance(value, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(value).__name__}")
    _check(value)
    return value


MAX_DEPTH = 8
"""Nesting of a JSON body at most (a source's table nests two levels)."""


def _check(value: Any) -> None:
    """Finite numbers, and nesting no deeper than ``MAX_DEPTH`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise BadRequest("body: numbers must be finite")
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"body: nested deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def limit_of(request: Request, default: int = 50) -> int:
    text = request.query_params.get("limit", "")
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: {text[:20]!r} is not a number from 1 to {MAX_LIMIT}")
    return int(text)


def text_param(request: Request, name: str, longest: int = 200) -> str:
    value = request.query_params.get(name, "")
    if len(value) > longest:
        raise BadRequest(f"{name}: {len(value)} characters, over {longest}")
    return value


def flag_param(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise BadRequest(f"{name}: {value[:20]!r} is not true or false")
