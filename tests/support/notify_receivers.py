"""Real notification receivers on 127.0.0.1: a JSON webhook server and an SMTP server.

``JsonReceiver`` answers each POST as its ``behaviour`` says (accept, 500, 429 with
Retry-After, close the connection mid-request, answer too slowly, send its headers and then one
byte every ``trickle_s``, or claim and stream a huge body) and records what it accepted; it can
go down (port closed) and come back on the same port. It takes Apprise's other HTTP payloads
too (form, XML, Mattermost's JSON): what is not JSON is recorded as ``{"raw": text}``.
``SmtpReceiver`` is aiosmtpd's real SMTP server collecting messages, for Apprise's
``mailto://``; ``TricklingSmtp`` greets one byte every ``trickle_s``, forever.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

Behaviour = Callable[[int, dict[str, Any]], str]
"""(attempt number from 1, payload) → "ok" | "500" | "429" | "503" | "404" | "close" | "slow" |
"trickle" (200, then the body one byte every ``trickle_s``) | "huge" (200 and ``huge_bytes`` of
body, as fast as the client reads)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a slow answer are part of the tests


class JsonReceiver:
    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.accepted: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.behaviour: Behaviour = lambda n, payload: "ok"
        self.retry_after = "1"
        self.slow_s = 3.0
        self.trickle_s = 0.5
        self.trickle_bytes = 100_000
        self.huge_bytes = 300 * 2**20
        self.sent_bytes = 0
        self.open = 0
        """Answers being trickled or streamed now (each ends when its client hangs up)."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> JsonReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) or b"{}"
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"raw": raw.decode("utf-8", "replace")}
                with receiver.lock:
                    receiver.attempts += 1
                    n = receiver.attempts
                action = receiver.behaviour(n, payload)
                if action == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action in ("trickle", "huge"):
                    receiver.misbehave(self, action)
                    return
                if action == "slow":
                    time.sleep(receiver.slow_s)
                status = {"ok": 200, "slow": 200}.get(action) or int(action)
                headers = {"Retry-After": receiver.retry_after} if status in (429, 503) else {}
                if status == 200:
                    with receiver.lock:
                        receiver.accepted.append(payload)
                        receiver.headers.append(dict(self.headers))
                body = b"{}"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def misbehave(self, handler: BaseHTTPRequestHandler, action: str) -> None:
        """Answer 200, then trickle the body or stream a huge one, until the client hangs up."""
        size = self.trickle_bytes if action == "trickle" else self.huge_bytes
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        chunk = b"x" if action == "trickle" else b"0" * 2**20
        sent = 0
        with self.lock:
            self.open += 1
        try:
            while sent < size and not self.stopping.is_set():
                piece = chunk[: size - sent]
                handler.wfile.write(piece)
                handler.wfile.flush()
                sent += len(piece)
                with self.lock:
                    self.sent_bytes += len(piece)
                if action == "trickle":
                    self.stopping.wait(self.trickle_s)
        except OSError:
            pass  # the client hung up: what a deadline or a reply cap does
        finally:
            with self.lock:
                self.open -= 1

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.stopping.clear()

    def url(self, path: str = "/hook", scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # --- what arrived ------------------------------------------------------------------------
    def idem_keys(self) -> list[str]:
        with self.lock:
            return [str(p.get("idempotency_key")) for p in self.accepted]

    def titles(self) -> list[str]:
        with self.lock:
            return [str(p.get("title")) for p in self.accepted]


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 Message accepted"


class SmtpReceiver:
    """aiosmtpd's SMTP server on 127.0.0.1 (plain SMTP, no auth)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _Collect()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def url(self, to: str = "ops@example.org") -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=wk@example.org&to={to}"

    @property
    def messages(self) -> list[Message]:
        return list(self.handler.messages)

    def bodies(self) -> list[str]:
        out = []
        for m in self.messages:
            part = m.get_payload(decode=True) if not m.is_multipart() else None
            if part is None and m.is_multipart():
                part = m.get_payload(0).get_payload(decode=True)
            out.append(part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part))
        return out


class TricklingSmtp:
    """An SMTP server that greets one byte every ``trickle_s`` ("220 " and then spaces), and
    never finishes its greeting: only a deadline for the whole exchange ends a client's wait."""

    def __init__(self, trickle_s: float = 0.5) -> None:
        self.trickle_s = trickle_s
        self.connections = 0
        self.open = 0
        self.stopping = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])

    def start(self) -> TricklingSmtp:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        self.open += 1
        with conn:
            try:
                conn.sendall(b"220 ")
                while not self.stopping.wait(self.trickle_s):
                    conn.sendall(b" ")
            except OSError:
                pass  # the client hung up
            finally:
                self.open -= 1

    def stop(self) -> None:
        self.stopping.set()
        self._sock.close()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=wk@example.org&to=a@example.org"
