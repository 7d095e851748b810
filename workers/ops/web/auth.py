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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

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
            # the body, not request.form(): Starlette replays a read body to the endpoint
            fields = parse_qs((await request.body()).decode("utf-8", "replace"))
            given = fields.get("csrf", [""])[0]
        return bool(given) and hmac.compare_digest(given, self.csrf)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(
    access: Access, login_page: Callable[[Request, int], Response]
) -> Callable[[Request, Handler], Awaitable[Response]]:
    """Starlette ``http`` middleware applying the rules above to every request."""

    async def middleware(request: Request, call_next: Handler) -> Response:
        path = request.url.path
        if not path.startswith(OPEN_PATHS) and not access.signed_in(request):
            return login_page(request, 401)
        if request.method == "POST":
            if not await access.csrf_ok(request):
                return PlainTextResponse("missing or wrong CSRF token", status_code=403)
            if access.read_only and path != "/login":
                return PlainTextResponse("the dashboard is read-only", status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        )
        return response

    return middleware
