"""Scale: N sources on one Redis — dispatch lateness, Redis cost, beat's cost, status at size.

    python bench/scale.py --sources 10000 --minutes 2
    python bench/scale.py --sources 1000000 --minutes 10

A private ``redis-server`` (a free port, ``--save ""``, no append-only file: ``used_memory`` per
source is clean), a fast local feed server (a separate process, threaded, keep-alive,
``TCP_NODELAY``) answering 304 to a conditional request nine times in ten and otherwise a new
version (a new item, a new ETag), and the real thing: ``celery -A workers beat``
(``DispatchScheduler``) and one ``celery -A workers worker`` (prefork, 2 children).

N sources are written into the registry through its own write path (``source_writes.write``,
2,000 a call, owner ``api``): 90 % feeds, 10 % HTTP log endpoints, intervals as a real list
has them — 5 min 5 %, 15 min 10 %, 30 min 10 %, 1 h 35 %, 6 h 25 %, 24 h 15 % (about 0.44
polls/s per 1,000 sources). **The system starts as if it had run for a day**: every source's
state is written as a poll leaves it (ETag, last poll, ``dispatch_fp`` — the fingerprint beat
computes, so no source counts as changed — and ``next_check`` spread uniformly over its
interval from the moment the run starts), and the due set holds each. Otherwise a million
sources would all be due at once and the run would measure a catch-up, not a steady state.

Dispatch lateness is measured on the sources with an interval of 1 h or more whose seeded
``next_check`` falls inside the run (each is dispatched once): their ``dispatched_at`` (set in
the dispatch script, on Redis's clock) minus that ``next_check``; one not dispatched by the end
counts with the end as its dispatch time. Reported with: polls/s (states whose ``last_poll``
moved), Redis ``used_memory`` per source (seeded state = a polled source's; before and after
the run), the longest commands (``SLOWLOG`` at 2 ms, ``LATENCY LATEST``), beat's CPU and RSS,
beat's start-up (process start → registry read → first pass, from its log and Redis), and
``status`` (sources and beat sections, in process), the dashboard's sources page and the
API's first page of sources (over HTTP, ``watchkeeper web``) at that size. Results:
``bench/results/scale.json`` (per N, merged).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import redis
import requests

import workers.stages  # noqa: F401 (declares the source kinds)
from bench.common import RESULTS, machine, write_result
from workers.core import keys
from workers.core.settings import Settings
from workers.core.source_registry import Definition
from workers.polling.dispatch import source_entry
from workers.polling.kinds import kind_of
from workers.polling.state import state_ttl
from workers.store.source_writes import write

ROOT = Path(__file__).resolve().parents[1]
INTERVALS = [(300, 5), (900, 10), (1800, 10), (3600, 35), (21600, 25), (86400, 15)]
SHORT_INTERVALS = [(60, 50), (120, 30), (300, 20)]
"""``--mix short``: every source polled again and again within minutes, to see memory settle
once each has been polled (the soak's rule), which a day's mix would take days to show."""
"""(seconds, percent of sources)."""
WRITE_CHUNK = 2000
SEED_CHUNK = 5000
SLOWLOG_US = 2000
"""Commands slower than this (µs) are kept in SLOWLOG (the last 20,000)."""
UNCHANGED = 0.9
"""Share of conditional requests answered 304."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the feed server --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        etag = self.headers.get("If-None-Match")
        if etag and random.random() < UNCHANGED:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        version = f"{time.time_ns():x}"
        path = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/l/"):
            body = json.dumps({"id": f"{path}-{version}", "msg": "event"}).encode() + b"\n"
            ctype = "application/x-ndjson"
        else:
            body = (
                '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
                f"<link>http://x/</link><description>d</description><item><title>{path} "
                f"{version}</title><guid>{path}-{version}</guid><link>http://x/{path}/"
                f"{version}</link></item></channel></rss>"
            ).encode()
            ctype = "application/rss+xml"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("ETag", f'"{version}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# --- the sources --------------------------------------------------------------------------------


def interval_of(i: int) -> int:
    """The i-th source's interval: the mix, deterministic, interleaved."""
    slot = (i * 7919) % 100
    for seconds, share in INTERVALS:
        if slot < share:
            return seconds
        slot -= share
    return INTERVALS[-1][0]


def definition_of(i: int, port: int) -> Definition:
    interval = interval_of(i)
    if i % 10 == 9:
        table = {"url": f"http://127.0.0.1:{port}/l/{i}", "interval": interval, "format": "ndjson"}
        return Definition(f"l{i:07d}", "http_log", "api", table)
    return Definition(
        f"f{i:07d}", "feed", "api", {"url": f"http://127.0.0.1:{port}/f/{i}", "interval": interval}
    )


def register(client: redis.Redis, settings: Settings, n: int, port: int) -> float:
    """Every source through the registry's write path; seconds taken."""
    started = time.perf_counter()
    for lo in range(0, n, WRITE_CHUNK):
        puts = [definition_of(i, port) for i in range(lo, min(n, lo + WRITE_CHUNK))]
        write(client, settings, "api", puts, read=lo == 0)  # the first chunk read in full
    return time.perf_counter() - started


def seed(
    client: redis.Redis, settings: Settings, n: int, port: int, start: float
) -> dict[str, tuple[float, int]]:
    """Each source's state as a day of polling leaves it, due uniformly over its interval from
    ``start``; returns the lateness sample: entry → (seeded next_check, interval)."""
    rng = random.Random(22)
    sample: dict[str, tuple[float, int]] = {}
    due_key = keys.BEAT_DUE.key(settings)
    for lo in range(0, n, SEED_CHUNK):
        pipe = client.pipeline(transaction=False)
        due: dict[str, float] = {}
        for i in range(lo, min(n, lo + SEED_CHUNK)):
            source = definition_of(i, port).build()
            entry = source_entry(settings, source, kind_of(source).task)
            interval = source.interval
            next_check = start + rng.random() * interval
            last = next_check - interval
            state = {
                "etag": '"seed"',
                "next_check": f"{next_check:.6f}",
                "next_check_reason": "interval",
                "errors": "0",
                "last_poll": f"{last:.6f}",
                "last_ok": f"{last:.6f}",
                "last_status": "304",
                "last_elapsed_s": "0.004",
                "last_fetched": "0",
                "last_new": "0",
                "last_duplicate": "0",
                "last_bad": "0",
                "dispatched_at": f"{last - 0.01:.6f}",
                "dispatch_fp": entry.fingerprint,
            }
            pipe.hset(entry.state_key, mapping=state)
            pipe.expire(entry.state_key, state_ttl(settings, source))
            due[entry.name] = next_check
            if interval >= 3600:
                sample[entry.name] = (next_check, interval)
        pipe.zadd(due_key, due)
        pipe.execute()
    return sample


# --- processes ----------------------------------------------------------------------------------


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--maxclients",
            "2000",
        ],
        stdout=open(workdir / "redis.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            return proc
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def celery(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", *args],
        env=env,
        cwd=cwd,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """A warm stop (the parent's own SIGTERM: it stops its pool); its group killed if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process and its children, those that ended (pool children replaced
    after WATCHKEEPER_MAX_TASKS_PER_CHILD) included."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        total += t.children_user + t.children_system
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def waited(pid: int) -> float:
    """Seconds a process has spent runnable but waiting for a CPU (``/proc/PID/schedstat``):
    what another process on the same cores costs it — a command Redis was running then took
    that much longer, though Redis did no more work."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1]) / 1e9
    return total


def redis_now(client: redis.Redis) -> float:
    sec, micros = client.time()
    return float(sec) + float(micros) / 1e6


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y)."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_get(url: str, timeout: float) -> tuple[float | None, int]:
    started = time.perf_counter()
    try:
        reply = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return None, 0
    return time.perf_counter() - started, reply.status_code


# --- the run --------------------------------------------------------------------------------------


def run(n: int, minutes: float, workdir: Path, lead: float | None) -> dict[str, Any]:  # noqa: C901
    rport, fport, wport = free_port(), free_port(), free_port()
    rproc = start_redis(rport, workdir)
    server = mp.Process(target=serve, args=(fport,), daemon=True)
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = f"redis://127.0.0.1:{rport}/0"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WATCHKEEPER_") and k != "REDIS_URL"
        }
        env.update(
            {
                "REDIS_URL": url,
                "PYTHONPATH": str(ROOT),
                "WATCHKEEPER_HOME": str(workdir / "home"),
                "WATCHKEEPER_HOST_DELAY": "0",
                "WATCHKEEPER_HOST_CONCURRENCY": "64",
                "WATCHKEEPER_MAX_SOURCES": str(max(n, 10000)),
                "WATCHKEEPER_WEB_PORT": str(wport),
                "PYTHONUNBUFFERED": "1",
            }
        )
        settings = Settings.from_env(env)
        client = redis.Redis(port=rport, decode_responses=True)
        base_memory = int(client.info("memory")["used_memory"])
        client.config_set("slowlog-log-slower-than", SLOWLOG_US)
        client.config_set("slowlog-max-len", 20000)
        client.config_set("latency-monitor-threshold", 1)

        written_s = register(client, settings, n, fport)
        print(f"registered {n} sources in {written_s:.1f} s", flush=True)
        registry_memory = int(client.info("memory")["used_memory"])
        lead = lead if lead is not None else max(15.0, n / 15000)
        started_seed = time.perf_counter()
        start = redis_now(client) + lead + 0.0  # the seeded due times start here
        sample = seed(client, settings, n, fport, start)
        seeded_s = time.perf_counter() - started_seed
        seeded_memory = int(client.info("memory")["used_memory"])
        print(f"seeded {n} states in {seeded_s:.1f} s; due times from +{lead:.0f} s", flush=True)
        client.slowlog_reset()
        client.execute_command("LATENCY", "RESET")
        (workdir / "home").mkdir(exist_ok=True)

        worker = celery(
            [
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
                "--queues",
                "celery",
                "--hostname",
                f"scale-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
            workdir / "worker.log",
            workdir,
        )
        procs.append(worker)
        beat_started = time.time()
        beat = celery(["beat", "--loglevel", "INFO"], env, workdir / "beat.log", workdir)
        procs.append(beat)
        web = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "web"],
            env=env,
            cwd=workdir,
            stdout=open(workdir / "web.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(web)
        stats_key = keys.BEAT_STATS.key(settings)
        first_pass = None
        while time.time() - beat_started < 1800:
            if beat.poll() is not None:
                raise SystemExit(f"beat exited; see {workdir / 'beat.log'}")
            if client.hget(stats_key, "last_pass"):
                first_pass = time.time()
                break
            time.sleep(0.05)
        assert first_pass is not None, "no first pass within 30 min"
        read_at, full_pass_s = None, None
        deadline = time.time() + max(30.0, n / 5000)  # the first full pass's log line
        while full_pass_s is None and n > 10000 and time.time() < deadline:
            for line in (workdir / "beat.log").read_text(errors="replace").splitlines():
                m = re.search(r"full pass: \d+ entries in ([\d.]+) s", line)
                if m:
                    full_pass_s = float(m.group(1))
            time.sleep(0.5)
        for line in (workdir / "beat.log").read_text(errors="replace").splitlines():
            m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)", line)
            if m and "source registry read" in line:
                read_at = (
                    time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
                    + int(m.group(1)[20:]) / 1000
                )
        first_pass_redis = redis_now(client)
        print(f"beat: first pass {first_pass - beat_started:.1f} s after start", flush=True)
        time.sleep(max(0.0, start - first_pass_redis))  # measured from the first due time on

        bproc, wproc = psutil.Process(beat.pid), psutil.Process(worker.pid)
        t0, redis_t0 = time.monotonic(), redis_now(client)
        cpu0 = {
            "beat": tree_cpu(bproc),
            "workers": tree_cpu(wproc),
            "redis": tree_cpu(psutil.Process(rproc.pid)),
        }
        stats0 = client.hgetall(stats_key)
        wait0 = {"redis": waited(rproc.pid), "beat": waited(beat.pid)}
        mem_points: list[tuple[float, float]] = []
        rss_points: list[tuple[float, float]] = []
        beat_rss: list[int] = []
        load: list[float] = []
        deadline = t0 + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            now = time.monotonic() - t0
            mem_points.append((now, int(client.info("memory")["used_memory"]) / 2**20))
            rss_points.append((now, tree_rss(wproc) / 2**20))
            beat_rss.append(tree_rss(bproc))
            load.append(os.getloadavg()[0])
            print(
                f"  {now:5.0f} s: redis {mem_points[-1][1]:.0f} MB, workers RSS "
                f"{rss_points[-1][1]:.0f} MB, beat RSS {beat_rss[-1] / 2**20:.0f} MB, "
                f"load {load[-1]:.2f}",
                flush=True,
            )
        elapsed = time.monotonic() - t0
        redis_end = redis_now(client)
        cpu1 = {
            "beat": tree_cpu(bproc),
            "workers": tree_cpu(wproc),
            "redis": tree_cpu(psutil.Process(rproc.pid)),
        }
        stats1 = client.hgetall(stats_key)
        wait1 = {"redis": waited(rproc.pid), "beat": waited(beat.pid)}

        # lateness: sampled sources due inside the run (after beat's first pass)
        window = [
            (name, due)
            for name, (due, _) in sample.items()
            if first_pass_redis + 1 <= due <= redis_end - 2
        ]
        random.Random(1).shuffle(window)
        window = window[:50000]
        late: list[float] = []
        missed = 0
        for lo in range(0, len(window), 5000):
            pipe = client.pipeline(transaction=False)
            for name, _ in window[lo : lo + 5000]:
                pipe.hget(keys.SOURCE_STATE.key(settings, name.split(":", 1)[1]), "dispatched_at")
            for (_name, due), at in zip(window[lo : lo + 5000], pipe.execute(), strict=True):
                at_f = float(at or 0)
                if at_f < due - 1:
                    missed += 1
                    late.append(redis_end - due)
                else:
                    late.append(max(0.0, at_f - due))

        # polls: states whose last_poll moved into the run
        polled = 0
        names = [definition_of(i, fport).name for i in range(n)]
        for lo in range(0, n, 10000):
            pipe = client.pipeline(transaction=False)
            for name in names[lo : lo + 10000]:
                pipe.hget(keys.SOURCE_STATE.key(settings, name), "last_poll")
            polled += sum(1 for v in pipe.execute() if v and float(v) >= redis_t0)

        slow = client.slowlog_get(20000)
        slowest = sorted(slow, key=lambda e: -int(e["duration"]))[:5]
        steady = [e for e in slow if float(e["start_time"]) >= first_pass_redis + 30]
        latency = client.execute_command("LATENCY", "LATEST")
        end_memory = int(client.info("memory")["used_memory"])

        # status, dashboard and API at this size
        from workers.core.runtime import Runtime
        from workers.ops.status import collect_status
        from workers.polling.dispatch_status import beat_section
        from workers.polling.status import sources_section

        rt = Runtime(settings, client, None)
        surfaces: dict[str, Any] = {}
        for label, fn in (("status_beat_s", beat_section), ("status_sources_s", sources_section)):
            s0 = time.perf_counter()
            try:
                fn(rt)
                surfaces[label] = round(time.perf_counter() - s0, 3)
            except Exception as exc:  # report, do not stop the run
                surfaces[label] = f"failed: {type(exc).__name__}: {str(exc)[:100]}"
        s0 = time.perf_counter()
        collect_status(rt)
        surfaces["status_all_s"] = round(time.perf_counter() - s0, 3)
        web_url = f"http://127.0.0.1:{wport}"
        for label, path in (
            ("dashboard_sources_s", "/sources"),
            ("api_sources_page_s", "/api/v1/sources?limit=100"),
        ):
            took, code = timed_get(web_url + path, 300)
            surfaces[label] = (
                round(took, 3) if took is not None and code == 200 else f"failed ({code})"
            )

        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        dispatched = int(stats1.get("dispatched", 0)) - int(stats0.get("dispatched", 0))
        result = {
            "sources": n,
            "minutes": round(elapsed / 60, 2),
            "lateness_sample": len(late),
            "lateness_p50_s": round(pct(late, 0.5), 3),
            "lateness_p99_s": round(pct(late, 0.99), 3),
            "lateness_max_s": round(max(late), 3) if late else None,
            "not_dispatched": missed,
            "polls_per_s": round(polled / elapsed, 1),
            "dispatched_per_s": round(dispatched / elapsed, 1),
            "skipped": {
                k: int(stats1.get(k, 0)) - int(stats0.get(k, 0))
                for k in stats1
                if k.startswith("skipped_")
            },
            "redis_bytes_per_source_registry": round((registry_memory - base_memory) / n),
            "redis_bytes_per_source": round((seeded_memory - base_memory) / n),
            "redis_bytes_per_source_end": round((end_memory - base_memory) / n),
            "redis_slope_mb_per_min": round(slope(mem_points[len(mem_points) // 2 :]) * 60, 3),
            # per 100k polls made (dispatched: a source polled again counts again)
            "workers_rss_mb_per_100k_polls": (
                round(slope(rss_points[len(rss_points) // 2 :]) / (dispatched / elapsed) * 1e5, 3)
                if dispatched
                else None
            ),
            "memory_samples": {"redis_mb": mem_points, "workers_rss_mb": rss_points},
            "workers_rss_slope_mb_per_min": round(
                slope(rss_points[len(rss_points) // 2 :]) * 60, 3
            ),
            "slowest_commands": [
                {"ms": round(int(e["duration"]) / 1000, 2), "command": str(e["command"])[:80]}
                for e in slowest
            ],
            "slowest_ms": round(int(slowest[0]["duration"]) / 1000, 2) if slowest else 0.0,
            "commands_over_5ms": sum(1 for e in slow if int(e["duration"]) > 5000),
            "steady_slowest_ms": round(
                max((int(e["duration"]) for e in steady), default=0) / 1000, 2
            ),
            "steady_commands_over_5ms": sum(1 for e in steady if int(e["duration"]) > 5000),
            "steady_slowest_commands": [
                {"ms": round(int(e["duration"]) / 1000, 2), "command": str(e["command"])[:80]}
                for e in sorted(steady, key=lambda e: -int(e["duration"]))[:5]
            ],
            "commands_over_2ms": len(slow),
            "latency_latest": [[str(x) for x in row] for row in latency],
            "beat_cpu_pct": round(100 * cpu["beat"] / elapsed, 1),
            "redis_waiting_for_cpu_pct": round(
                100 * (wait1["redis"] - wait0["redis"]) / elapsed, 1
            ),
            "beat_waiting_for_cpu_pct": round(100 * (wait1["beat"] - wait0["beat"]) / elapsed, 1),
            "workers_cpu_pct": round(100 * cpu["workers"] / elapsed, 1),
            "redis_cpu_pct": round(100 * cpu["redis"] / elapsed, 1),
            "beat_rss_mb": round(max(beat_rss) / 2**20, 1) if beat_rss else None,
            "beat_start_to_registry_read_s": round(read_at - beat_started, 1) if read_at else None,
            "beat_start_to_first_pass_s": round(first_pass - beat_started, 1),
            "first_full_pass_s": full_pass_s,
            "register_s": round(written_s, 1),
            "seed_s": round(seeded_s, 1),
            "load_avg": [round(min(load), 2), round(max(load), 2)] if load else [],
            **surfaces,
        }
        return result
    finally:
        for proc in reversed(procs):
            stop(proc)
        server.terminate()
        server.join(5)
        rproc.terminate()
        rproc.wait(timeout=30)


ROWS = [
    (
        "lateness p50 / p99 / max (s)",
        lambda r: f"{r['lateness_p50_s']} / {r['lateness_p99_s']} / {r['lateness_max_s']}",
    ),
    (
        "lateness sample (not dispatched)",
        lambda r: f"{r['lateness_sample']} ({r['not_dispatched']})",
    ),
    ("polls/s (dispatched/s)", lambda r: f"{r['polls_per_s']} ({r['dispatched_per_s']})"),
    (
        "Redis bytes per source (registry only; after the run)",
        lambda r: (
            f"{r['redis_bytes_per_source']} ({r['redis_bytes_per_source_registry']}; "
            f"{r['redis_bytes_per_source_end']})"
        ),
    ),
    (
        "slowest Redis command (ms); commands > 5 ms / > 2 ms",
        lambda r: (
            f"{r['slowest_ms']}; {r['commands_over_5ms']} / {r.get('commands_over_2ms', '-')}"
        ),
    ),
    (
        "after start-up (first pass + 30 s): slowest (ms); commands > 5 ms",
        lambda r: f"{r['steady_slowest_ms']}; {r['steady_commands_over_5ms']}",
    ),
    ("beat CPU % / RSS MB", lambda r: f"{r['beat_cpu_pct']} / {r['beat_rss_mb']}"),
    ("workers / Redis CPU %", lambda r: f"{r['workers_cpu_pct']} / {r['redis_cpu_pct']}"),
    (
        "Redis / beat runnable but waiting for a CPU (% of the run)",
        lambda r: (
            f"{r.get('redis_waiting_for_cpu_pct', '-')} / {r.get('beat_waiting_for_cpu_pct', '-')}"
        ),
    ),
    (
        "beat start → registry read → first pass starts (s)",
        lambda r: (
            f"{r['beat_start_to_registry_read_s']} → {r['beat_start_to_first_pass_s']} "
            f"(first full pass {r.get('first_full_pass_s') or '-'} s)"
        ),
    ),
    (
        "status: beat / sources section / all (s)",
        lambda r: f"{r['status_beat_s']} / {r['status_sources_s']} / {r['status_all_s']}",
    ),
    (
        "dashboard sources page / API first page (s)",
        lambda r: f"{r['dashboard_sources_s']} / {r['api_sources_page_s']}",
    ),
    (
        "Redis / workers memory slope (MB/min, 2nd half)",
        lambda r: f"{r['redis_slope_mb_per_min']} / {r['workers_rss_slope_mb_per_min']}",
    ),
    ("load average (min-max)", lambda r: "-".join(str(x) for x in r["load_avg"])),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, nargs="+", default=[10000])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument(
        "--lead", type=float, default=None, help="seconds from seeding to the first due time"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--mix",
        choices=("day", "short"),
        default="day",
        help="intervals: a real list's (5 min-24 h), or 1-5 min to see memory settle",
    )
    args = parser.parse_args()
    if args.mix == "short":
        INTERVALS[:] = SHORT_INTERVALS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop what it started
    path = RESULTS / "scale.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    runs: dict[str, Any] = dict(previous.get("watchkeeper", {}))
    for n in args.sources:
        workdir = Path(tempfile.mkdtemp(prefix=f"wk-scale-{n}-"))
        print(f"== {n} sources, {args.minutes:g} min (work dir {workdir})", flush=True)
        result = run(n, args.minutes, workdir, args.lead)
        result["machine"] = machine()
        result["mix"] = args.mix
        runs[str(n) if args.mix == "day" else f"{n}-{args.mix}"] = result
        print(json.dumps(result, indent=1), flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    shown = sorted(runs, key=lambda k: (int(k.split("-")[0]), k))

    def head(k: str) -> str:
        n, _, mix = k.partition("-")
        return f"{int(n):,} sources" + (f" ({mix} intervals)" if mix else "")

    print("| measure | " + " | ".join(head(n) for n in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for label, cell in ROWS:
        cells = []
        for n in shown:
            try:
                cells.append(str(cell(runs[n])))
            except (KeyError, TypeError, ValueError):
                cells.append("-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    out = {k: v for k, v in previous.items() if k != "machine"}
    out["watchkeeper"] = runs
    print(f"wrote {write_result('scale', out)}")


if __name__ == "__main__":
    main()
