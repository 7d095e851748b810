"""Per-poll overhead: many small feeds polled by ``watchkeeper run`` against rss2email.

    python bench/bench_polls.py                 # feedparser's test corpus (~2,200 feeds)
    python bench/bench_polls.py --profile       # the same with py-spy on the worker processes
    python bench/bench_polls.py --generated 2000  # generated small feeds instead

The feeds are feedparser's own test corpus (every ``tests/**/*.xml`` of its sdist, fetched once
with ``pip download feedparser --no-binary :all: --no-deps`` into ``~/.cache``): small, odd,
often broken feeds — many without entries, which both programs treat as that feed's error.
One local HTTP/1.1 server (a separate process, ``http.server`` with Last-Modified and 304s)
serves them to both sides in the same run:

* **rss2email** (``r2e run --no-send``, Debian's ``rss2email``, one process): a fresh config
  with one ``[feed.*]`` section per file and a fresh data file, so every feed is new to it;
  timed from process start to exit.
* **watchkeeper** (``watchkeeper run``, default concurrency, embedded Redis, fresh home): one
  ``[[feeds]]`` per file, ``locate = false`` (rss2email locates nothing), interval 24 h. After
  one warm-up poll (workers up), every feed is written into the sources file at once: beat
  reloads it and dispatches them all in its next pass (a new source is due at once). The
  clock starts when the file is written and stops when the last poll has written its state
  (Redis time), so beat's reload and dispatch are counted.
  Politeness for the single local host: ``WATCHKEEPER_HOST_DELAY=0`` (no pause between
  requests: the host is ours) and ``WATCHKEEPER_HOST_CONCURRENCY`` = the pool size (each child
  may have one request in flight) — the slots, locks, state and dedup all still run.

Reported: feeds/s of each and the ratio; worker CPU-ms per poll (parent + pool children) and
the other processes' CPU (beat, Redis, HTTP server); Redis round trips per poll (Redis's
``total_reads_processed`` delta: one per request a client sent, a pipeline counting once) and
commands per poll by name (``INFO commandstats``, commands run inside scripts included);
with ``--profile``, where the pool children's wall time goes (py-spy, idle included).
Results: ``bench/results/polls.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result
from bench.soak import _free_port
from bench.wk_run import (
    Profiler,
    WatchkeeperRun,
    buckets,
    clean_env,
    counter_delta,
    cpu_seconds,
    redis_counters,
    top_functions,
)
from workers.core import keys
from workers.core.settings import Settings

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "watchkeeper-bench"
GOAL = 1.0

WALL_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("idle: pool child waiting for a task", ("workloop (billiard", "!trace_task")),
    ("idle: parent waiting for events", ("_epoll.poll",)),
    ("politeness wait", ("host_slot (workers/polling/politeness.py", "sleep")),
    ("Redis round trips", ("redis/",)),
    ("HTTP fetch", ("requests/",)),
    ("HTTP fetch", ("urllib3/",)),
    ("feedparser", ("feedparser/",)),
    ("logging", ("logging/__init__.py",)),
    ("memory guard", ("workers/guard/",)),
    ("poll loop (other)", ("workers/polling/",)),
    ("poll loop (other)", ("tasks/feeds/",)),
    ("Celery/kombu/billiard (other)", ("celery/",)),
    ("Celery/kombu/billiard (other)", ("kombu/",)),
    ("Celery/kombu/billiard (other)", ("billiard/",)),
]
"""Where wall time goes (py-spy, idle included, main threads): all needles of a rule must be
in the stack (``!``: must not be); the first matching rule wins."""


IDLE = ("_epoll.poll", "recv_bytes (billiard")
"""Stacks of a process waiting for work, left out of the hottest functions."""


# --- the corpus --------------------------------------------------------------------------


def feedparser_corpus() -> Path:
    """feedparser's ``tests`` folder from its sdist (downloaded once into the cache)."""
    import feedparser

    version = feedparser.__version__
    root = CACHE / f"feedparser-{version}"
    if (root / "tests").is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"feedparser-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"feedparser=={version}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--quiet",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        tar.extractall(CACHE, members=members, filter="data")
    return root


