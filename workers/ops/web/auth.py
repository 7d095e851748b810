"""Who may see the dashboard and who may act on it.

* Loopback without a token: anyone on this machine (like ``watchkeeper status``). Any other
  address needs ``WATCHKEEPER_WEB_TOKEN`` (``serve.check_bind`` refuses to start without it).
* Every browser gets a session: a random id in an HttpOnly, SameSite=Strict cookie, signed
  (HMAC) with a key derived from the token (so it survives a restart and works on every
  dashboard sharing the token) or, without a token, with this process's random key. The
  signature covers when the session started: after ``WATCHKEEPER_WEB_SESSION_MAX_AGE`` the
  cookie is worth nothing (a stolen or forgotten one does not sign anyone in for ever).
* With a token, every request but the login form and the static files must be signed in: by
  ``Authorization: Bearer <token>``, or by a session the login form signed in (the cookie is
  not the token and does not contain it). Others get 401 and the login form. Signing in starts
  a new session, so a session id known before the login is worth nothing after it.
* Every POST must carry its session's CSRF token (form field ``csrf`` or header
  ``X-CSRF-Token``): an HMAC of the session id, shown only in pages served to that session, so
  a token is refused in any other session (and without one). Requests signed in by the bearer
  header (which no browser adds on its own) share one token, shown only to them. Without it:
  403. ``--read-only`` refuses every action (403).
* A wrong bearer token counts against the client's sign-in attempts, as a wrong login does
  (``throttle``); over the limit every bearer request, the right token's too, gets 429.

Host, Origin (``hosts``) and body size (``body``) are checked before any of this. The REST
API (``/api/v1/``) has its own bearer tokens (``workers.ops.web.api.access``): no session, no
cookie and no CSRF token there (no browser adds an ``Authorization`` header on its own).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.ops.web.replies import is_api
from workers.ops.web.throttle import Throttle

COOKIE = "wk_session"
CSRF_HEADER = "x-csrf-token"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MULTIPART_HEAD = 8192
"""Bytes of a multipart body searched for the CSRF field (forms put it before the file)."""
BOUNDARY_RE = re.compile(r'boundary="?([^";]{1,70})"?')
OPEN_PATHS = ("/login", "/static/")
ISSUED_RE = re.compile(r"^[0-9]{1,12}$")
CLOCK_SLACK = 300
"""Seconds a session may seem to start in the future (dashboards sharing a token on machines
whose clocks differ a little)."""
BEARER = "bearer"
"""The session id of requests signed in by the bearer header (no cookie)."""


@dataclass(frozen=True)
class Session:
    sid: str
    signed_in: bool
    new: bool = False
    """Started by this request: its cookie goes out with the response."""
    issued: int = field(default_factory=lambda: int(time.time()))
    """When it started (Unix seconds): signed into its cookie, which is refused after
    ``Access.max_age``."""


def cookie_name(scope: Scope) -> str:
    """One cookie per dashboard port: browsers share cookies across the ports of a host, and
    two dashboards (two keys) would otherwise keep replacing each other's."""
    server = scope.get("server")
    return f"{COOKIE}_{server[1]}" if server and server[1] else COOKIE


@dataclass(frozen=True)
class Access:
    token: str = ""
    read_only: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    max_age: int = 43200
    """Seconds a session lasts from its start (WATCHKEEPER_WEB_SESSION_MAX_AGE)."""

    @cached_property
    def _key(self) -> bytes:
        if self.token:
            return hashlib.sha256(b"wk-web|" + self.token.encode()).digest()
        return self.secret

    def _mac(self, what: str) -> str:
        return hmac.new(self._key, what.encode(), hashlib.sha256).hexdigest()

    def csrf(self, sid: str) -> str:
        return self._mac(f"csrf|{sid}")

    def cookie(self, session: Session) -> str:
        flag = "in" if session.signed_in else "out"
        payload = f"{session.sid}|{flag}|{session.issued}"
        return f"{payload.replace('|', '.')}.{self._mac(f'session|{payload}')}"

    def session_of(self, request: Request) -> Session | None:
        """The session the request's cookie names, if the cookie is one this dashboard set and
        the session is younger than ``max_age``."""
        value = request.cookies.get(cookie_name(request.scope), "")
        sid, flag, issued, mac = [*value.split(".", 3), "", "", ""][:4]
        if not sid or flag not in ("in", "out") or not ISSUED_RE.match(issued):
            return None
        if not hmac.compare_digest(mac, self._mac(f"session|{sid}|{flag}|{issued}")):
            return None
        if not -CLOCK_SLACK <= time.time() - int(issued) <= self.max_age:
            return None
        return Session(sid, signed_in=flag == "in" or not self.token, issued=int(issued))

    @staticmethod
    def new_session(signed_in: bool) -> Session:
        return Session(secrets.token_hex(16), signed_in, new=True)

    def presented(self, request: Request) -> str | None:
        """The token of the request's bearer header; None without one, or when the dashboard
        has no token to compare it with."""
        header = request.headers.get("authorization", "")
        if not self.token or not header.lower().startswith("bearer "):
            return None
        return header[7:].strip()

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        """Set the session's cookie: Secure when served over https, here or at a proxy in front
        (whoever claims it only restricts the cookie to https)."""
        response.set_cookie(
            cookie_name(request.scope),
            self.cookie(session),
            max_age=self.max_age,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto") == "https",
        )

    @staticmethod
    def given_csrf(request: Request) -> str:
        """The token a POST carries: its header, or its form's field (from the body ``body``
        read, so the endpoint still reads it whole)."""
        given = request.headers.get(CSRF_HEADER, "")
        content_type = request.headers.get("content-type", "")
        body: bytes = getattr(request.state, "body", b"")
        if not given and content_type.startswith(FORM):
            given = parse_qs(body.decode("utf-8", "replace")).get("csrf", [""])[0]
        elif not given and content_type.startswith(MULTIPART):
            given = multipart_field(body[:MULTIPART_HEAD], content_type, "csrf")
        return given


