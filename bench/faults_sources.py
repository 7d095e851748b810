"""The fault-injection run's sources: the soak's fresh unique items, behind a planted token.

``FaultSources`` is the soak's ``SoakSources`` (two feeds, an ndjson log, three listing pages,
item ``k`` of a source existing once ``start + k / rate`` has passed) with what the fault run
needs on top:

* it listens on its host's namespace address and answers only requests that carry the planted
  token — as HTTP basic-auth password (``http://user:TOKEN@host/…``) or as an ``api_key`` /
  ``token`` query value — so the token must really travel in the source URLs, where the run
  then checks it never leaks (robots.txt is public, as on the web);
* patience: a feed or the log serves, besides its newest items, every older item the run has
  not yet found in its output stream (up to ``EXTRA_MAX``), and the listing pages hold every
  listing of the run. So an item stays offered until watchkeeper writes it, and every item
  made is expected exactly once: one missing at the end was taken as seen and never written
  (or never fetched while offered for the whole run) — lost by watchkeeper, not rotated out
  of the source while faults kept it from polling;
* ``freeze()`` stops the counters, so the run can drain and compare;
* which items were served at least once (``served``), the items the run expects to find;
* its own TCP sender, which never skips or resends: a line counts as offered once ``sendall``
  has returned, and the lines of a send that failed part-way are "uncertain" (they may have
  reached the listener), expected at most once rather than exactly once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.soak_sources import FEEDS, PAGES, Rates, SoakSources
from workers.ops.demo import LEVELS

PUBLIC_PATHS = frozenset({"/robots.txt"})
TCP_CHUNK_MAX = 200
EXTRA_MAX = 300
"""Older items not yet found in the output that a response carries besides its window."""


def tcp_line(n: int) -> str:
    """TCP line ``n``; the run finds it again in the ``logs`` stream by ``tcp line {n} ``."""
    return f"fault-host app[{n % 7}]: {LEVELS[n % len(LEVELS)]} fault tcp line {n} end\n"


class Served:
    """The item numbers of one kind that at least one response contained, as merged ranges
    (a response serves a contiguous run of the newest items)."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []
        self.lock = threading.Lock()

    def add(self, lo: int, hi: int) -> None:
        """Items ``lo .. hi-1`` were served."""
        if hi <= lo:
            return
        with self.lock:
            merged: list[list[int]] = []
            for a, b in sorted([*self.ranges, [lo, hi]]):
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            self.ranges = merged

    def items(self) -> set[int]:
        with self.lock:
            return {k for a, b in self.ranges for k in range(a, b)}


