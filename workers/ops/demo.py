"""The demo's local sample sources: feeds, a log endpoint, listing pages and a TCP trickle.

Served on 127.0.0.1 only, fully offline. Content advances with time — a new feed entry every
few seconds, a log line every second, a new listing every few seconds — so a running pipeline
keeps finding new items and the dedup, caps and location batching are visibly at work.
Everything is generated from the clock, so the server itself holds no growing state.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

PLACES = [
    ("Lyon", "France", 45.75, 4.85),
    ("Osaka", "Japan", 34.69, 135.50),
    ("Nairobi", "Kenya", -1.29, 36.82),
    ("Houston", "Texas", 29.76, -95.36),
    ("Manila", "Philippines", 14.60, 120.98),
    ("Hamburg", "Germany", 53.55, 9.99),
    ("Lima", "Peru", -12.05, -77.04),
    ("Chennai", "India", 13.08, 80.27),
    ("Toronto", "Canada", 43.65, -79.38),
    ("Seville", "Spain", 37.39, -5.99),
    ("Denver", "Colorado", 39.74, -104.99),
    ("Jakarta", "Indonesia", -6.21, 106.85),
    ("Krakow", "Poland", 50.06, 19.94),
    ("Lagos", "Nigeria", 6.52, 3.38),
    ("Brisbane", "Australia", -27.47, 153.03),
    ("Naples", "Italy", 40.85, 14.27),
]
EVENTS = [
    "Flooding closes roads in {city}, {region}",
    "Power outage hits thousands in {city}",
    "Wildfire forces evacuations near {city}, {region}",
    "Earthquake of magnitude 4.{n} shakes {city}",
    "Transit strike disrupts commuters in {city}, {region}",
    "Storm warning issued for {region} coast near {city}",
    "Water main break floods downtown {city}",
    "Heatwave breaks records across {region}",
]
LEVELS = ["INFO", "INFO", "INFO", "WARN", "ERROR"]
BRANDS = ["Omega", "Seiko", "Rolex", "Tudor", "Longines", "Casio", "Oris", "Hamilton"]
MODELS = ["Seamaster", "Submariner", "Black Bay", "Speedmaster", "Aquaracer", "Presage"]

FEED_PERIOD = 4.0
LOG_PERIOD = 1.0
LISTING_PERIOD = 6.0
TCP_PERIOD = 0.5
WINDOW = 25
PAGE_SIZE = 10
PAGES = 3
PRICE_CUT_AFTER = 6
"""Listings this many periods old show a 15 % lower price (every third one)."""


class DemoClock:
    """Item ``k`` of a source exists once ``start + k * period`` has passed."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start

    def latest(self, period: float) -> int:
        return int((time.time() - self.start) / period) + WINDOW

    def when(self, k: int, period: float) -> datetime:
        return datetime.fromtimestamp(self.start + (k - WINDOW) * period, UTC)


def _alert(k: int) -> dict[str, Any]:
    city, region, lat, lon = PLACES[(k * 7) % len(PLACES)]
    title = EVENTS[k % len(EVENTS)].format(city=city, region=region, n=k % 10)
    return {
        "k": k,
        "title": title,
        "city": city,
        "region": region,
        "lat": lat,
        "lon": lon,
        "summary": f"Local authorities in {city} report the situation is developing "
        f"(bulletin {k}).",
        "geo": k % 5 == 0,
    }


def rss_feed(clock: DemoClock, base: str) -> str:
    items = []
    for k in range(clock.latest(FEED_PERIOD), max(-1, clock.latest(FEED_PERIOD) - WINDOW), -1):
        a = _alert(k)
        point = f"<georss:point>{a['lat']} {a['lon']}</georss:point>" if a["geo"] else ""
        items.append(
            f"<item><title>{escape(a['title'])}</title><link>{base}/alerts/{k}</link>"
            f'<guid isPermaLink="false">demo-world-{k}</guid>'
            f"<description>{escape(a['summary'])}</description>"
            f"<pubDate>{format_datetime(clock.when(k, FEED_PERIOD))}</pubDate>"
            f"<category>demo</category>{point}</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:georss="http://www.georss.org/georss"><channel><title>Demo world alerts'
        f"</title><link>{base}/</link><description>watchkeeper demo</description>"
        + "".join(items)
        + "</channel></rss>"
    )


def atom_feed(clock: DemoClock, base: str) -> str:
    entries = []
    top = clock.latest(FEED_PERIOD * 2)
    for k in range(top, max(-1, top - WINDOW), -1):
        a = _alert(k + 1000)
        stamp = clock.when(k, FEED_PERIOD * 2).isoformat()
        entries.append(
            f"<entry><title>{escape(a['title'])}</title><id>urn:demo:regional:{k}</id>"
            f'<link href="{base}/regional/{k}"/><updated>{stamp}</updated>'
            f"<summary>{escape(a['summary'])}</summary></entry>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Demo regional bulletins</title><id>urn:demo:regional</id>"
        f"<updated>{datetime.now(UTC).isoformat()}</updated>" + "".join(entries) + "</feed>"
    )


