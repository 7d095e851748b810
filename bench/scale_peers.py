"""The same schedule in celery-redbeat and django-celery-beat: lateness and CPU beside ours.

    python bench/scale_peers.py --sources 10000 100000 --minutes 2 [--peers redbeat django]

N entries with ``bench/scale.py``'s intervals (5 min to 24 h, the same mix), each dispatching
a no-op task, "as if the system had run for a day": each entry's last run is one interval
before its first due time, the first due times spread uniformly over each interval from the
moment the run starts (``--lead`` seconds after seeding begins; measured from the first due
time or beat's first send, whichever is later: its start-up is reported apart, as ours is).
Then a real ``celery beat`` subprocess with the peer's scheduler, and a real worker (prefork,
2 children) consuming the no-ops, for ``--minutes``:

* **celery-redbeat** 2.4.2 (``redbeat.RedBeatScheduler``): entries in Redis (a private
  ``redis-server``, which is also the broker), written as ``RedBeatSchedulerEntry.save``
  writes them (definition, meta, the schedule ZSET), pipelined;
* **django-celery-beat** (``DatabaseScheduler``): ``IntervalSchedule`` + ``PeriodicTask`` rows
  in PostgreSQL (Debian's server, database ``wk_scale_bench`` on 127.0.0.1:5432, user
  ``postgres``), ``bulk_create``d, broker on the same private Redis.

Lateness: in the beat process, Celery's ``before_task_publish`` signal records each no-op's
entry and the time it was sent; its due time is the latest of the entry's due times (first due
+ k * interval) at or before then. Due times inside the run (after beat's first tick, 5 s
before the end) that were never sent count as late until the end. Clock: the machine's (the
peers keep time on the beat host, not in Redis). Results merged into
``bench/results/scale.json`` under ``peers``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery, signals

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432/wk_scale_bench"

# --- the peers' Celery app (imported by their beat and worker subprocesses) ----------------------

app = Celery("scale_peers", broker=os.environ.get("SCALE_BROKER", "redis://127.0.0.1:6379/9"))
app.conf.update(
    redbeat_redis_url=os.environ.get("SCALE_BROKER", ""),
    beat_max_loop_interval=5,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
    enable_utc=True,
)


@app.task(name="scale.noop")
def noop(i: int) -> None:
    """The task each entry dispatches."""


def django_setup() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "wk_scale_bench",
                    "USER": "postgres",
                    "HOST": "127.0.0.1",
                    "PORT": "5432",
                }
            },
            INSTALLED_APPS=["django_celery_beat"],
            USE_TZ=True,
            TIME_ZONE="UTC",
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        django.setup()


if os.environ.get("SCALE_PEER") == "django":
    django_setup()

_sent: list[str] = []
_flushed = [time.monotonic()]


@signals.before_task_publish.connect
def _record(sender: str | None = None, body: Any = None, **_: Any) -> None:
    log = os.environ.get("SCALE_SENT_LOG")
    if not log or sender != "scale.noop":
        return
    args = body[0] if isinstance(body, list | tuple) else body.get("args", [])
    _sent.append(f"{args[0]} {time.time():.6f}\n")  # flushed a second later, or at exit
    if time.monotonic() - _flushed[0] > 1.0:
        with open(log, "a") as f:
            f.writelines(_sent)
        _sent.clear()
        _flushed[0] = time.monotonic()


# --- the schedule ---------------------------------------------------------------------------------


def schedule(n: int, start: float) -> list[tuple[int, float]]:
    """(interval, first due time) per entry: ``scale.py``'s mix, due uniformly over each
    interval from ``start``."""
    from bench.scale import interval_of

    rng = random.Random(22)
    return [(interval_of(i), start + rng.random() * interval_of(i)) for i in range(n)]


def seed_redbeat(url: str, entries: list[tuple[int, float]]) -> None:
    import redis
    from celery.schedules import schedule as every
    from redbeat.decoder import RedBeatJSONEncoder

    client = redis.Redis.from_url(url)
    for lo in range(0, len(entries), 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(lo, min(len(entries), lo + 5000)):
            interval, first = entries[i]
            key = f"redbeat:e{i}"
            definition = {
                "name": f"e{i}",
                "task": "scale.noop",
                "args": [i],
                "kwargs": {},
                "options": {},
                "schedule": every(run_every=timedelta(seconds=interval)),
                "enabled": True,
            }
            last = datetime.fromtimestamp(first - interval, UTC)
            pipe.hset(key, "definition", json.dumps(definition, cls=RedBeatJSONEncoder))
            pipe.hset(key, "meta", json.dumps({"last_run_at": last}, cls=RedBeatJSONEncoder))
            pipe.zadd("redbeat::schedule", {key: first})
        pipe.execute()


def seed_django(entries: list[tuple[int, float]]) -> None:
    django_setup()
    from django.core.management import call_command
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    call_command("migrate", "django_celery_beat", verbosity=0)
    from django.db import connection

    with connection.cursor() as cursor:  # a previous run's rows (delete() fetches each first)
        cursor.execute(f"TRUNCATE {PeriodicTask._meta.db_table} CASCADE")
    by_interval = {}
    for interval in sorted({e[0] for e in entries}):
        by_interval[interval], _ = IntervalSchedule.objects.get_or_create(
            every=interval, period=IntervalSchedule.SECONDS
        )
    rows = [
        PeriodicTask(
            name=f"e{i}",
            task="scale.noop",
            interval=by_interval[interval],
            args=json.dumps([i]),
            last_run_at=datetime.fromtimestamp(first - interval, UTC),
            enabled=True,
        )
        for i, (interval, first) in enumerate(entries)
    ]
    PeriodicTask.objects.bulk_create(rows, batch_size=5000)
    PeriodicTasks.update_changed()


# --- the run --------------------------------------------------------------------------------------


def run(peer: str, n: int, minutes: float, workdir: Path, lead: float | None) -> dict[str, Any]:
    import psutil
    import redis

    from bench.scale import free_port, pct, start_redis, stop, tree_cpu

    rport = free_port()
    rproc = start_redis(rport, workdir)
    url = f"redis://127.0.0.1:{rport}/0"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lead = lead if lead is not None else max(15.0, n / 2000)
        start = time.time() + lead
        entries = schedule(n, start)
        seeded = time.perf_counter()
        if peer == "redbeat":
            seed_redbeat(url, entries)
            scheduler = "redbeat.RedBeatScheduler"
        else:
            seed_django(entries)
            scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
        seed_s = time.perf_counter() - seeded
        print(f"{peer}: seeded {n} entries in {seed_s:.1f} s", flush=True)
        sent_log = workdir / "sent.log"
        env = {
            **os.environ,
            "SCALE_PEER": peer,
            "SCALE_BROKER": url,
            "SCALE_SENT_LOG": str(sent_log),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "celery", "-A", "bench.scale_peers"]
        worker = subprocess.Popen(
            [*cmd, "worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"],
            env=env,
            cwd=workdir,
            stdout=open(workdir / "worker.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(worker)
        began = time.time()
        beat = subprocess.Popen(
            [*cmd, "beat", "-S", scheduler, "--loglevel", "WARNING", "-s", str(workdir / "sched")],
            env=env,
            cwd=workdir,
            stdout=open(workdir / "beat.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(beat)
        bproc = psutil.Process(beat.pid)
        # measured from the first due time on, once beat sends (its start-up, like ours, apart)
        time.sleep(max(0.0, start - time.time()))
        while not sent_log.exists() and time.time() < began + 900:
            if beat.poll() is not None:
                raise SystemExit(f"{peer} beat exited; see {workdir / 'beat.log'}")
            time.sleep(0.2)
        ready = time.time()
        t0, cpu0 = time.time() + 1.0, tree_cpu(bproc)
        wcpu0 = tree_cpu(psutil.Process(worker.pid))
        rss: list[int] = []
        while time.time() < t0 + minutes * 60:
            time.sleep(5)
            with contextlib.suppress(psutil.Error):
                rss.append(bproc.memory_info().rss)
        end = time.time()
        cpu = tree_cpu(bproc) - cpu0
        wcpu = tree_cpu(psutil.Process(worker.pid)) - wcpu0
        stop(beat)  # flushes nothing more: the last second of records is not read
        sent: dict[int, list[float]] = {}
        if sent_log.exists():
            for line in sent_log.read_text().splitlines():
                i, at = line.split()
                sent.setdefault(int(i), []).append(float(at))
        late: list[float] = []
        missed = 0
        horizon = end - 5
        for i, (interval, first) in enumerate(entries):
            due = first
            while due <= horizon:
                if due >= t0:
                    after = [at for at in sent.get(i, ()) if due - 0.5 <= at < due + interval]
                    if after:
                        late.append(max(0.0, min(after) - due))
                    else:
                        missed += 1
                        late.append(end - due)
                due += interval
        queue = int(redis.Redis.from_url(url).llen("celery"))
        return {
            "scheduler": peer,
            "sources": n,
            "minutes": round((end - t0) / 60, 2),
            "lateness_sample": len(late),
            "lateness_p50_s": round(pct(late, 0.5), 3),
            "lateness_p99_s": round(pct(late, 0.99), 3),
            "lateness_max_s": round(max(late), 3) if late else None,
            "not_dispatched": missed,
            "beat_cpu_pct": round(100 * cpu / (end - t0), 1),
            "beat_rss_mb": round(max(rss) / 2**20, 1) if rss else None,
            "workers_cpu_pct": round(100 * wcpu / (end - t0), 1),
            "seed_s": round(seed_s, 1),
            "beat_start_to_first_due_s": round(start - began, 1),
            "beat_start_to_first_send_s": round(ready - began, 1),
            "queue_left": queue,
            "held": bool(late) and pct(late, 0.99) <= 1.0 and missed == 0,
            "load_avg": os.getloadavg()[0],
        }
    finally:
        for proc in reversed(procs):
            stop(proc)
        rproc.terminate()
        rproc.wait(timeout=30)


def main() -> None:
    from bench.common import RESULTS, machine, write_result

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--peers", nargs="+", default=["redbeat", "django"])
    parser.add_argument("--lead", type=float, default=None)
    args = parser.parse_args()
    path = RESULTS / "scale.json"
    for n in args.sources:
        for peer in args.peers:
            workdir = Path(tempfile.mkdtemp(prefix=f"wk-peer-{peer}-{n}-"))
            print(f"== {peer}, {n} entries, {args.minutes:g} min ({workdir})", flush=True)
            result = run(peer, n, args.minutes, workdir, args.lead)
            result["machine"] = machine()
            print(json.dumps(result), flush=True)
            previous = json.loads(path.read_text()) if path.exists() else {}
            out = {k: v for k, v in previous.items() if k != "machine"}
            out.setdefault("peers", {}).setdefault(peer, {})[str(n)] = result
            write_result("scale", out)


if __name__ == "__main__":
    main()
