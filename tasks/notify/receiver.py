"""A local JSON receiver for the demo: ``run --demo`` shows notifications arriving.

An HTTP endpoint on 127.0.0.1 that accepts Apprise's JSON payloads (``json://127.0.0.1:PORT/demo``),
prints one line per message (``[notify] received: <title>``) and keeps the last 100 — fixed
memory however long the demo runs.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEPT = 100


class LocalReceiver:
    def __init__(
        self,
        port: int = 0,
        echo: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.received: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    payload = {}
                receiver.received.append(payload)
                receiver.count += 1
                if on_message is not None:
                    on_message(payload)
                if echo:
                    title = str(payload.get("title") or payload.get("message", ""))[:120]
                    print(f"[notify] received: {title}", flush=True)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/demo"

    def start(self) -> LocalReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sink_toml(self) -> str:
        """The ``[[notify]]`` table the demo's sources file gets."""
        return (
            "\n[[notify]]\n"
            'name = "demo"\n'
            f'urls = ["{self.url}"]\n'
            'streams = ["alerts", "changes", "health"]\n'
            'include = ["(?i)flood|earthquake|wildfire|price|down|recovered|back"]\n'
        )
