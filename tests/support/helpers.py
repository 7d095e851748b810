"""Test helpers: the session's real Redis, a real threaded HTTP server, polling waits."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root: subprocesses (workers, the CLI) run from here."""
DATA = ROOT / "tests" / "data"

Handler = Callable[[BaseHTTPRequestHandler], None]


def start_test_redis(home: Path) -> tuple[str, Any]:
    """WATCHKEEPER_TEST_REDIS_URL (flushed), or an embedded server under ``home``."""
    from workers.core.connection import EmbeddedRedis, connect

    external = os.environ.get("WATCHKEEPER_TEST_REDIS_URL")
    if external:
        client = connect(external)
        client.flushdb()
        client.close()
        return external, None
    embedded = EmbeddedRedis(home)
    return embedded.acquire(), embedded


def clear_watchkeeper_keys(client: redis.Redis, prefix: str = "wk:") -> int:
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def trickled_head(req: BaseHTTPRequestHandler, limit_s: float = 20.0) -> None:
    """A status line and headers sent one byte a second: every read succeeds within a read
    timeout over 1 s, and the response head is never complete (within the test's lifetime)."""
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n"
    end = time.monotonic() + limit_s
    req.close_connection = True
    with contextlib.suppress(OSError):
        for byte in head:
            if time.monotonic() > end:
                return
            req.wfile.write(bytes([byte]))
            req.wfile.flush()
            time.sleep(1.0)


def respond(
    req: BaseHTTPRequestHandler,
    status: int = 200,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
) -> None:
    data = body.encode() if isinstance(body, str) else body
    req.send_response(status)
    sent = {k.lower() for k in (headers or {})}
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    if "content-length" not in sent:
        req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    if req.command != "HEAD":
        req.wfile.write(data)


def recording(
    server: Any,
    path: str,
    hold: float,
    body: bytes | str = b"ok",
    headers: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """Route ``path`` to a handler recording each request's arrival time and how many were
    in flight at most, answering ``body`` after ``hold`` seconds."""
    lock = threading.Lock()
    log: dict[str, list[float]] = {"starts": [], "in_flight": [0], "max": [0]}

    def handler(req: BaseHTTPRequestHandler) -> None:
        with lock:
            log["starts"].append(time.monotonic())
            log["in_flight"][0] += 1
            log["max"][0] = max(log["max"][0], log["in_flight"][0])
        time.sleep(hold)
        with lock:
            log["in_flight"][0] -= 1
        respond(req, 200, body, headers)

    server.route(path, handler)
    return log


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early are part of the tests (caps, timeouts); not worth a trace."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HTTPFixtureServer:
    """A real HTTP/1.1 server on 127.0.0.1 with per-path handlers and a request log."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        fixture = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, delayed ACK stalls each
            # response by ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _dispatch(self) -> None:
                fixture.requests.append((self.command, self.path, dict(self.headers)))
                path = self.path.split("?", 1)[0]
                handler = fixture.routes.get(self.path) or fixture.routes.get(path)
                if handler is None:
                    respond(self, 404, b"not found")
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    handler(self)

            do_GET = do_POST = do_HEAD = _dispatch

        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def static(
        self, path: str, body: bytes | str, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.route(path, lambda req: respond(req, status, body, headers))

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p.split("?", 1)[0] == path)