def log_lines(clock: DemoClock) -> str:
    rows = []
    top = clock.latest(LOG_PERIOD)
    for k in range(max(0, top - 50), top + 1):
        rows.append(
            json.dumps(
                {
                    "id": f"log-{k}",
                    "ts": clock.when(k, LOG_PERIOD).isoformat(),
                    "level": LEVELS[k % len(LEVELS)],
                    "service": ["api", "billing", "search"][k % 3],
                    "msg": f"request {k} handled in {(k * 37) % 900 + 20} ms",
                }
            )
        )
    return "\n".join(rows) + "\n"


def listing_page(clock: DemoClock, base: str, page: int) -> str:
    top = clock.latest(LISTING_PERIOD)
    first = top - (page - 1) * PAGE_SIZE
    cards = []
    for k in range(first, max(-1, first - PAGE_SIZE), -1):
        brand, model = BRANDS[k % len(BRANDS)], MODELS[(k * 3) % len(MODELS)]
        price = 900 + (k * 137) % 9000
        if k % 3 == 0 and top - k >= PRICE_CUT_AFTER:  # a third of the listings get cheaper
            price = price * 85 // 100
        cards.append(
            f'<div class="listing" data-id="w{k}"><h2 class="title">'
            f'<a href="/watch/{k}">{brand} {model} ref. {1000 + k}</a></h2>'
            f'<span class="price">€{price:,}.00</span><span class="seller">seller{k % 13}</span>'
            f'<span class="ref">w{k}</span></div>'
        )
    nav = f'<a class="next" href="/listings?page={page + 1}">Next</a>' if page < PAGES else ""
    return (
        "<!doctype html><html><head><title>Demo watch market</title></head><body>"
        f"<h1>Listings page {page}</h1>{''.join(cards)}<nav>{nav}</nav></body></html>"
    )


Render = Callable[[str], tuple[int, str, str]]


def rendering_server(render: Render, port: int = 0) -> ThreadingHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering each GET with ``render(path)`` →
    (status, content type, body); it keeps nothing between requests."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the body waits for the
        # client's delayed ACK (40 ms per keep-alive request). Production servers set it too.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            status, ctype, body = render(self.path)
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    return httpd


class DemoServer:
    """The sample HTTP server (and, when asked, a TCP log trickle) for ``run --demo``."""

    def __init__(self, port: int = 0, clock: DemoClock | None = None) -> None:
        self.clock = clock or DemoClock()
        self.httpd = rendering_server(self.render, port)
        self.port = int(self.httpd.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.tcp_lines_sent = 0

    def render(self, path: str) -> tuple[int, str, str]:
        parts = urlsplit(path)
        if parts.path == "/feeds/world.rss":
            return 200, "application/rss+xml; charset=utf-8", rss_feed(self.clock, self.base)
        if parts.path == "/feeds/regional.atom":
            return 200, "application/atom+xml; charset=utf-8", atom_feed(self.clock, self.base)
        if parts.path == "/logs/app.ndjson":
            return 200, "application/x-ndjson", log_lines(self.clock)
        if parts.path == "/listings":
            page = parse_qs(parts.query).get("page", ["1"])[0]
            if page.isdigit() and 1 <= int(page) <= PAGES:
                return (
                    200,
                    "text/html; charset=utf-8",
                    listing_page(self.clock, self.base, int(page)),
                )
        if parts.path == "/robots.txt":
            return 200, "text/plain", "User-agent: *\nAllow: /\n"
        return 404, "text/plain", "not found\n"

    def start(self) -> DemoServer:
        thread = threading.Thread(target=self.httpd.serve_forever, name="demo-http", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def start_tcp_trickle(self, host: str, port: int) -> None:
        """Send a log line to the listener every TCP_PERIOD seconds, reconnecting as needed."""
        thread = threading.Thread(
            target=self._trickle, args=(host, port), name="demo-tcp", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _trickle(self, host: str, port: int) -> None:
        sock: socket.socket | None = None
        while not self._stop.wait(TCP_PERIOD):
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=2)
                n = self.tcp_lines_sent
                line = (
                    f"{datetime.now(UTC).isoformat()} demo-host app[{n % 7}]: "
                    f"{LEVELS[n % len(LEVELS)]} tcp demo line {n}\n"
                )
                sock.sendall(line.encode())
                self.tcp_lines_sent += 1
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def write_config(self, path: Path, tcp_port: int) -> Path:
        """Render the bundled demo sources file for this server's port."""
        template = (resources.files("workers") / "data" / "demo.toml").read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.replace("{base}", self.base).replace("{tcp_port}", str(tcp_port)))
        return path
