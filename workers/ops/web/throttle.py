"""Sign-in attempts, limited per client address.

Each client address may try ``WATCHKEEPER_WEB_LOGIN_ATTEMPTS`` tokens per
``WATCHKEEPER_WEB_LOGIN_WINDOW`` seconds; then every sign-in is answered 429 with
``Retry-After`` until the window ends — the right token too, so guessing stays slow. The count
is in Redis (``web:logins:{client}``, one small integer with the window's TTL), so it holds
across dashboard restarts and across several dashboards. An IPv6 client counts by its /64 (one
machine usually holds a whole /64). The address is the connection's (``serve`` turns uvicorn's
``X-Forwarded-For`` handling off), so behind a reverse proxy all clients share one count.
"""

from __future__ import annotations

import ipaddress
import math

from starlette.types import Scope

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script

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


def attempt(rt: Runtime, client: str) -> int:
    """Count one attempt of ``client``: 0 when it may go ahead, else the seconds to wait."""
    s = rt.settings
    allowed, left_ms = _ATTEMPT(
        rt.redis, [keys.WEB_LOGINS.key(s, client)], [s.web_login_attempts, s.web_login_window]
    )
    return 0 if int(allowed) else max(1, math.ceil(int(left_ms) / 1000))
