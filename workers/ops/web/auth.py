"""Who may see the dashboard and who may act on it.

* Loopback without a token: anyone on this machine (like ``watchkeeper status``). Any other
  address needs ``WATCHKEEPER_WEB_TOKEN`` (``serve.check_bind`` refuses to start without it).
* With a token, every request but the login form and the static files must carry it: as
  ``Authorization: Bearer <token>``, or as the cookie the login form sets (an HMAC of the
  token, so the cookie is not the token itself). Others get 401 and the login form.
* Every POST must carry the CSRF token (form field ``csrf`` or header ``X-CSRF-Token``),
  which only pages of this dashboard contain: a page elsewhere cannot read it, so it cannot
  make a logged-in browser act. Without it: 403. ``--read-only`` refuses every action (403).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "wk_session"
CSRF_HEADER = "x-csrf-token"
FORM = "application/x-www-form-urlencoded"
OPEN_PATHS = ("/login", "/static/")


@dataclass(frozen=True)
class Access:
    token: str = ""
    read_only: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def _mac(self, what: str) -> str:
        key = self.token.encode() if self.token else self.secret
        return hmac.new(key, what.encode(), hashlib.sha256).hexdigest()

    @property
    def session(self) -> str:
        """The login cookie's value: derived from the token, so it survives a restart."""
        return self._mac("session")

    @property
    def csrf(self) -> str:
        """The CSRF token embedded in every page (per process when there is no token)."""
        return self._mac("csrf")

    def signed_in(self, request: Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and hmac.compare_digest(
            header[7:].strip().encode(), self.token.encode()
        ):
            return True
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.session)

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    async def csrf_ok(self, request: Request) -> bool:
        given = request.headers.get(CSRF_HEADER, "")
        if not given and request.headers.get("content-type", "").startswith(FORM):
            fields = parse_qs((await request.body()).decode("utf-8", "replace"))
            given = fields.get("csrf", [""])[0]
        return bool(given) and hmac.compare_digest(given, self.csrf)


class Guard:
    """Pure ASGI middleware applying the rules above to every HTTP request (a POST's body is
    read once, checked for the CSRF field and replayed to the endpoint)."""

    def __init__(
        self, app: ASGIApp, access: Access, login_page: Callable[[Request, int], Response]
    ) -> None:
        self.app, self.access, self.login_page = app, access, login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refusal = await self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if request.method == "POST":
            body = await request.body()
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            receive = replay

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)

    async def refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if not path.startswith(OPEN_PATHS) and not self.access.signed_in(request):
            return self.login_page(request, 401)
        if request.method == "POST":
            if not await self.access.csrf_ok(request):
                return PlainTextResponse("missing or wrong CSRF token", status_code=403)
            if self.access.read_only and path != "/login":
                return PlainTextResponse("the dashboard is read-only", status_code=403)
        return None


SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
    ),
}