def generated_corpus(count: int, directory: Path) -> Path:
    """``count`` small RSS 2.0 feeds of 5 entries each."""
    feeds = directory / "tests" / "generated"
    feeds.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        items = "".join(
            f"<item><title>Feed {n} entry {i}</title><link>http://example.org/{n}/{i}</link>"
            f"<guid>urn:{n}:{i}</guid><description>Entry {i} of feed {n}.</description></item>"
            for i in range(5)
        )
        (feeds / f"feed{n:05d}.xml").write_text(
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {n}</title>'
            f"<link>http://example.org/{n}</link><description>d</description>{items}"
            "</channel></rss>"
        )
    return directory


def corpus_paths(root: Path, limit: int) -> list[str]:
    paths = sorted(
        os.path.relpath(p, root)
        for p in glob.glob(str(root / "tests" / "**" / "*.xml"), recursive=True)
    )
    return paths[:limit] if limit else paths


# --- the server (its own process) ----------------------------------------------------------


def serve(directory: str, port: int) -> None:
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # As production servers do (nginx, Apache): without it the body, sent after the
        # headers, waits for the client's delayed ACK — 40 ms per keep-alive request.
        disable_nagle_algorithm = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import requests

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the corpus server did not start")


def feed_name(index: int) -> str:
    return f"fp{index:05d}"


# --- rss2email -----------------------------------------------------------------------------


