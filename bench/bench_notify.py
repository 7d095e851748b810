"""Benchmark notification delivery: deliveries/s, item-to-notification latency, outbox memory.

    python bench/bench_notify.py [--messages 2000] [--seconds 60] [--rate 1000]

On this machine, against a private embedded Redis and a JSON receiver on 127.0.0.1:

* deliveries/s — one sink, one ``json://`` destination, ``--messages`` alerts queued at once and
  delivered by delivery runs in this process; against a bare ``requests`` POST loop to the same
  receiver (the floor any sender pays) and Apprise's own ``notify()`` loop;
* latency at the soak's load — ``--rate`` items/s (10 % alerts, 80 % logs, 10 % listings, as the
  soak's sources) written for ``--seconds`` with the stamped stream writer, each batch followed
  by ``notify_new_items`` as the poll loop does; a real prefork worker consuming the delivery
  queue, and beat (``celery -A bench.notify_app``), deliver alerts and listings; latency =
  arrival at the receiver minus the entry's stream id time. Goal: p99 under 2 s (+ the poll
  interval, not part of this measurement: items are written directly);
* outbox memory — Redis memory of every ``notify:`` key, sampled every 5 s: flat.

Prints a table and writes bench/results/notify.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOME = Path(tempfile.mkdtemp(prefix="wk-bench-notify-"))
CONFIG = HOME / "sources.toml"
os.environ.setdefault("WATCHKEEPER_HOME", str(HOME))
os.environ["WATCHKEEPER_CONFIG"] = str(CONFIG)
CONFIG.write_text("# written below\n")

from bench.common import write_result  # noqa: E402
from workers.core.connection import EmbeddedRedis, connect  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Receiver:
    """The demo's local receiver, recording each message's arrival time by idempotency key."""

    def __init__(self) -> None:
        from tasks.notify.receiver import LocalReceiver

        self.arrived: dict[str, float] = {}

        def record(payload: dict[str, Any]) -> None:
            self.arrived.setdefault(str(payload.get("idempotency_key")), time.time())

        self.inner = LocalReceiver(echo=False, on_message=record).start()

    @property
    def url(self) -> str:
        return self.inner.url


def notify_key_bytes(client: Any) -> int:
    total = 0
    for key in client.scan_iter(match="wk:notify:*", count=1000):
        total += int(client.memory_usage(key) or 0)
    return total


def throughput(rt: Any, receiver: Receiver, messages: int) -> dict[str, float]:
    import apprise
    import requests

    from tasks.notify.streams import append
    from tasks.notify.tasks import deliver_all

    CONFIG.write_text(f'[[notify]]\nname = "tp"\nurls = ["{receiver.url}"]\nstreams = ["alerts"]\n')
    rt._config = None
    deliver_all(rt)
    alerts = [
        {"source": "bench", "title": f"Alert {i}", "summary": "s" * 200, "link": f"/x/{i}"}
        for i in range(messages)
    ]
    for start in range(0, messages, 500):
        append(rt.redis, rt.settings, "alerts", alerts[start : start + 500])
    before = len(receiver.arrived)
    started = time.perf_counter()
    while len(receiver.arrived) - before < messages:
        deliver_all(rt)
    ours = messages / (time.perf_counter() - started)

    session = requests.Session()
    target = receiver.url.replace("json://", "http://")
    started = time.perf_counter()
    for i in range(messages):
        session.post(target, json={"title": f"A {i}", "message": "s" * 200}, timeout=10)
    bare = messages / (time.perf_counter() - started)

    sender = apprise.Apprise()
    sender.add(receiver.url)
    n = max(100, messages // 4)
    started = time.perf_counter()
    for i in range(n):
        sender.notify(body="s" * 200, title=f"A {i}")
    direct = n / (time.perf_counter() - started)
    return {"watchkeeper": ours, "requests": bare, "apprise": direct}


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.notify_app", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def soak(rt: Any, url: str, receiver: Receiver, seconds: float, rate: float) -> dict[str, Any]:
    from tasks.notify.streams import append
    from tasks.notify.tasks import notify_new_items

    CONFIG.write_text(
        f'[[notify]]\nname = "soak"\nurls = ["{receiver.url}"]\n'
        'streams = ["alerts", "listings"]\nexclude = ["(?i)never-matches"]\n'
    )
    rt._config = None
    env = dict(os.environ, REDIS_URL=url, PYTHONPATH=str(ROOT))
    worker = start(
        # the delivery worker's queue too (`watchkeeper run` starts a worker for it alone)
        [
            *("worker", "--pool", "prefork", "-c", "2", "-Q", "celery,notify"),
            *("--loglevel", "WARNING", "-n", "bench@%h"),
        ],
        HOME / "worker.log",
        env,
    )
    beat = start(
        ["beat", "--loglevel", "WARNING", "-s", str(HOME / "beat-schedule")], HOME / "beat.log", env
    )
    samples: list[dict[str, float]] = []
    written = {"alerts": 0, "logs": 0, "listings": 0}
    try:
        time.sleep(8)  # worker and beat up; beat's first run creates the sink's groups
        tick = 0.1
        per_tick = rate * tick
        deadline = time.monotonic() + seconds
        next_sample = 0.0
        n = 0
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            batch = {
                "alerts": int(per_tick * 0.1),
                "logs": int(per_tick * 0.8),
                "listings": int(per_tick * 0.1),
            }
            for stream, count in batch.items():
                rows = [
                    {"source": "soak", "site": "soak", "title": f"{stream} {n + i}", "line": "x"}
                    for i in range(count)
                ]
                append(rt.redis, rt.settings, stream, rows)
                written[stream] += count
                notify_new_items(rt, stream)
            n += per_tick
            if t0 >= next_sample:
                samples.append(
                    {
                        "t": time.time(),
                        "items": sum(written.values()),
                        "notify_bytes": notify_key_bytes(rt.redis),
                        "used_memory": int(rt.redis.info("memory")["used_memory"]),
                        "outbox": int(rt.redis.hlen("wk:notify:soak:outbox")),
                    }
                )
                next_sample = t0 + 5
            time.sleep(max(0.0, tick - (time.monotonic() - t0)))
        wanted = written["alerts"] + written["listings"]
        drain = time.monotonic() + 60
        while len(receiver.arrived) < wanted and time.monotonic() < drain:
            time.sleep(0.2)
    finally:
        for proc in (beat, worker):
            proc.terminate()
        for proc in (beat, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    latencies = []
    for key, arrived in receiver.arrived.items():
        if key.startswith(("alerts:", "listings:")):
            millis = int(key.split(":")[1].split("-")[0])
            latencies.append(arrived - millis / 1000)
    # after a warm-up of 10 s (the sink's delivery log filling to its cap)
    steady = samples[2:] if len(samples) > 3 else samples
    first, last = steady[0], steady[-1]
    span = max(1, last["items"] - first["items"])
    return {
        "written": written,
        "notified": len(latencies),
        "expected": written["alerts"] + written["listings"],
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "latency_max_s": round(max(latencies), 3),
        "latency_mean_s": round(statistics.mean(latencies), 3),
        "notify_bytes_first": first["notify_bytes"],
        "notify_bytes_last": last["notify_bytes"],
        "notify_mb_per_100k_items": round(
            (last["notify_bytes"] - first["notify_bytes"]) / 2**20 / span * 100_000, 3
        ),
        "outbox_max": max(s["outbox"] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args()

    embedded = EmbeddedRedis(HOME / "redis-home")
    url = embedded.acquire()
    os.environ["REDIS_URL"] = url
    try:
        import tasks.notify  # noqa: F401
        from workers.core.runtime import Runtime, set_runtime
        from workers.core.settings import Settings
        from workers.ops.sources.apply import apply_file

        settings = Settings.from_env()
        rt = Runtime(settings, connect(url), CONFIG)
        apply_file(rt.redis, settings, CONFIG)  # sources (and their tags) come from the registry
        set_runtime(rt)
        import bench.notify_app  # noqa: F401 (the app that sends the triggered runs)

        receiver = Receiver()
        rates = throughput(rt, receiver, args.messages)
        receiver2 = Receiver()
        result = soak(rt, url, receiver2, args.seconds, args.rate)
    finally:
        embedded.release()
    rows = [
        ("deliveries/s to a local JSON receiver", f"{rates['watchkeeper']:,.0f}"),
        ("  bare requests.post loop (floor)", f"{rates['requests']:,.0f}"),
        ("  Apprise notify() loop", f"{rates['apprise']:,.0f}"),
        ("  ratio watchkeeper / bare requests", f"{rates['watchkeeper'] / rates['requests']:.2f}"),
        (f"soak load: items/s written ({args.seconds:.0f} s)", f"{args.rate:,.0f}"),
        ("  notified / expected", f"{result['notified']:,} / {result['expected']:,}"),
        ("  latency p50 (s)", f"{result['latency_p50_s']:.3f}"),
        ("  latency p99 (s), goal < 2", f"{result['latency_p99_s']:.3f}"),
        ("  latency max (s)", f"{result['latency_max_s']:.3f}"),
        (
            "  notify keys after 10 s → end (bytes)",
            f"{result['notify_bytes_first']:,} → {result['notify_bytes_last']:,}",
        ),
        ("  notify keys MB per 100k items", f"{result['notify_mb_per_100k_items']:.3f}"),
        ("  outbox max (messages)", f"{result['outbox_max']:,}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>20}")
    path = write_result(
        "notify",
        {
            "command": "python bench/bench_notify.py " + " ".join(sys.argv[1:]),
            "messages": args.messages,
            "deliveries_per_s": {k: round(v, 1) for k, v in rates.items()},
            "soak": {"seconds": args.seconds, "rate": args.rate, **result},
            "goal": {"latency_p99_s": 2.0, "notify_mb_per_100k_items": "flat"},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
