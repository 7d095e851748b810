"""The seeds' "before" state, for the soak benchmark to run side by side with watchkeeper.

A plain Python process — no Celery, no caps — that consumes the same sources the way the three
programs in ``../shared/seeds/`` did before their fixes:

* a ``seen`` set per source that only grows (seed 001: the HTTP poller's ``seen`` Set, 288 MB
  a day at 1,000 entries a minute) — mirrored in Redis as an uncapped SET per source;
* a location batch buffer with its timestamps, queued markers and per-batch results, with no
  size limit, no age cleanup and nothing ever removed (seed 000: ``_LOCATION_BATCH_BUFFER``,
  ``_BUFFER_TIMESTAMPS``, ``_batch_queued`` markers, ``_PENDING_BATCH_RESULTS``);
* a session history that keeps every scrape run with the items it found (seed 002:
  ``session_history.json``) — mirrored in Redis as an uncapped LIST;
* streams written with plain ``XADD`` and no ``MAXLEN`` (``naive:stream:*``).

It does the same work per item as watchkeeper (feedparser, json, BeautifulSoup with lxml, one
Redis write per item in pipelines), so the comparison is about what is kept, not how fast.

    python bench/naive_baseline.py --base http://127.0.0.1:PORT --redis-url URL --tcp-port P
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socketserver
import threading
import time
from typing import Any

import feedparser
import redis
import requests
from bs4 import BeautifulSoup

PREFIX = "naive:"
BATCH = 20

SEEN: dict[str, set[str]] = {}
LOCATION_BATCH_BUFFER: list[dict[str, Any]] = []
BUFFER_TIMESTAMPS: dict[str, float] = {}
PENDING_BATCH_RESULTS: dict[str, list[dict[str, Any]]] = {}
SESSION_HISTORY: list[dict[str, Any]] = []
COUNTS = {"alerts": 0, "logs": 0, "listings": 0, "tcp": 0}
CITIES = (
    "Lyon",
    "Osaka",
    "Nairobi",
    "Houston",
    "Manila",
    "Hamburg",
    "Lima",
    "Chennai",
    "Toronto",
    "Seville",
    "Denver",
    "Jakarta",
    "Krakow",
    "Lagos",
    "Brisbane",
    "Naples",
)


def is_new(source: str, key: str) -> bool:
    seen = SEEN.setdefault(source, set())
    if key in seen:
        return False
    seen.add(key)
    return True


def poll_feed(session: requests.Session, r: redis.Redis, name: str, url: str) -> None:
    body = session.get(url, timeout=30).content
    parsed = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    pipe = r.pipeline(transaction=False)
    for entry in parsed.entries:
        key = str(entry.get("id") or entry.get("link"))
        if not is_new(name, key):
            continue
        alert = {
            "id": key,
            "source": name,
            "title": str(entry.get("title", "")),
            "summary": str(entry.get("summary", "")),
            "link": str(entry.get("link", "")),
            "_batch_queued": True,
        }
        LOCATION_BATCH_BUFFER.append(alert)
        BUFFER_TIMESTAMPS[key] = time.time()
        pipe.sadd(f"{PREFIX}seen:{name}", key)
        pipe.xadd(f"{PREFIX}stream:alerts", {k: str(v) for k, v in alert.items()})
        COUNTS["alerts"] += 1
    pipe.execute()


def process_location_batches(r: redis.Redis, cursor: int) -> int:
    """Locate what arrived since ``cursor``; the buffer itself is never trimmed."""
    while cursor + BATCH <= len(LOCATION_BATCH_BUFFER):
        batch = LOCATION_BATCH_BUFFER[cursor : cursor + BATCH]
        results = []
        for alert in batch:
            city = next((c for c in CITIES if c in alert["title"]), "")
            results.append({"id": alert["id"], "location": city})
            alert["location"] = city
        batch_id = f"batch_{cursor // BATCH}"
        PENDING_BATCH_RESULTS[batch_id] = results
        r.hset(f"{PREFIX}locations", mapping={x["id"]: x["location"] for x in results})
        cursor += BATCH
    return cursor


def poll_logs(session: requests.Session, r: redis.Redis, name: str, url: str) -> None:
    text = session.get(url, timeout=30).text
    pipe = r.pipeline(transaction=False)
    for line in text.splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        key = f"id={data['id']}"
        if not is_new(name, key):
            continue
        pipe.sadd(f"{PREFIX}seen:{name}", key)
        pipe.xadd(f"{PREFIX}stream:logs", {"source": name, "line": line})
        COUNTS["logs"] += 1
    pipe.execute()


def scrape_site(session: requests.Session, r: redis.Redis, name: str, url: str, pages: int) -> None:
    run: dict[str, Any] = {"site": name, "started": time.time(), "items": [], "new": 0}
    pipe = r.pipeline(transaction=False)
    for _ in range(pages):
        soup = BeautifulSoup(session.get(url, timeout=30).content, "lxml")
        for card in soup.select("div.listing"):
            ref = card.select_one(".ref")
            title = card.select_one("h2.title a")
            price = card.select_one(".price")
            item = {
                "id": ref.get_text(strip=True) if ref else "",
                "title": title.get_text(strip=True) if title else "",
                "price": price.get_text(strip=True) if price else "",
            }
            run["items"].append(item)
            if is_new(name, item["id"]):
                run["new"] += 1
                pipe.sadd(f"{PREFIX}seen:{name}", item["id"])
                pipe.xadd(f"{PREFIX}stream:listings", item)  # type: ignore[arg-type]
                COUNTS["listings"] += 1
        nxt = soup.select_one("a.next")
        if nxt is None:
            break
        url = requests.compat.urljoin(url, str(nxt["href"]))
    run["ended"] = time.time()
    SESSION_HISTORY.append(run)
    pipe.rpush(f"{PREFIX}history:{name}", json.dumps(run))
    pipe.execute()


def tcp_server(r: redis.Redis, port: int) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            conn = redis.Redis(connection_pool=r.connection_pool)
            buffer = b""  # no cap: a sender without newlines grows it (seed 001)
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                flush_lines(
                    conn, [x.decode("utf-8", "replace") for x in lines], self.client_address
                )

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def flush_lines(conn: redis.Redis, lines: list[str], peer: Any) -> None:
    if not lines:
        return
    pipe = conn.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(f"{PREFIX}stream:logs", {"source": "tcp", "peer": str(peer), "line": line})
    pipe.execute()
    COUNTS["tcp"] += len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="soak sources URL")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--tcp-port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--site-interval", type=float, default=2.0)
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    r = redis.Redis.from_url(args.redis_url, decode_responses=True)
    server = tcp_server(r, args.tcp_port)
    session = requests.Session()
    cursor, next_site = 0, 0.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            poll_feed(session, r, "soak-rss", f"{args.base}/feeds/soak-rss.rss")
            poll_feed(session, r, "soak-atom", f"{args.base}/feeds/soak-atom.atom")
            poll_logs(session, r, "soak-logs", f"{args.base}/logs/app.ndjson")
            if started >= next_site:
                scrape_site(session, r, "soak-market", f"{args.base}/listings?page=1", 3)
                next_site = started + args.site_interval
            cursor = process_location_batches(r, cursor)
            r.hset(f"{PREFIX}counts", mapping=COUNTS)  # type: ignore[arg-type]
        except (requests.RequestException, redis.RedisError, ValueError) as exc:
            print(f"[naive] poll failed: {exc}", flush=True)
        stop.wait(max(0.0, args.interval - (time.monotonic() - started)))
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
