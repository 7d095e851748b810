"""A ``watchkeeper run`` with two trickling notification receivers (issue 19's scenario).

Two webhooks answer every POST with their headers and then one byte of body every 2 s (a
100 kB body: 55 hours), so a per-read timeout never fires; beside them, in the same sink and in
another sink, two webhooks that answer at once (``sources_file``). Feeds on a local server
publish one new item on every poll, every ``interval`` seconds. Measured while it runs
(``scenario``):

* polls: each source's poll count against ``seconds / interval``, the longest gap between two
  polls of one source, and how often a source was seen ``queued`` (its dispatched poll still
  waiting in the broker queue) in two samples running;
* delivery: for every item, its arrival at each prompt webhook minus the moment the feed served
  it (poll → stream → delivery run → send); the goal is 2 s, the item's wait for its poll
  (the interval) not counted;
* the trickling receivers: attempts (each cut at WATCHKEEPER_NOTIFY_TIMEOUT, then retried with
  backoff) and connections still open.

``bench/bench_slow_receivers.py`` runs it for 5 minutes; ``tests/e2e/test_run_slow_receivers.py``
for less.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from bench.wk_run import WatchkeeperRun, clean_env

TRICKLE_S = 2.0
TRICKLE_BYTES = 100_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on a trickle is the point


class Peer:
    """One local HTTP peer: ``kind`` "feeds", "hook" or "trickle"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lock = threading.Lock()
        self.served: dict[str, float] = {}  # feeds: item title → when served
        self.polls: dict[str, list[float]] = {}  # feeds: path → poll times
        self.arrived: dict[str, list[float]] = {}  # hook: title → arrival times
        self.attempts = 0  # trickle: POSTs
        self.open = 0  # trickle: answers still being trickled
        self.stopping = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                peer.feed(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if peer.kind == "trickle":
                    peer.trickle(self)
                else:
                    peer.hook(self, body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def feed(self, req: BaseHTTPRequestHandler) -> None:
        now = time.time()
        with self.lock:
            polls = self.polls.setdefault(req.path, [])
            polls.append(now)
            title = f"{req.path.strip('/')} item {len(polls)}"
            self.served[title] = now
        item = (
            f"<item><title>{escape(title)}</title><link>http://example.org/{len(polls)}</link>"
            f"<guid>{escape(title)}</guid></item>"
        )
        body = (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            f"{item}</channel></rss>"
        ).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/rss+xml")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def hook(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        now = time.time()
        try:
            title = str(json.loads(body).get("title"))
        except ValueError:
            title = ""
        with self.lock:
            self.arrived.setdefault(title, []).append(now)
        req.send_response(200)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def trickle(self, req: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.attempts += 1
            self.open += 1
        try:
            req.close_connection = True
            req.send_response(200)
            req.send_header("Content-Length", str(TRICKLE_BYTES))
            req.end_headers()
            req.wfile.flush()
            for _ in range(TRICKLE_BYTES):
                if self.stopping.wait(TRICKLE_S):
                    break
                req.wfile.write(b" ")
                req.wfile.flush()
        except OSError:
            pass  # the sender hung up: its deadline
        finally:
            with self.lock:
                self.open -= 1

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def sources_file(
    path: Path, feeds: Peer, hooks: list[Peer], slow: list[Peer], n: int, every: float
) -> None:
    """Sinks: ``ops`` (a trickling receiver and a prompt one) and ``team`` (a prompt one) take
    every item; ``late`` (the other trickling receiver) takes every tenth from the third poll
    on — so the two trickling receivers are first due at different times, as when their items
    come from different sources: where one delivery run at a time waits for its slowest
    destination, each then holds a process of its own."""
    text = "".join(
        f'[[feeds]]\nname = "f{i}"\nurl = "http://127.0.0.1:{feeds.port}/f{i}"\n'
        f'interval = "{every:g}s"\n'
        for i in range(n)
    )
    text += (
        f'[[notify]]\nname = "ops"\nurls = ["{slow[0].url()}", "{hooks[0].url()}"]\n'
        'streams = ["alerts"]\n'
        f'[[notify]]\nname = "team"\nurls = ["{hooks[1].url()}"]\nstreams = ["alerts"]\n'
        f'[[notify]]\nname = "late"\nurls = ["{slow[1].url()}"]\nstreams = ["alerts"]\n'
        'include = ["item [0-9]*3$"]\n'
    )
    path.write_text(text)


def scenario(
    home: Path,
    seconds: float,
    feeds_n: int = 4,
    interval: float = 2.0,
    extra_env: dict[str, str] | None = None,
    trickle: bool = True,
) -> dict[str, Any]:
    """Run it; return the measurements (see the module's docstring). ``trickle=False``: the
    same run with prompt receivers in their place (the baseline)."""
    kind = "trickle" if trickle else "hook"
    feeds, hooks, slow = (
        Peer("feeds"),
        [Peer("hook"), Peer("hook")],
        [Peer(kind), Peer(kind)],
    )
    config = home / "sources.toml"
    home.mkdir(parents=True, exist_ok=True)
    sources_file(config, feeds, hooks, slow, feeds_n, interval)
    env = clean_env(
        {
            "WATCHKEEPER_WEB_PORT": "0",
            "WATCHKEEPER_HOST_DELAY": "0.05",
            "WATCHKEEPER_HOST_CONCURRENCY": "4",
            **(extra_env or {}),
        }
    )
    run = WatchkeeperRun(home, config, env)
    queued_runs: dict[str, int] = {}
    queued_seen: dict[str, int] = {}
    try:
        client = run.start()
        started = time.time()
        # measuring starts with the first poll of every source
        while len(feeds.polls) < feeds_n and time.time() - started < 120:
            time.sleep(0.2)
        begin = time.time()
        streak: dict[str, int] = {}
        while time.time() - begin < seconds:
            for i in range(feeds_n):
                name = f"f{i}"
                queued = bool(client.exists(f"wk:queued:feed:{name}"))
                streak[name] = streak.get(name, 0) + 1 if queued else 0
                queued_seen[name] = queued_seen.get(name, 0) + int(queued)
                queued_runs[name] = max(queued_runs.get(name, 0), streak[name])
            time.sleep(2.0)
        end = time.time()
        notify_status = _notify_status(client)
    finally:
        problems = run.stop()
        for peer in (feeds, *hooks, *slow):
            peer.stop()
    return measure(feeds, hooks, slow, begin, end, interval, feeds_n) | {
        "queued_samples": queued_seen,
        "queued_longest_streak_samples": queued_runs,
        "notify": notify_status,
        "stop_problems": problems,
        "seconds": round(end - begin, 1),
        "interval_s": interval,
    }


def _notify_status(client: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sink in ("ops", "team", "late"):
        state = {str(k): str(v) for k, v in client.hgetall(f"wk:notify:{sink}:state").items()}
        out[sink] = {k: state.get(k) for k in ("delivered", "retried", "failed", "queued")}
    out["queue_length"] = int(client.llen("notify"))
    return out


def measure(
    feeds: Peer,
    hooks: list[Peer],
    slow: list[Peer],
    begin: float,
    end: float,
    interval: float,
    n: int,
) -> dict[str, Any]:
    polls = {}
    for i in range(n):
        times = [t for t in feeds.polls.get(f"/f{i}", []) if begin <= t <= end]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        polls[f"f{i}"] = {
            "polls": len(times),
            "expected": int((end - begin) / interval),
            "gap_p50_s": round(percentile(gaps, 50), 2) if gaps else None,
            "max_gap_s": round(max(gaps), 2) if gaps else None,
        }
    latencies: list[float] = []
    missing = duplicates = 0
    settled = {t: s for t, s in feeds.served.items() if begin <= s <= end - 15}
    for hook in hooks:
        for title, served in settled.items():
            arrivals = hook.arrived.get(title, [])
            if not arrivals:
                missing += 1
                continue
            duplicates += len(arrivals) - 1
            latencies.append(arrivals[0] - served)
    return {
        "polls": polls,
        "items": len(settled),
        "deliveries": len(latencies),
        "missing": missing,
        "duplicates": duplicates,
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "within_2s": sum(x <= 2.0 for x in latencies),
        "trickle_attempts": [p.attempts for p in slow],
        "trickle_open_at_end": [p.open for p in slow],
    }