class FaultSources(SoakSources):
    """The soak's sources on ``host``, guarded by ``token``, with served-item bookkeeping."""

    def __init__(
        self, rates: Rates, host: str, token: str, window_s: float, listing_window_s: float
    ) -> None:
        super().__init__(rates, window_s=window_s)
        self.listing_window_s = listing_window_s
        self.captured: dict[str, set[int]] = {kind: set() for kind in (*FEEDS, "logs")}
        self.low = dict.fromkeys(self.captured, 0)
        self.rendering = threading.local()
        self.httpd.server_close()  # the soak's loopback server; ours listens on ``host``
        self.token = token
        self.frozen_at: float | None = None
        self.served = {kind: Served() for kind in (*FEEDS, "logs", "listings")}
        self.unauthorised = 0
        self.httpd = self._server(host)
        self.port = int(self.httpd.server_address[1])
        self.base = f"http://{host}:{self.port}"
        self.tcp_offered = 0
        self.tcp_uncertain: list[tuple[int, int]] = []
        self.tcp_errors = 0

    # --- the counter --------------------------------------------------------------------

    def latest(self, rate: float) -> int:
        now = time.time() if self.frozen_at is None else self.frozen_at
        return int((now - self.start_time) * rate)

    def window(self, rate: float) -> int:
        if rate == self.rates.listing:  # every listing of the run stays on the pages
            return max(20, -(-int(rate * self.listing_window_s) // 1))
        return super().window(rate)

    def capture(self, kind: str, k: int) -> None:
        """The run found item ``k`` of ``kind`` in its output: no need to offer it again."""
        self.captured[kind].add(k)

    def _range(self, rate: float, window: int) -> list[int]:  # type: ignore[override]
        """The newest ``window`` items, then older ones not found in the output yet."""
        newest = list(super()._range(rate, window))
        kind = getattr(self.rendering, "kind", None)
        if kind is None:
            return newest
        seen = self.captured[kind]
        while self.low[kind] in seen:
            self.low[kind] += 1
        floor = newest[-1] if newest else self.latest(rate)
        extra = [k for k in range(self.low[kind], floor) if k not in seen][:EXTRA_MAX]
        return newest + sorted(extra, reverse=True)

    def render(self, path: str) -> tuple[int, str, str]:
        kind = {
            "/feeds/soak-rss.rss": "soak-rss",
            "/feeds/soak-atom.atom": "soak-atom",
            "/logs/app.ndjson": "logs",
        }.get(urlsplit(path).path)
        self.rendering.kind = kind
        try:
            return super().render(path)
        finally:
            self.rendering.kind = None

    def made(self) -> dict[str, int]:
        """Items made so far per kind (feed name, ``logs``, ``listings``)."""
        r = self.rates
        return {
            **{feed: self.latest(r.feed) for feed in FEEDS},
            "logs": self.latest(r.log),
            "listings": self.latest(r.listing),
        }

    def freeze(self) -> None:
        """No new items from now on (the run drains, then compares)."""
        self.frozen_at = time.time()

    # --- serving ------------------------------------------------------------------------

    def authorised(self, path: str, headers: Any) -> bool:
        parts = urlsplit(path)
        if parts.path in PUBLIC_PATHS:
            return True
        query = parse_qs(parts.query)
        if self.token in query.get("api_key", []) + query.get("token", []):
            return True
        auth = str(headers.get("Authorization") or "")
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user_pass = base64.b64decode(auth[6:]).decode()
                return user_pass.partition(":")[2] == self.token
        return False

    def note_served(self, path: str) -> None:
        parts = urlsplit(path)
        r = self.rates
        if parts.path == "/feeds/soak-rss.rss":
            self._note("soak-rss", r.feed)
        elif parts.path == "/feeds/soak-atom.atom":
            self._note("soak-atom", r.feed)
        elif parts.path == "/logs/app.ndjson":
            self._note("logs", r.log)
        elif parts.path == "/listings":
            page = parse_qs(parts.query).get("page", ["1"])[0]
            if page.isdigit() and 1 <= int(page) <= PAGES:
                size = -(-self.window(r.listing) // PAGES)
                top = self.latest(r.listing) - (int(page) - 1) * size
                self.served["listings"].add(max(0, top - size), top)

    def _note(self, kind: str, rate: float) -> None:
        top = self.latest(rate)
        self.served[kind].add(max(0, top - self.window(rate)), top)

    def _server(self, host: str) -> ThreadingHTTPServer:
        sources = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not sources.authorised(self.path, self.headers):
                    sources.unauthorised += 1
                    status, ctype, body = 401, "text/plain", "token required\n"
                else:
                    # Note first: an item rendered into a response counts as offered even if
                    # the client hangs up before reading it (it will be offered again).
                    sources.note_served(self.path)
                    status, ctype, body = sources.render(self.path)
                data = body.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # a worker killed or cut off mid-response

        httpd = ThreadingHTTPServer((host, 0), Handler)
        httpd.daemon_threads = True
        return httpd

    # --- TCP ----------------------------------------------------------------------------

    def send_tcp(self, name: str, host: str, port: int) -> None:
        self._spawn(lambda: self._tcp_sender(host, port), f"fault-tcp-{name}")

    def _tcp_sender(self, host: str, port: int) -> None:
        rate = self.rates.tcp
        sock: socket.socket | None = None
        k = self.latest(rate)
        self.tcp_first = k
        while not self._stop.wait(0.05):
            top = min(self.latest(rate), k + TCP_CHUNK_MAX)
            if k >= top:
                continue
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=5)
                    sock.settimeout(None)  # block while the listener pushes back: never skip
            except OSError:
                sock = None
                continue  # nothing was sent: the same lines go on the next connection
            data = "".join(tcp_line(n) for n in range(k, top)).encode()
            try:
                sock.sendall(data)
                self.tcp_offered += top - k
            except OSError:
                self.tcp_errors += 1
                self.tcp_uncertain.append((k, top))
                with contextlib.suppress(OSError):
                    sock.close()
                sock = None
            k = top
        self.tcp_next = k
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                sock.close()

    def tcp_sent_items(self) -> set[int]:
        """Line numbers whose send completed (expected exactly once)."""
        uncertain = {n for a, b in self.tcp_uncertain for n in range(a, b)}
        first = getattr(self, "tcp_first", 0)
        last = getattr(self, "tcp_next", first)
        return {n for n in range(first, last)} - uncertain

    def stop_tcp(self) -> None:
        """Stop sending (the sender finishes its current send first)."""
        self._stop.set()

    def config_toml(self, tcp_port: int, interval: str = "1s", site_interval: str = "2s") -> str:
        """The sources file, the token in each URL: basic auth for one feed and the site
        (its next-page links inherit it), a query value for the other feed and the log."""
        user_base = self.base.replace("http://", f"http://watch:{self.token}@")
        text = super().config_toml(tcp_port, interval, site_interval)
        text = text.replace(
            f'"{self.base}/feeds/soak-rss.rss"', f'"{user_base}/feeds/soak-rss.rss"'
        )
        text = text.replace(
            f'"{self.base}/feeds/soak-atom.atom"',
            f'"{self.base}/feeds/soak-atom.atom?api_key={self.token}"',
        )
        text = text.replace(
            f'"{self.base}/logs/app.ndjson"', f'"{self.base}/logs/app.ndjson?token={self.token}"'
        )
        text = text.replace(f'"{self.base}/listings?page=1"', f'"{user_base}/listings?page=1"')
        if self.token not in text:
            raise RuntimeError("the planted token is in no source URL")
        return text


class NotifyReceiver:
    """The run's notification destination: a JSON webhook (Apprise ``json://``) on the sources
    host that accepts every POST and records its idempotency key. The contract is
    at-least-once with a key per message (docs/notifications.md): a receiver acting once per
    key acts exactly once per message, so the run counts keys, and reports redeliveries of a
    key apart."""

    def __init__(self, host: str) -> None:
        self.keys: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size > 0 else b""
                key = str(self.headers.get("Idempotency-Key") or "")
                with contextlib.suppress(ValueError):
                    key = key or str(json.loads(body).get("idempotency_key") or "")
                with receiver.lock:
                    receiver.keys.append(key)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"json://{host}:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> NotifyReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def sink_toml(self) -> str:
        return f'\n[[notify]]\nname = "faults"\nurls = ["{self.url}"]\nstreams = ["alerts"]\n'

    def received(self) -> list[str]:
        with self.lock:
            return list(self.keys)
