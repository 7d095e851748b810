"""The price of replica acknowledgements (``WAIT``) on Redis Sentinel, where it is paid.

    python bench/bench_replica_acks.py [--lines 200000] [--clients 8] [--rounds 3]

On a local Sentinel topology (``bench/sentinel_topology.py``: a primary, two replicas, three
Sentinels on 127.0.0.1), measured with ``WATCHKEEPER_REPLICA_ACKS`` 0 and 1, alternating, in
the same run:

* the TCP listener's throughput: ``--clients`` connections send ``--lines`` lines as fast as
  the listener takes them; lines/s until the last is in the ``logs`` stream (the listener
  confirms each round of batches with ``WAIT`` before letting go of it);
* the latency of one acknowledged write as notifications, beat's lock and location flushes
  make it: a fence ``SET`` and ``WAIT 1`` in one pipeline, p50/p99 over 2,000 calls (the same
  pipeline without ``WAIT`` beside it).

Writes ``bench/results/replica_acks.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result
from bench.sentinel_topology import LocalTopology, free_port
from workers.core import keys
from workers.core.connection import connect
from workers.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def listener(url: str, port: int, acks: int, home: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WATCHKEEPER_", "MOONSHOT_")) and k != "REDIS_URL"
    }
    config = home / "sources.toml"
    config.write_text(f'[tcp]\nhost = "127.0.0.1"\nport = {port}\n')
    env.update(
        REDIS_URL=url,
        WATCHKEEPER_REPLICA_ACKS=str(acks),
        WATCHKEEPER_CONFIG=str(config),
        WATCHKEEPER_HOME=str(home),
        WATCHKEEPER_MAX_LOGS="1000000",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "listen", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def send(port: int, clients: int, lines: int) -> None:
    per = lines // clients
    line = b"x" * 99 + b"\n"
    chunk = line * 500

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            left = per
            while left > 0:
                n = min(500, left)
                sock.sendall(chunk if n == 500 else line * n)
                left -= n

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def tcp_round(topo: LocalTopology, acks: int, lines: int, clients: int) -> float:
    settings = Settings.from_env({"REDIS_URL": topo.url()})
    client = connect(topo.url())
    seq = keys.STREAM_SEQ.key(settings, "logs")
    client.delete(keys.STREAM.key(settings, "logs"), seq)
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        proc = listener(topo.url(), port, acks, Path(home))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.1)
            start = time.monotonic()
            send(port, clients, lines)
            want = lines - lines % clients
            while int(client.get(seq) or 0) < want:
                time.sleep(0.005)
            return want / (time.monotonic() - start)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            client.close()


def wait_latency(topo: LocalTopology, with_wait: bool, n: int = 2000) -> dict[str, float]:
    client = connect(topo.url())
    samples = []
    for _ in range(n):
        pipe = client.pipeline(transaction=False)
        pipe.set("wk:replicas:fence", "1", ex=3600)
        if with_wait:
            pipe.execute_command("WAIT", 1, 2000)
        started = time.perf_counter()
        pipe.execute()
        samples.append((time.perf_counter() - started) * 1000)
    client.close()
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[int(0.99 * len(samples)) - 1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load0 = os.getloadavg()
    rates: dict[int, list[float]] = {0: [], 1: []}
    latency: dict[str, Any] = {}
    with LocalTopology() as topo:
        for _ in range(args.rounds):
            for acks in (0, 1):
                rate = tcp_round(topo, acks, args.lines, args.clients)
                rates[acks].append(rate)
                print(f"[acks] TCP, WATCHKEEPER_REPLICA_ACKS={acks}: {rate:,.0f} lines/s")
        latency["fence only"] = wait_latency(topo, False)
        latency["fence + WAIT 1"] = wait_latency(topo, True)
    best = {acks: max(r) for acks, r in rates.items()}
    result = {
        "command": "python bench/bench_replica_acks.py " + " ".join(sys.argv[1:]),
        "topology": "Sentinel on 127.0.0.1: 1 primary, 2 replicas (AOF everysec), 3 Sentinels",
        "tcp_lines_per_s": {f"acks_{k}": [round(x) for x in v] for k, v in rates.items()},
        "tcp_best_lines_per_s": {f"acks_{k}": round(v) for k, v in best.items()},
        "tcp_ratio_acks1_to_acks0": round(best[1] / best[0], 3),
        "acknowledged_write_latency": latency,
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    path = write_result("replica_acks", result)
    print(
        f"TCP lines/s best of {args.rounds}: acks 0 {best[0]:,.0f}, acks 1 {best[1]:,.0f} "
        f"({result['tcp_ratio_acks1_to_acks0']}); one acknowledged write: {latency}"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
