"""Sign-in attempts, limited per client address.

Each client address may try ``WATCHKEEPER_WEB_LOGIN_ATTEMPTS`` tokens per
``WATCHKEEPER_WEB_LOGIN_WINDOW`` seconds; then every sign-in is answered 429 with
``Retry-After`` until the window ends — the right token too, so guessing stays slow. The count
is in Redis (``web:logins:{client}``, one small integer with the window's TTL), so it holds
across dashboard restarts and across several dashboards. An IPv6 client counts by its /64 (one
machine usually holds a whole /64). The address is the connection's (``serve`` turns uvicorn's
``X-Forwarded-For`` handling off), so behind a reverse proxy all clients share one count.

A token in an ``Authorization: Bearer`` header (the dashboard's, or the REST API's) is a
sign-in too: a wrong one counts as an attempt, and while the client is throttled even the right
one is answered 429 — or the header would be an unlimited guessing oracle beside the form. A
right one is not counted (scripts send it on every request).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass

from starlette.types import Scope

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script

log = logging.getLogger("watchkeeper.web")
_ATTEMPT = Script("workers.ops.web", "login_attempt")


def client_of(scope: Scope) -> str:
    """The address a sign-in attempt counts against (an IPv6 client's /64)."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def attempt(rt: Runtime, client: str, count: bool = True) -> int:
    """Count one attempt of ``client`` (only check it with ``count=False``): 0 when it may go
    ahead, else the seconds to wait."""
    s = rt.settings
    allowed, left_ms = _ATTEMPT(
        rt.redis,
        [keys.WEB_LOGINS.key(s, client)],
        [s.web_login_attempts, s.web_login_window, int(count)],
    )
    return 0 if int(allowed) else max(1, math.ceil(int(left_ms) / 1000))


@dataclass(frozen=True)
class Throttle:
    """The per-client count, for a token presented in a bearer header."""

    rt: Runtime

    def bearer(self, scope: Scope, right: bool) -> int:
        """A bearer token ``scope``'s client presented: 0 when the request may go ahead, else
        the seconds to wait (a wrong token counts, a right one only checks)."""
        client = client_of(scope)
        wait = attempt(self.rt, client, count=not right)
        if wait:
            log.warning("[web] %s: too many token attempts; refused for %d s", client, wait)
        return wait