def run_rss2email(
    base: str, paths: list[str], work: Path, server: psutil.Process
) -> dict[str, Any]:
    r2e = shutil.which("r2e")
    if r2e is None:
        raise SystemExit("rss2email is not installed: apt-get install -y rss2email")
    work.mkdir(parents=True, exist_ok=True)
    cfg, data = work / "rss2email.cfg", work / "rss2email.json"
    lines = ["[DEFAULT]", "to = bench@example.invalid", ""]
    for i, path in enumerate(paths):
        lines += [f"[feed.{feed_name(i)}]", f"url = {base}/{path}", ""]
    cfg.write_text("\n".join(lines))
    data.unlink(missing_ok=True)
    server_cpu = cpu_seconds([server])
    started = time.monotonic()
    with open(work / "r2e.log", "wb") as log:
        proc = subprocess.Popen(
            [r2e, "-c", str(cfg), "-d", str(data), "run", "--no-send"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        ps = psutil.Process(proc.pid)
        cpu = 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                cpu = cpu_seconds([ps, *ps.children(recursive=True)])
            time.sleep(0.05)
    wall = time.monotonic() - started
    seen = 0
    with contextlib.suppress(OSError, ValueError):
        seen = sum(len(f.get("seen", {})) for f in json.loads(data.read_text())["feeds"])
    return {
        "feeds": len(paths),
        "wall_s": round(wall, 3),
        "feeds_per_s": round(len(paths) / wall, 1),
        "exit_code": proc.returncode,
        "cpu_ms_per_feed": round(1000 * cpu / len(paths), 2),
        "server_cpu_ms_per_feed": round(
            1000 * (cpu_seconds([server]) - server_cpu) / len(paths), 2
        ),
        "entries_seen": seen,
    }


# --- watchkeeper ---------------------------------------------------------------------------


def sources_toml(base: str, paths: list[str], warmup_only: bool = False) -> str:
    out = ["# Written by bench/bench_polls.py: one feed per corpus file."]
    for i, path in enumerate(["__warmup__", *([] if warmup_only else paths)]):
        name = "warmup" if i == 0 else feed_name(i - 1)
        url = f"{base}/{paths[0]}" if i == 0 else f"{base}/{path}"
        out += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"', 'interval = "24h"']
        out += ["locate = false", ""]
    return "\n".join(out)


def run_watchkeeper(
    base: str, paths: list[str], work: Path, server: psutil.Process, args: argparse.Namespace
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "sources.toml"
    config.write_text(sources_toml(base, paths, warmup_only=True))
    env = clean_env(
        {
            "WATCHKEEPER_HOST_DELAY": "0",
            "WATCHKEEPER_HOST_CONCURRENCY": str(args.concurrency),
            "WATCHKEEPER_CONCURRENCY": str(args.concurrency),
        }
    )
    run = WatchkeeperRun(work / "home", config, env)
    try:
        client = run.start()
        env["REDIS_URL"] = run.url
        settings = Settings.from_env(env)

        state_keys = [keys.SOURCE_STATE.key(settings, feed_name(i)) for i in range(len(paths))]
        # beat polls the warm-up feed (new: due at once); then every feed appears in the
        # sources file at once, and beat's next pass dispatches them all (new: due now)
        _wait_polled(client, [keys.SOURCE_STATE.key(settings, "warmup")], 180)
        profiler = Profiler(work) if args.profile else None
        if profiler is not None:
            roles = run.roles()
            for proc in roles["pool"]:
                profiler.start("pool", proc.pid)
            for proc in roles["worker_parent"]:
                profiler.start("parent", proc.pid)
            time.sleep(1)
        meter, counters0 = run.meter(), redis_counters(client)
        server0 = cpu_seconds([server])
        t0 = float(".".join(str(x) for x in client.time()))
        config.write_text(sources_toml(base, paths))
        checks, polled = _wait_polled(client, state_keys, args.timeout, meter.sample)
        counters1, cpu = redis_counters(client), meter.used()
        server1 = cpu_seconds([server])
        stacks = profiler.stop() if profiler is not None else {}
        ends = [float(p[0]) + float(p[1] or 0) for p in polled if p[0]]
        statuses = Counter(str(p[2]) for p in polled if p[0])
        wall = (max(ends) - t0) if ends else float("nan")
        n = len(ends)
        delta = counter_delta(counters0, counters1)
        # The bench's own commands: its INFO calls and one pipeline of HMGETs per check.
        own_reads = 2 + checks
        delta["calls"]["hmget"] = delta["calls"].get("hmget", 0) - checks * len(state_keys)
        delta["calls"]["info"] = delta["calls"].get("info", 0) - 2
        worker_cpu = cpu.get("worker_parent", 0.0) + cpu.get("pool", 0.0)
        errors = _errors(client, state_keys)
        return {
            "feeds": len(paths),
            "polled": n,
            "statuses": dict(statuses),
            "error_kinds": errors,
            "wall_s": round(wall, 3),
            "feeds_per_s": round(n / wall, 1) if n else 0.0,
            "worker_cpu_ms_per_poll": round(1000 * worker_cpu / max(n, 1), 2),
            "cpu_ms_per_poll": {k: round(1000 * v / max(n, 1), 2) for k, v in cpu.items()},
            "server_cpu_ms_per_poll": round(1000 * (server1 - server0) / max(n, 1), 2),
            "redis_round_trips_per_poll": round((delta["reads"] - own_reads) / max(n, 1), 2),
            "redis_commands_per_poll": {
                k: round(v / max(n, 1), 2) for k, v in delta["calls"].items() if v > 0
            },
            "profiled": bool(stacks),
            "profile": {
                role: {
                    "samples": sum(s.values()),
                    "wall_buckets_pct": buckets(s, WALL_BUCKETS),
                    "top_functions": top_functions(s, 25, IDLE),
                }
                for role, s in stacks.items()
            },
            "env": {k: v for k, v in env.items() if k.startswith("WATCHKEEPER_")},
        }
    finally:
        problems = run.stop()
        for problem in problems:
            print(f"[polls] {problem}", file=sys.stderr)


def _wait_polled(
    client: Any, state_keys: list[str], timeout: float, tick: Any = None
) -> tuple[int, list[Any]]:
    """Wait until every source's state records a poll; (checks made, per-source fields)."""
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        pipe = client.pipeline(transaction=False)
        for key in state_keys:
            pipe.hmget(key, "last_poll", "last_elapsed_s", "last_status")
        polled = pipe.execute()
        checks += 1
        if all(p[0] for p in polled) or time.monotonic() > deadline:
            return checks, polled
        if tick is not None:
            tick()
        time.sleep(0.25)


def _errors(client: Any, state_keys: list[str]) -> dict[str, int]:
    """Error lines by kind (the text after the URL, digits dropped), most common first."""
    pipe = client.pipeline(transaction=False)
    for key in state_keys:
        pipe.hget(key, "last_error")
    kinds: Counter[str] = Counter()
    for error in pipe.execute():
        if error:
            text = str(error).split(": ", 1)[-1]
            kinds["".join(c for c in text.split("(")[0] if not c.isdigit()).strip()] += 1
    return dict(kinds.most_common(8))


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generated", type=int, default=0, help="N generated feeds instead")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N feeds")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size (default 2)")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker processes")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for all polls")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--name", default="polls", help="results file (bench/results/NAME.json)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="wk-polls-"))
    root = (
        generated_corpus(args.generated, work / "corpus") if args.generated else feedparser_corpus()
    )
    paths = corpus_paths(root, args.limit)
    print(f"[polls] {len(paths):,} feeds from {root}; work in {work}", flush=True)
    load0 = os.getloadavg()
    server_proc, base = start_server(root)
    try:
        server = psutil.Process(server_proc.pid)
        r2e = run_rss2email(base, paths, work / "r2e", server)
        print(
            f"[polls] rss2email: {r2e['feeds_per_s']:,.1f} feeds/s ({r2e['wall_s']} s)", flush=True
        )
        ours = run_watchkeeper(base, paths, work / "wk", server, args)
        print(
            f"[polls] watchkeeper: {ours['feeds_per_s']:,.1f} feeds/s ({ours['wall_s']} s)",
            flush=True,
        )
    finally:
        server_proc.kill()
        server_proc.wait()
    ratio = round(ours["feeds_per_s"] / r2e["feeds_per_s"], 3) if r2e["feeds_per_s"] else None
    result = {
        "command": "python bench/bench_polls.py " + " ".join(sys.argv[1:]),
        "corpus": "generated" if args.generated else f"feedparser sdist tests ({root.name})",
        "feeds": len(paths),
        "concurrency": args.concurrency,
        "rss2email": r2e,
        "watchkeeper": ours,
        "ratio_feeds_per_s": ratio,
        "goal": GOAL,
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    path = write_result(args.name, result)
    report(result, path)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(result: dict[str, Any], path: Path) -> None:
    ours, r2e = result["watchkeeper"], result["rss2email"]
    rows = [
        ("feeds/s", f"{ours['feeds_per_s']:,.1f}", f"{r2e['feeds_per_s']:,.1f}"),
        ("wall s", f"{ours['wall_s']:.2f}", f"{r2e['wall_s']:.2f}"),
        (
            "CPU ms per poll (worker parent + children / r2e)",
            f"{ours['worker_cpu_ms_per_poll']}",
            f"{r2e['cpu_ms_per_feed']}",
        ),
        (
            "HTTP server CPU ms per poll",
            f"{ours['server_cpu_ms_per_poll']}",
            f"{r2e['server_cpu_ms_per_feed']}",
        ),
        ("Redis round trips per poll", f"{ours['redis_round_trips_per_poll']}", "—"),
    ]
    print(f"\n| {result['feeds']:,} feeds | watchkeeper | rss2email |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    print(
        f"\nratio {result['ratio_feeds_per_s']} (goal >= {GOAL}); load before "
        f"{result['load_before']}, after {result['load_after']}"
    )
    print(f"CPU ms per poll by process: {ours['cpu_ms_per_poll']}")
    print(f"Redis commands per poll: {ours['redis_commands_per_poll']}")
    print(f"statuses: {ours['statuses']}; errors: {ours['error_kinds']}")
    for role, prof in ours["profile"].items():
        print(
            f"\nwhere {role} wall time goes ({prof['samples']} samples): {prof['wall_buckets_pct']}"
        )
        for f in prof["top_functions"][:20]:
            print(f"  {f['inclusive_pct']:5.1f}%  (self {f['self_pct']:4.1f}%)  {f['function']}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
