"""Who may use the REST API (``/api/v1/``), and for what.

* ``WATCHKEEPER_API_TOKEN`` reads and writes; each of ``WATCHKEEPER_API_READ_TOKENS`` only
  reads (a write: 403). Both are separate from the dashboard's ``WATCHKEEPER_WEB_TOKEN``: a
  script's token never signs a browser in, and the dashboard's never writes through the API.
  They are sent as ``Authorization: Bearer <token>`` and compared in constant time, every
  configured token every time (the time taken says nothing about which one nearly matched).
* Without any API token the API reads where the dashboard reads without a login — on a
  dashboard with no ``WATCHKEEPER_WEB_TOKEN``, which ``watchkeeper web`` serves on loopback only
  — and **writes nowhere, loopback included**: a write makes the workers fetch a URL of the
  writer's choosing with the ``env:`` credentials the writer names, which is more than a
  local page or process should get by reaching a port. A wrong token: 401, whatever the rule.
* ``--read-only`` refuses every API write too (403).
* A wrong token counts against the client's sign-in attempts, with the dashboard's login
  (``workers.ops.web.throttle``); over the limit every token, the right one too, gets 429 with
  ``Retry-After`` until the window ends.
* ``/api/v1/openapi.json`` (the schema, no data) needs no token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from workers.ops.web.throttle import Throttle

READ, WRITE = "read", "write"
OPEN_PATHS = ("/api/v1/openapi.json",)


class Denied(Exception):
    """A request the API refuses: its status (401, 403) and one line."""

    def __init__(self, status: int, line: str, retry_after: int = 0) -> None:
        self.status, self.line, self.retry_after = status, line, retry_after
        super().__init__(line)


def _matches(given: bytes, tokens: tuple[str, ...]) -> bool:
    found = False
    for token in tokens:  # every one, always: no early exit
        found |= hmac.compare_digest(given, token.encode())
    return found


@dataclass(frozen=True)
class ApiAccess:
    token: str = ""
    read_tokens: tuple[str, ...] = ()
    open_reads: bool = False
    """No API token configured and a dashboard without a login: reads need no token."""
    read_only: bool = False
    throttle: Throttle | None = None
    """Counts wrong tokens against the client's sign-in attempts (429 over the limit)."""

    def level(self, request: Request) -> str:
        """What the request may do: ``WRITE``, ``READ``; ``Denied`` 401 when it may do
        nothing (no token, or a wrong one)."""
        header = request.headers.get("authorization", "")
        if not header:
            if self.open_reads and not (self.token or self.read_tokens):
                return READ
            raise Denied(
                401,
                "the API needs a token: send Authorization: Bearer <WATCHKEEPER_API_TOKEN or "
                "one of WATCHKEEPER_API_READ_TOKENS>",
            )
        scheme, _, given = header.partition(" ")
        secret = given.strip().encode()
        if scheme.lower() == "bearer" and secret:
            write = bool(self.token) and hmac.compare_digest(secret, self.token.encode())
            read = _matches(secret, self.read_tokens)
            self._throttle(request, write or read)
            if write:
                return WRITE
            if read:
                return READ
        raise Denied(401, "wrong API token")

    def _throttle(self, request: Request, right: bool) -> None:
        """A presented token is a sign-in attempt (``throttle``): a wrong one counts, and over
        the limit even the right one is refused."""
        if self.throttle is None or not (self.token or self.read_tokens):
            return
        wait = self.throttle.bearer(request.scope, right)
        if wait:
            raise Denied(429, f"too many token attempts; try again in {wait} s", wait)

    def require(self, request: Request, write: bool) -> str:
        """The request's level, checked for what it asks: a write needs the write token."""
        if request.url.path in OPEN_PATHS:
            return READ
        if write and self.read_only:
            raise Denied(403, "the dashboard is read-only: the API does not write either")
        if write and not self.token:
            raise Denied(
                401,
                "API writes need WATCHKEEPER_API_TOKEN (set it, and send it as "
                "Authorization: Bearer <token>)",
            )
        level = self.level(request)
        if write and level != WRITE:
            raise Denied(403, "this token may only read")
        return level
