"""A feed server that logs who fetched what: ``python -m tests.support.hit_server HOST PORT LOG``.

Every ``GET /<name>.rss`` is answered with a one-item RSS feed and logged as one line,
``<client address> <path>``, so a test with several machines (network namespaces, each its own
address) can tell which machine polled which source.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def main(host: str, port: int, log_path: str) -> None:
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the run)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with LOCK:
                log.write(f"{self.client_address[0]} {path}\n")
            if not path.endswith(".rss"):
                body = b"ok"
                ctype = "text/plain"
            else:
                body = (
                    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
                    f"<item><guid>{path}</guid><title>item of {path}</title></item>"
                    "</channel></rss>"
                ).encode()
                ctype = "application/rss+xml"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