def multipart_field(head: bytes, content_type: str, name: str) -> str:
    """A text field of a multipart form from the start of its body (an upload form carries its
    CSRF token before its file); empty when it is not there."""
    found = BOUNDARY_RE.search(content_type)
    if not found:
        return ""
    delimiter = b"--" + found.group(1).encode("latin-1")
    for part in head.split(delimiter)[1:9]:
        headers, sep, rest = part.partition(b"\r\n\r\n")
        if sep and f'name="{name}"'.encode() in headers and rest.endswith(b"\r\n"):
            return rest[:-2].decode("utf-8", "replace")
    return ""


class Guard:
    """Pure ASGI middleware applying the rules above to every HTTP request. What it decided is
    in ``request.state``: ``session`` (None for bearer requests and static files) and
    ``csrf``, the token the pages of this response carry."""

    def __init__(
        self,
        app: ASGIApp,
        access: Access,
        login_page: Callable[[Request, int], Response],
        throttle: Throttle | None = None,
    ) -> None:
        self.app, self.access, self.login_page = app, access, login_page
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if is_api(scope["path"]):  # the API's own tokens apply (api.access): no session
            await self.app(scope, receive, self.with_headers(request, send, None))
            return
        static = scope["path"].startswith("/static/")
        presented = self.access.presented(request)
        bearer = presented is not None and self.access.token_matches(presented)
        if presented is not None and self.throttle is not None:
            wait = self.throttle.bearer(scope, bearer)
            if wait:
                await throttled(wait)(scope, receive, self.with_headers(request, send, None))
                return
        session = self.access.session_of(request)
        if session is None and not bearer and not static:
            session = self.access.new_session(signed_in=not self.access.token)
        state = scope.setdefault("state", {})
        state["session"] = session
        state["csrf"] = self.access.csrf(session.sid if session else BEARER)
        send = self.with_headers(request, send, None if static else session)
        refusal = self.refusal(request, session, bearer)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, request: Request, session: Session | None, bearer: bool) -> Response | None:
        path = request.scope["path"]
        signed_in = not self.access.token or bearer or (session is not None and session.signed_in)
        if not path.startswith(OPEN_PATHS) and not signed_in:
            return self.login_page(request, 401)
        if request.method == "POST":
            given = self.access.given_csrf(request)
            if not given or not hmac.compare_digest(given, request.state.csrf):
                return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
            if self.access.read_only and path != "/login":
                return PlainTextResponse("the dashboard is read-only\n", status_code=403)
        return None

    def with_headers(self, request: Request, send: Send, session: Session | None) -> Send:
        """``send`` adding the security headers, and to a page (it carries the session's CSRF
        token: no cache may keep it) ``no-store`` and a new session's cookie."""
        page = not request.scope["path"].startswith("/static/")
        cookie = ""
        if session is not None and session.new:
            carrier = Response()
            self.access.set_cookie(carrier, request, session)
            cookie = carrier.headers["set-cookie"]
        name = cookie_name(request.scope) + "="

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for header, value in SECURITY_HEADERS.items():
                    headers.setdefault(header, value)
                if page:
                    headers.setdefault("Cache-Control", "no-store")
                set_already = any(v.startswith(name) for v in headers.getlist("set-cookie"))
                if cookie and not set_already:
                    headers.append("set-cookie", cookie)
            await send(message)

        return sending


def throttled(wait: int) -> Response:
    """The answer to a client over its sign-in attempts (a form's or a bearer header's)."""
    return PlainTextResponse(
        f"too many sign-in attempts; try again in {wait} s\n",
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
