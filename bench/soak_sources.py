"""The soak benchmark's local sources: fresh unique items, continuously, at a chosen rate.

One ThreadingHTTPServer on 127.0.0.1 serves two feeds (RSS and Atom), an ndjson log endpoint
and three listing pages; sender threads write log lines over TCP. Item ``k`` of a source exists
once ``start + k / rate`` has passed, and every response is rendered from that counter: it holds
the newest ``window`` items (a few seconds' worth, so a poll that comes late still finds every
item, and consecutive polls overlap the way real feeds do, which keeps dedup busy). The server
keeps no growing state: only its start time and a few counters.

TCP senders count the lines they delivered; a sender that falls more than ``window`` behind
(its peer not listening yet, or pushing back) skips ahead and counts the skipped lines, so a
slow peer never makes the sender buffer.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from workers.ops.demo import BRANDS, EVENTS, LEVELS, MODELS, PLACES, rendering_server

FEEDS = ("soak-rss", "soak-atom")
PAGES = 3
WINDOW_S = 4.0
SEND_TICK = 0.05


@dataclass(frozen=True)
class Rates:
    """Items per second made available by each kind of source (feeds: each feed)."""

    feed: float
    log: float
    listing: float
    tcp: float

    @classmethod
    def split(cls, total: float) -> Rates:
        """The soak's mix: feeds 15% (two feeds), logs 35%, listings 10%, TCP lines 40%."""
        return cls(feed=total * 0.075, log=total * 0.35, listing=total * 0.10, tcp=total * 0.40)

    @property
    def total(self) -> float:
        return self.feed * len(FEEDS) + self.log + self.listing + self.tcp


def _alert(k: int, salt: int) -> dict[str, Any]:
    city, region, lat, lon = PLACES[(k * 7 + salt) % len(PLACES)]
    return {
        "title": EVENTS[(k + salt) % len(EVENTS)].format(city=city, region=region, n=k % 10),
        "summary": f"Authorities in {city} report the situation is developing "
        f"(bulletin {salt}-{k}).",
        "lat": lat,
        "lon": lon,
        "geo": k % 5 == 0,
    }


