"""Beat as a user runs it (``celery -A workers beat`` subprocesses) against a real Redis and a
real worker: due times come from Redis, the sources file is reloaded, one beat dispatches, and
the broker queue stays bounded while no worker consumes it."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.beat import beat_process, queued_messages, recorded_dispatches
from tests.support.helpers import HTTPFixtureServer, wait_for
from workers.core.connection import EmbeddedRedis, connect
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.ops.status import collect_status

PASS = 0.5
"""The dispatch period the beats in these tests run with (WATCHKEEPER_DISPATCH_INTERVAL)."""


def log_source(name: str, url: str, interval: str) -> str:
    return f'[[http_logs]]\nname = "{name}"\nurl = "{url}"\ninterval = "{interval}"\n'


def serve_logs(server: HTTPFixtureServer, *names: str) -> None:
    for name in names:
        server.static(f"/{name}", json.dumps({"key": name}) + "\n")


def test_a_new_hourly_source_is_polled_within_one_dispatch_period_of_beat_start(
    runtime: Any, worker: Any, http_server: HTTPFixtureServer, redis_url: str, tmp_path: Path
) -> None:
    # Given a new source polled once an hour
    serve_logs(http_server, "hourly")
    rt = runtime.use_config(log_source("hourly", http_server.url("/hourly"), "1h"))
    # When beat starts
    with beat_process(redis_url, rt.config_path, tmp_path, dispatch_interval=PASS) as beat:
        started = time.monotonic()
        # Then it is polled at once (Celery's interval schedule: after an hour)
        wait_for(lambda: http_server.hits("/hourly") >= 1, 15, message="first poll")
        assert time.monotonic() - started < 15, beat.log()
        # And due again in an hour, a time set in Redis by the poll itself
        wait_for(lambda: rt.redis.hget("wk:src:hourly", "last_status"), 10, message="poll saved")
        next_check = float(rt.redis.hget("wk:src:hourly", "next_check") or 0)
        assert 3500 < next_check - time.time() <= 3600


def test_a_source_added_or_changed_while_beat_runs_is_polled_without_a_restart(
    runtime: Any, worker: Any, http_server: HTTPFixtureServer, redis_url: str, tmp_path: Path
) -> None:
    # Given beat running on a file with one hourly source, polled once
    serve_logs(http_server, "first", "added")
    first = log_source("first", http_server.url("/first"), "1h")
    rt = runtime.use_config(first)
    with beat_process(redis_url, rt.config_path, tmp_path, dispatch_interval=PASS) as beat:
        wait_for(lambda: http_server.hits("/first") == 1, 15, message="first source polled")
        # When a second hourly source is added to the file
        rt.config_path.write_text(first + log_source("added", http_server.url("/added"), "1h"))
        # Then it is polled within a pass or two, by the same beat
        wait_for(lambda: http_server.hits("/added") == 1, 10, message="added source polled")
        # When the first source's definition changes (its interval)
        rt.config_path.write_text(
            log_source("first", http_server.url("/first"), "2h")
            + log_source("added", http_server.url("/added"), "1h")
        )
        # Then it is polled again at once, and the unchanged one is not
        wait_for(lambda: http_server.hits("/first") == 2, 10, message="changed source polled")
        time.sleep(4 * PASS)
        assert (http_server.hits("/first"), http_server.hits("/added")) == (2, 1)
        assert beat.proc.poll() is None, beat.log()
        assert "sources file reloaded" in beat.log()


def test_two_beats_dispatch_each_poll_once_and_a_standby_takes_over(
    runtime: Any, worker: Any, http_server: HTTPFixtureServer, redis_url: str, tmp_path: Path
) -> None:
    # Given two sources due every 2 s and two beats started by mistake
    serve_logs(http_server, "one", "two")
    rt = runtime.use_config(
        log_source("one", http_server.url("/one"), "2s")
        + log_source("two", http_server.url("/two"), "2s")
    )
    interval, window = 2.0, 10.0
    with (
        recorded_dispatches() as seen,
        beat_process(redis_url, rt.config_path, tmp_path, dispatch_interval=PASS) as b1,
        beat_process(redis_url, rt.config_path, tmp_path, dispatch_interval=PASS) as b2,
    ):
        # When they run for a few periods
        wait_for(lambda: seen.of("one") and seen.of("two"), 15, message="first polls")
        time.sleep(window)
        # Then each poll was dispatched once per period: never two within one interval
        for source in ("one", "two"):
            runs = seen.of(source)
            gaps = [b - a for a, b in itertools.pairwise(runs)]
            assert len(runs) <= window / interval + 2, (source, runs)
            assert gaps and min(gaps) >= interval - PASS, (source, gaps)
        # And exactly one beat holds the dispatch lock, the other stands by
        holder = rt.redis.get("wk:beat:lock")
        pids = {b1.proc.pid: b1, b2.proc.pid: b2}
        assert holder is not None and int(holder.split(":")[1]) in pids
        dispatching = pids.pop(int(holder.split(":")[1]))
        standby = next(iter(pids.values()))
        assert "standing by" in standby.log() and "[beat] sent" not in standby.log()
        # When the dispatching beat stops
        dispatching.stop()
        count = len(seen.of("one"))
        # Then the standby takes over and polls continue
        wait_for(lambda: len(seen.of("one")) > count + 1, 15, message="polls after takeover")
        assert "[beat] sent" in standby.log()


def test_a_paused_source_is_not_dispatched(
    runtime: Any, worker: Any, http_server: HTTPFixtureServer, redis_url: str, tmp_path: Path
) -> None:
    # Given a paused source and an active one, both due every second
    serve_logs(http_server, "paused", "active")
    rt = runtime.use_config(
        log_source("paused", http_server.url("/paused"), "1s")
        + log_source("active", http_server.url("/active"), "1s")
    )
    rt.redis.hset("wk:src:paused", "paused", "1")
    with (
        recorded_dispatches() as seen,
        beat_process(redis_url, rt.config_path, tmp_path, dispatch_interval=PASS),
    ):
        # When beat runs until the active one was polled three times
        wait_for(lambda: len(seen.of("active")) >= 3, 20, message="active source polled")
    # Then no poll of the paused one was even dispatched
    assert seen.of("paused") == []
    assert http_server.hits("/paused") == 0


@pytest.fixture
def idle_redis(tmp_path: Path) -> Any:
    """A Redis of its own that no worker consumes from: every worker is down."""
    embedded = EmbeddedRedis(tmp_path / "idle")
    url = embedded.acquire()
    try:
        yield url
    finally:
        embedded.release()


def test_with_workers_down_the_queue_stays_bounded_and_no_source_has_two_queued_polls(
    idle_redis: str, tmp_path: Path
) -> None:
    # Given three sources due every second, the periodic entries, and no worker at all
    config = tmp_path / "sources.toml"
    config.write_text(
        "".join(log_source(n, f"http://127.0.0.1:9/{n}", "1s") for n in ("a", "b", "c"))
    )
    client = connect(idle_redis)
    # When beat runs for several periods, first with room in the queue
    with beat_process(idle_redis, config, tmp_path, dispatch_interval=PASS):
        time.sleep(8 * PASS)
        unbounded = queued_messages(client)
        settings = Settings.from_env({"REDIS_URL": idle_redis})
        shown_queued = collect_status(Runtime(settings, client, config))["sources"]["a"]["queued"]
    # Then every entry waits in the queue exactly once, however often it fell due
    polls = Counter(args for task, args in unbounded if task.endswith("poll_http_log"))
    assert polls == {"a": 1, "b": 1, "c": 1}, unbounded
    assert max(Counter(unbounded).values()) == 1, unbounded
    # When a fourth source is added and the queue is capped at its current length
    config.write_text(config.read_text() + log_source("d", "http://127.0.0.1:9/d", "1s"))
    cap = len(unbounded)
    with beat_process(
        idle_redis, config, tmp_path, dispatch_interval=PASS, max_queue_length=cap
    ) as beat:
        time.sleep(8 * PASS)
        capped = queued_messages(client, live_only=False)
        assert beat.proc.poll() is None
    # Then the queue stays at its cap: the new source waits for room
    assert len(capped) == cap and ("tasks.http_logs.poll_http_log", "d") not in capped
    # And status and metrics report the skipped dispatches
    status = collect_status(Runtime(settings, client, config))["beat"]
    assert status["skipped"]["queued"] > 0 and status["skipped"]["queue_full"] > 0
    assert status["queue_length"] == cap and status["max_queue_length"] == cap
    assert status["holder"] is None  # the beat let go of its lock when it stopped
    assert shown_queued is True
    client.close()
