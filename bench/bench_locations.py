"""Benchmark location batching: gazetteer speed and API calls per 1,000 alerts.

    python bench/bench_locations.py [--alerts 1000] [--repeat 40]

Measures, on this machine, against an embedded Redis (or REDIS_URL) and a local
chat-completions server on 127.0.0.1:

* gazetteer alerts/s — ``locate()`` alone over the headline fixture, index already built;
* pipeline alerts/s — enqueue + flush + process_batch with the gazetteer, through Redis;
* API calls per 1,000 alerts — a healthy API, and a flaky one (every 4th call answers 429);
  the goal is at most 1000 / WATCHKEEPER_LOCATION_BATCH + retries.

Prints a table and writes bench/results/locations.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import workers.stages  # noqa: E402,F401 (declares the stages)
from tasks.locations.batches import enqueue, flush, process_batch  # noqa: E402
from tasks.locations.health import location_status  # noqa: E402
from tasks.locations.resolvers.gazetteer import get_gazetteer, locate  # noqa: E402
from workers.core import keys  # noqa: E402
from workers.core.connection import EmbeddedRedis, connect  # noqa: E402
from workers.core.runtime import Runtime  # noqa: E402
from workers.core.settings import Settings  # noqa: E402

HEADLINES = json.loads((ROOT / "tests" / "data" / "headlines.json").read_text())


class ChatServer:
    """Chat-completions on 127.0.0.1; every ``fail_every``-th call answers 429 (0: never)."""

    def __init__(self, fail_every: int = 0) -> None:
        self.calls = 0
        self.fail_every = fail_every
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.calls += 1
                    fail = server.fail_every and server.calls % server.fail_every == 0
                ids = [a["id"] for a in json.loads(body["messages"][1]["content"])["alerts"]]
                place = {
                    "name": "Lyon",
                    "country_code": "FR",
                    "admin": "",
                    "lat": 45.75,
                    "lon": 4.85,
                    "precision": "city",
                }
                content = json.dumps({"locations": {i: place for i in ids}})
                reply = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
                status = 429 if fail else 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def alerts(n: int, tag: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"{tag}-{i}",
            {"source": "bench", "title": HEADLINES[i % len(HEADLINES)]["title"], "summary": ""},
        )
        for i in range(n)
    ]


def clear(rt: Runtime) -> None:
    keys = list(rt.redis.scan_iter(match=rt.settings.prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        rt.redis.delete(*keys[start : start + 500])


def drain(rt: Runtime) -> tuple[int, int]:
    """Flush and process until every alert is located; return (batches, retry attempts)."""
    batches = retries = 0
    while rt.redis.zcard(keys.LOC_QUEUED.key(rt.settings)):
        for batch_id in flush(rt):
            batches += 1
            while process_batch(rt, batch_id).status == "retry":
                retries += 1
    return batches, retries


def bench_gazetteer(repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    get_gazetteer()
    build_s = time.perf_counter() - started
    texts = [h["title"] for h in HEADLINES] * repeat
    started = time.perf_counter()
    for text in texts:
        locate(text)
    elapsed = time.perf_counter() - started
    return {
        "index_build_s": round(build_s, 3),
        "alerts": len(texts),
        "alerts_per_s": round(len(texts) / elapsed),
    }


def bench_pipeline(rt: Runtime, n: int) -> dict[str, Any]:
    clear(rt)
    started = time.perf_counter()
    enqueue(rt, alerts(n, "pipe"))
    batches, _ = drain(rt)
    elapsed = time.perf_counter() - started
    return {"alerts": n, "batches": batches, "alerts_per_s": round(n / elapsed)}


def bench_api(rt: Runtime, n: int, fail_every: int) -> dict[str, Any]:
    clear(rt)
    server = ChatServer(fail_every)
    rt.settings = replace(
        rt.settings,
        moonshot_api_key="bench-key",
        moonshot_base_url=server.base_url,
        location_retry_backoff=0,
    )
    try:
        enqueue(rt, alerts(n, f"api{fail_every}"))
        batches, retries = drain(rt)
        located = location_status(rt)["located_by_method"]
    finally:
        rt.settings = replace(rt.settings, moonshot_api_key="")
        server.close()
    per_1000 = server.calls * 1000 / n
    goal = 1000 / rt.settings.location_batch + retries * 1000 / n
    return {
        "alerts": n,
        "batches": batches,
        "retries": retries,
        "api_calls": server.calls,
        "api_calls_per_1000": round(per_1000, 1),
        "goal_per_1000": round(goal, 1),
        "meets_goal": per_1000 <= goal,
        "located_by_method": located,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="wk-bench-loc-"))
    embedded = None
    url = os.environ.get("REDIS_URL", "")
    if not url:
        embedded = EmbeddedRedis(home)
        url = embedded.acquire()
    settings = replace(
        Settings.from_env({}),
        redis_url=url,
        home=str(home),
        prefix="wkbench:",
        moonshot_max_buffer_size=max(1000, args.alerts),
    )
    rt = Runtime(settings, connect(url), home / "none.toml")
    try:
        results = {
            "gazetteer": bench_gazetteer(args.repeat),
            "pipeline_gazetteer": bench_pipeline(rt, args.alerts),
            "api_healthy": bench_api(rt, args.alerts, 0),
            "api_every_4th_call_429": bench_api(rt, args.alerts, 4),
        }
        clear(rt)
    finally:
        if embedded is not None:
            embedded.release()
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "batch_size": settings.location_batch,
    }
    rows = [
        (
            "gazetteer locate()",
            f"{results['gazetteer']['alerts_per_s']:,} alerts/s",
            f"index built in {results['gazetteer']['index_build_s']} s",
        ),
        (
            "enqueue+flush+batch (gazetteer)",
            f"{results['pipeline_gazetteer']['alerts_per_s']:,} alerts/s",
            f"{results['pipeline_gazetteer']['batches']} batches",
        ),
    ]
    for name in ("api_healthy", "api_every_4th_call_429"):
        r = results[name]
        rows.append(
            (
                f"API calls / 1000 alerts ({name})",
                f"{r['api_calls_per_1000']}",
                f"goal <= {r['goal_per_1000']} ({r['retries']} retries): "
                f"{'met' if r['meets_goal'] else 'MISSED'}",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>18}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    out = ROOT / "bench" / "results" / "locations.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
