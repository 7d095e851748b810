"""The dashboard's sources page with 1,000 sources: latency of a real HTTP request.

    python bench/bench_web.py [--sources 1000] [--requests 50]

Writes a sources file of N feeds, gives every source the state a poll leaves (validators,
counts, an error on every tenth) and a seen-set of 200 keys, serves the dashboard with uvicorn
on 127.0.0.1 and times GET /sources (the whole page) and its live fragment (what htmx fetches
every WATCHKEEPER_WEB_REFRESH seconds). Goal: under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers.stages  # noqa: F401 (declares the source kinds)
from bench.common import bench_redis, write_result
from workers.core import keys
from workers.core.connection import connect
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.ops.sources.apply import apply_file
from workers.ops.web.app import create_app

GOAL_MS = 300.0


def fill(rt: Runtime, n: int) -> None:
    s = rt.settings
    pipe = rt.redis.pipeline(transaction=False)
    now = time.time()
    for i in range(n):
        name = f"feed-{i:04d}"
        pipe.hset(
            keys.SOURCE_STATE.key(s, name),
            mapping={
                "etag": f'"{i}"',
                "last_poll": now - 30,
                "last_ok": now - 30,
                "next_check": now + 240,
                "errors": 3 if i % 10 == 0 else 0,
                "last_error": "HTTP 503 from the server" if i % 10 == 0 else "",
                "last_status": "error" if i % 10 == 0 else "ok",
                "last_fetched": 50,
                "last_new": 2,
                "last_duplicate": 48,
                "last_bad": 0,
            },
        )
        pipe.zadd(keys.SEEN.key(s, name), {f"k{j}": now for j in range(200)})
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()


def timed(url: str, count: int, headers: dict[str, str]) -> tuple[list[float], float]:
    """Wall-clock ms of each request, and the CPU ms this process (server and client) spent
    per request: on a busy machine the first grows with others' load, the second does not."""
    session = requests.Session()
    session.get(url, headers=headers, timeout=30)  # warm up (templates compiled)
    out = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return out, (time.process_time() - cpu) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    config = Path(tempfile.mkdtemp(prefix="wk-bench-web-")) / "sources.toml"
    config.write_text(
        "".join(
            f'[[feeds]]\nname = "feed-{i:04d}"\nurl = "http://127.0.0.1:9/f/{i}.rss"\n'
            'interval = "5m"\n\n'
            for i in range(args.sources)
        )
    )
    with bench_redis() as url:
        settings = Settings.from_env({"REDIS_URL": url})
        client = connect(url)
        for key in client.scan_iter(match="wk:*", count=1000):
            client.delete(key)
        rt = Runtime(settings, client, config)
        apply_file(client, settings, config)  # the dashboard lists the registry's sources
        fill(rt, args.sources)
        app = create_app(rt, lambda *a: None)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        rows = {
            "page": timed(base + "/sources", args.requests, {}),
            "fragment": timed(base + "/sources", args.requests, {"HX-Request": "true"}),
        }
        size = len(requests.get(base + "/sources", timeout=30).content)
        server.should_exit = True
    result = {
        "sources": args.sources,
        "requests": args.requests,
        "page_bytes": size,
        "goal_ms": GOAL_MS,
    }
    print(
        f"GET /sources with {args.sources} sources ({size / 1024:.0f} KiB), "
        f"{args.requests} requests"
    )
    load = os.getloadavg()[0]
    result["load_avg_1m"] = round(load, 2)
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} during the run")
    print("| what | p50 ms | p95 ms | max ms | CPU ms/request | p50 under goal |")
    print("|---|---|---|---|---|---|")
    for what, (times, cpu) in rows.items():
        p50 = statistics.median(times)
        p95 = sorted(times)[int(0.95 * (len(times) - 1))]
        result[what] = {
            "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(max(times), 1),
            "cpu_ms_per_request": round(cpu, 1),
        }
        print(
            f"| {what} | {p50:.0f} | {p95:.0f} | {max(times):.0f} | {cpu:.0f} | "
            f"{'yes' if p50 < GOAL_MS else 'NO'} |"
        )
    print(f"results: {write_result('web', result)}")


if __name__ == "__main__":
    main()