class SoakSources:
    """The HTTP sources and TCP senders of one soak run."""

    def __init__(self, rates: Rates, window_s: float = WINDOW_S) -> None:
        self.rates = rates
        self.window_s = window_s
        self.start_time = time.time()
        self.httpd = rendering_server(self.render)
        self.port = int(self.httpd.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.tcp_sent: dict[str, int] = {}
        self.tcp_skipped: dict[str, int] = {}
        self.requests = 0

    # --- the counter --------------------------------------------------------------------

    def latest(self, rate: float) -> int:
        """Items ``0 .. latest-1`` exist now."""
        return int((time.time() - self.start_time) * rate)

    def window(self, rate: float) -> int:
        return max(20, math.ceil(rate * self.window_s))

    def produced(self) -> dict[str, int]:
        """Items made available so far, per kind (TCP: lines due, whether sent or not)."""
        r = self.rates
        return {
            "feeds": self.latest(r.feed) * len(FEEDS),
            "logs": self.latest(r.log),
            "listings": self.latest(r.listing),
            "tcp": self.latest(r.tcp),
        }

    def _when(self, k: int, rate: float) -> datetime:
        return datetime.fromtimestamp(self.start_time + k / rate, UTC)

    # --- rendering ----------------------------------------------------------------------

    def render(self, path: str) -> tuple[int, str, str]:
        self.requests += 1
        parts = urlsplit(path)
        if parts.path == "/feeds/soak-rss.rss":
            return 200, "application/rss+xml; charset=utf-8", self.rss()
        if parts.path == "/feeds/soak-atom.atom":
            return 200, "application/atom+xml; charset=utf-8", self.atom()
        if parts.path == "/logs/app.ndjson":
            return 200, "application/x-ndjson", self.logs()
        if parts.path == "/listings":
            page = parse_qs(parts.query).get("page", ["1"])[0]
            if page.isdigit() and 1 <= int(page) <= PAGES:
                return 200, "text/html; charset=utf-8", self.listing_page(int(page))
        if parts.path == "/robots.txt":
            return 200, "text/plain", "User-agent: *\nAllow: /\n"
        return 404, "text/plain", "not found\n"

    def _range(self, rate: float, window: int) -> range:
        top = self.latest(rate) - 1
        return range(top, max(-1, top - window), -1)

    def rss(self) -> str:
        rate = self.rates.feed
        items = []
        for k in self._range(rate, self.window(rate)):
            a = _alert(k, 1)
            point = f"<georss:point>{a['lat']} {a['lon']}</georss:point>" if a["geo"] else ""
            items.append(
                f"<item><title>{escape(a['title'])}</title>"
                f"<link>{self.base}/alerts/rss/{k}</link>"
                f'<guid isPermaLink="false">soak-rss-{k}</guid>'
                f"<description>{escape(a['summary'])}</description>"
                f"<pubDate>{format_datetime(self._when(k, rate))}</pubDate>{point}</item>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
            'xmlns:georss="http://www.georss.org/georss"><channel><title>Soak alerts'
            f"</title><link>{self.base}/</link><description>soak</description>"
            + "".join(items)
            + "</channel></rss>"
        )

    def atom(self) -> str:
        rate = self.rates.feed
        entries = []
        for k in self._range(rate, self.window(rate)):
            a = _alert(k, 2)
            entries.append(
                f"<entry><title>{escape(a['title'])}</title><id>urn:soak:atom:{k}</id>"
                f'<link href="{self.base}/alerts/atom/{k}"/>'
                f"<updated>{self._when(k, rate).isoformat()}</updated>"
                f"<summary>{escape(a['summary'])}</summary></entry>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/'
            'Atom"><title>Soak bulletins</title><id>urn:soak:atom</id>'
            f"<updated>{datetime.now(UTC).isoformat()}</updated>" + "".join(entries) + "</feed>"
        )

    def logs(self) -> str:
        rate = self.rates.log
        rows = [
            json.dumps(
                {
                    "id": f"log-{k}",
                    "ts": self._when(k, rate).isoformat(),
                    "level": LEVELS[k % len(LEVELS)],
                    "service": ("api", "billing", "search")[k % 3],
                    "msg": f"request {k} handled in {(k * 37) % 900 + 20} ms",
                }
            )
            for k in reversed(self._range(rate, self.window(rate)))
        ]
        return "\n".join(rows) + "\n"

    def listing_page(self, page: int) -> str:
        rate = self.rates.listing
        size = math.ceil(self.window(rate) / PAGES)
        top = self.latest(rate) - 1 - (page - 1) * size
        cards = []
        for k in range(top, max(-1, top - size), -1):
            brand, model = BRANDS[k % len(BRANDS)], MODELS[(k * 3) % len(MODELS)]
            cards.append(
                f'<div class="listing"><h2 class="title">'
                f'<a href="/watch/{k}">{brand} {model} ref. {1000 + k}</a></h2>'
                f'<span class="price">€{900 + (k * 137) % 9000:,}.00</span>'
                f'<span class="seller">seller{k % 13}</span><span class="ref">w{k}</span></div>'
            )
        nav = f'<a class="next" href="/listings?page={page + 1}">Next</a>' if page < PAGES else ""
        return (
            "<!doctype html><html><head><title>Soak market</title></head><body>"
            f"<h1>Listings page {page}</h1>{''.join(cards)}<nav>{nav}</nav></body></html>"
        )

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> SoakSources:
        self._spawn(self.httpd.serve_forever, "soak-http")
        return self

    def send_tcp(self, name: str, host: str, port: int) -> None:
        """Deliver this run's TCP lines to ``host:port`` (one sender per peer)."""
        self.tcp_sent[name] = self.tcp_skipped[name] = 0
        self._spawn(lambda: self._sender(name, host, port), f"soak-tcp-{name}")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sender(self, name: str, host: str, port: int) -> None:
        rate = self.rates.tcp
        limit = self.window(rate)
        sock: socket.socket | None = None
        k = self.latest(rate)
        while not self._stop.wait(SEND_TICK):
            top = self.latest(rate)
            if top - k > limit:
                self.tcp_skipped[name] += top - k - limit
                k = top - limit
            if k >= top:
                continue
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=5)
                lines = "".join(
                    f"{self._when(n, rate).isoformat()} soak-host app[{n % 7}]: "
                    f"{LEVELS[n % len(LEVELS)]} soak tcp line {n}\n"
                    for n in range(k, top)
                )
                sock.sendall(lines.encode())
                self.tcp_sent[name] += top - k
                k = top
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def config_toml(self, tcp_port: int, interval: str = "1s", site_interval: str = "2s") -> str:
        """The sources file pointing ``watchkeeper run`` at these sources."""
        base = self.base
        return f"""# Written by bench/soak.py for one soak run.
[[feeds]]
name = "soak-rss"
url = "{base}/feeds/soak-rss.rss"
interval = "{interval}"
locate = true

[[feeds]]
name = "soak-atom"
url = "{base}/feeds/soak-atom.atom"
interval = "{interval}"
locate = true

[[http_logs]]
name = "soak-logs"
url = "{base}/logs/app.ndjson"
interval = "{interval}"
format = "ndjson"
key = "id"

[[sites]]
name = "soak-market"
url = "{base}/listings?page=1"
interval = "{site_interval}"
item = "div.listing"
id = "ref"
next_page = "a.next@href"
max_pages = {PAGES}
price = "price"

[sites.fields]
title = "h2.title a"
link = "h2.title a@href"
price = ".price"
seller = ".seller"
ref = ".ref"

[tcp]
host = "127.0.0.1"
port = {tcp_port}
"""
