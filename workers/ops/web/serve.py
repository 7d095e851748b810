"""``watchkeeper web``: serve the dashboard with uvicorn, loopback unless a token is set."""

from __future__ import annotations

import ipaddress
from typing import Any

import uvicorn

from workers.core.dead_letters import Dispatch
from workers.core.runtime import Runtime
from workers.ops.web.app import create_app


class BindRefused(ValueError):
    """A non-loopback address without ``WATCHKEEPER_WEB_TOKEN``."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name may resolve anywhere: treat it as reachable from outside


def check_bind(host: str, token: str) -> None:
    if not token and not is_loopback(host):
        raise BindRefused(
            f"web: refusing to serve on {host} without WATCHKEEPER_WEB_TOKEN "
            "(set a token, or bind a loopback address such as 127.0.0.1)"
        )


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


UVICORN: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "server_header": False,
    "proxy_headers": False,
}
"""How uvicorn runs the dashboard. ``proxy_headers`` off: uvicorn would otherwise take the
client's address and scheme from ``X-Forwarded-For``/``-Proto`` of any local process, and one
could then try tokens from as many addresses as it likes (sign-ins are counted per address)."""


def serve(
    rt: Runtime,
    host: str,
    port: int,
    dispatch: Dispatch,
    read_only: bool = False,
    queue: str = "celery",
) -> int:
    token = rt.settings.web_token
    check_bind(host, token)
    app = create_app(rt, dispatch, token=token, read_only=read_only, host=host, queue=queue)
    config = uvicorn.Config(app, host=host, port=port, **UVICORN)
    print(
        f"[web] dashboard on {url(host, port)}" + (" (read-only)" if read_only else ""), flush=True
    )
    uvicorn.Server(config).run()
    return 0
