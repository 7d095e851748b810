"""Which requests the dashboard answers at all: by ``Host`` (DNS rebinding) and, for actions,
by ``Origin``.

A page on any name that resolves to this machine (``rebind.attacker.example`` → 127.0.0.1) is
same-origin with whatever answers on that name and port, so a browser lets it read the
dashboard's pages and post to it; only the ``Host`` header shows the name it used. So the
dashboard answers only to its own names: localhost, 127.0.0.1, [::1], the address it is bound
to and the one the connection arrived on — on its own port — and the names in
``WATCHKEEPER_WEB_ALLOWED_HOSTS`` (``name``: any port; ``name:port``: that one). Any other Host:
400, before anything else is looked at.

Every action (POST) must also come from the dashboard's own pages: its ``Origin`` must name the
request's own host and port (``null`` or another origin: 403). Browsers that send
no Origin send ``Sec-Fetch-Site``, which must be ``same-origin`` (or ``none``: the user's own
navigation); with neither, a ``Referer`` must be this host. A request with none of the three is
not a browser's (scripts, curl): the CSRF token and the login still apply to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from workers.core.settings import HOST_PORT
from workers.ops.web.replies import refusal

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
SHOWN = 100
"""Characters of a refused Host or Origin a reply repeats at most."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Example.org:8080"`` → ``("example.org", 8080)``; ``"[::1]"`` → ``("::1", None)``;
    None when it is not a host name or address with an optional port."""
    found = HOST_PORT.match(value.strip().lower())
    if not found:
        return None
    port = int(found.group(2)[1:]) if found.group(2) else None
    if port is not None and not 0 < port < 65536:
        return None
    return found.group(1).strip("[]").rstrip("."), port


@dataclass(frozen=True)
class Hosts:
    """The names the dashboard answers to: its own (on its own port) and the configured ones."""

    own: frozenset[str]
    extra: tuple[tuple[str, int | None], ...]

    @classmethod
    def of(cls, bind_host: str, allowed: tuple[str, ...]) -> Hosts:
        bound = bind_host.strip("[]").lower()
        own = LOOPBACK | ({bound} - WILDCARDS)
        extra = tuple(parsed for parsed in map(split_host, allowed) if parsed is not None)
        return cls(frozenset(own), extra)

    def allows(self, host_header: str, scope: Scope) -> bool:
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name, port = parsed
        port = port if port is not None else DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
        if any(name == n and p in (None, port) for n, p in self.extra):
            return True
        server = scope.get("server") or (None, None)
        arrived_on = str(server[0] or "").lower()
        return (name in self.own or name == arrived_on) and port == server[1]


def same_origin(headers: Headers, host_header: str) -> str:
    """Why an action does not come from this host's own pages (empty: it does, or it is not a
    browser's)."""
    origin = headers.get("origin")
    if origin is not None:
        return "" if _same(origin, host_header) else f"Origin {origin[:SHOWN]!r}"
    site = headers.get("sec-fetch-site")
    if site is not None:
        return "" if site in ("same-origin", "none") else f"Sec-Fetch-Site {site[:SHOWN]!r}"
    referer = headers.get("referer")
    if referer is not None and not _same(referer, host_header):
        return "Referer from another origin"
    return ""


def _same(url: str, host_header: str) -> bool:
    """Whether ``url`` (an Origin or Referer) names the host and port of ``host_header``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https"):
        return False  # also "null": a sandboxed frame, a data: or file: page
    theirs, ours = split_host(parts.netloc), split_host(host_header)
    if theirs is None or ours is None or "@" in parts.netloc:
        return False
    default = DEFAULT_PORTS[parts.scheme]
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


class SameOrigin:
    """Pure ASGI middleware applying the two rules above to every HTTP request."""

    def __init__(self, app: ASGIApp, hosts: Hosts) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.hosts.allows(host, scope):
            shown = re.sub(r"[^\x21-\x7e]", "?", host[:SHOWN])
            reply = refusal(
                scope,
                400,
                f"this dashboard does not answer to Host {shown!r} "
                "(add it to WATCHKEEPER_WEB_ALLOWED_HOSTS if it should)",
            )
            await reply(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            why = same_origin(headers, host)
            if why:
                reply = refusal(scope, 403, f"refused: an action from another origin ({why})")
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)
