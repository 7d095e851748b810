"""The dashboard on a real uvicorn server in a thread of the test process (port 0), and a raw
HTTP client for what ``requests`` will not send (bodies that never end, trickles)."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.support.helpers import wait_for
from workers.core.dead_letters import Dispatch
from workers.core.runtime import Runtime
from workers.ops.web.app import create_app
from workers.ops.web.serve import UVICORN


class Sent:
    """A dispatch that records the tasks it was asked to send (and sends them if given an app).

    ``calls``: (task, args, kwargs) of each; ``options``: the message options of each (task id,
    expiry, queue)."""

    def __init__(self, app: Any = None) -> None:
        self.app, self.calls = app, []  # type: ignore[var-annotated]
        self.options: list[dict[str, Any]] = []

    def __call__(self, name: str, args: list[Any], kwargs: dict[str, Any], **options: Any) -> Any:
        self.calls.append((name, args, kwargs))
        self.options.append(options)
        if self.app is None:
            return None
        return self.app.send_task(name, args=args, kwargs=kwargs, **options)


@contextlib.contextmanager
def dashboard(
    rt: Runtime,
    dispatch: Dispatch,
    *,
    token: str = "",
    read_only: bool = False,
    queue: str = "celery",
    api_token: str = "",
    api_read_tokens: tuple[str, ...] = (),
) -> Iterator[str]:
    """Serve the dashboard (and the REST API) on 127.0.0.1 as ``watchkeeper web`` does; yields
    its base URL."""
    app = create_app(
        rt,
        dispatch,
        token=token,
        read_only=read_only,
        queue=queue,
        api_token=api_token,
        api_read_tokens=api_read_tokens,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **UVICORN))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, message="dashboard start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def csrf_of(html: str) -> str:
    """The CSRF token a dashboard page carries (form field, or htmx's header)."""
    found = re.search(r'(?:name="csrf" value="|"X-CSRF-Token": ")([0-9a-f]+)"', html)
    assert found, html[:500]
    return found.group(1)


class Upload:
    """What ``send_body`` saw: the server's answer (as far as it came) and the bytes sent."""

    def __init__(self) -> None:
        self.reply = b""
        self.sent = 0
        self.closed = False

    @property
    def status(self) -> int:
        found = re.match(rb"HTTP/1\.[01] (\d{3})", self.reply)
        return int(found.group(1)) if found else 0


def send_body(
    base: str,
    head: str,
    total: int,
    *,
    chunked: bool = False,
    piece: int = 64 * 1024,
    pause: float = 0.0,
    timeout: float = 60.0,
) -> Upload:
    """Send ``head`` (the request line and headers, without the blank line) and then up to
    ``total`` bytes of body, ``piece`` at a time (as chunks if ``chunked``), stopping as soon as
    the server answers or hangs up."""
    host, port = base.removeprefix("http://").split(":")
    out = Upload()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        block = b"x" * piece
        while out.sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
            data = block[: min(piece, total - out.sent)]
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                sock.sendall(frame)
            except OSError:  # the server hung up: read what it said
                out.closed = True
                break
            out.sent += len(data)
        if chunked and out.sent >= total and not out.closed:
            with contextlib.suppress(OSError):
                sock.sendall(b"0\r\n\r\n")
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            while len(out.reply) < 65536:
                data = sock.recv(65536)
                if not data:
                    out.closed = True
                    break
                out.reply += data
                if b"\r\n\r\n" in out.reply and out.status:
                    break
    return out
