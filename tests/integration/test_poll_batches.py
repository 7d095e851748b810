"""Batches of polls: many due sources share tasks, each source is still polled exactly once with
its own claim and write, and a source that failed, was slow or never finished polls alone."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from beat_schedule import schedule_entries
from tests.support.helpers import HTTPFixtureServer, respond, wait_for
from tests.support.workers import subprocess_worker
from workers.core.runtime import Runtime
from workers.polling.batch import poll_batch
from workers.polling.dispatch import BATCH_TASK, Entry, dispatch_pass, message
from workers.polling.kinds import SourceKind

QUEUE = "wk-test-batch-queue"


def sources(server: HTTPFixtureServer, *names: str) -> str:
    return "".join(
        f'[[http_logs]]\nname = "{n}"\nurl = "{server.url("/" + n)}"\ninterval = "1h"\n'
        for n in names
    )


def serve(server: HTTPFixtureServer, *names: str) -> None:
    for name in names:
        server.static(f"/{name}", json.dumps({"key": name}) + "\n")


def log_entries(rt: Runtime) -> list[Entry]:
    every = schedule_entries(rt.settings, rt.sources.view().sources())
    return [e for e in every if e.kind == "http_log"]


def run_pass(rt: Runtime, send: Any = None) -> list[list[Entry]]:
    """One dispatch pass over the log sources; the messages it sent (entries per message)."""
    messages: list[list[Entry]] = []

    def record(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
        messages.append(list(batch))
        if send is not None:
            send(batch, task_ids)

    dispatch_pass(rt.redis, rt.settings, QUEUE, log_entries(rt), record)
    return messages


def test_many_due_sources_share_tasks_spread_over_four_times_the_pool(
    runtime: Any, http_server: HTTPFixtureServer
) -> None:
    names = [f"s{i:02d}" for i in range(40)]
    rt = runtime.use_config(sources(http_server, *names))
    rt.settings = replace(rt.settings, concurrency=2, poll_batch=16)
    # When 40 new sources are due at once with a pool of 2
    messages = run_pass(rt)
    # Then they go out in 8 messages of 5 (four times the pool), every source in exactly one
    assert sorted(len(m) for m in messages) == [5] * 8
    assert sorted(e.args[0] for m in messages for e in m) == names
    # And a batch is the batch task, carrying each source's kind, name and own task id
    ids = [f"id{i}" for i in range(5)]
    task, args, task_id, options = message(rt.settings, messages[0], ids)
    assert task == BATCH_TASK and task_id not in ids
    assert args == [[["http_log", e.args[0], i] for e, i in zip(messages[0], ids, strict=True)]]
    assert options["expires"] == min(e.wait(rt.settings) for e in messages[0])
    # And with a batch size of 1 every poll is a task of its own
    rt.redis.delete(*[e.marker for m in messages for e in m])
    rt.settings = replace(rt.settings, poll_batch=1)
    assert sorted(len(m) for m in run_pass(rt)) == [1] * 40
    # And so does a handful of due sources: fewer than four batches per pool process
    rt.redis.delete(*[f"wk:queued:http_log:{n}" for n in names])
    rt = runtime.use_config(sources(http_server, *names[:7]))
    rt.settings = replace(rt.settings, poll_batch=16)
    assert sorted(len(m) for m in run_pass(rt)) == [1] * 7


def test_a_source_that_failed_was_slow_or_never_finished_polls_alone(
    runtime: Any, http_server: HTTPFixtureServer
) -> None:
    names = ["failing", "slow", "killed", *[f"ok{i}" for i in range(16)]]
    rt = runtime.use_config(sources(http_server, *names))
    rt.settings = replace(rt.settings, concurrency=1, poll_batch=16, poll_batch_slow=2.0)
    now = float(rt.redis.time()[0])
    # Given one source whose last poll failed, one whose last poll took 5 s and one
    # dispatched after its last poll started (its worker was killed, it never wrote)
    rt.redis.hset("wk:src:failing", mapping={"errors": 1, "last_poll": now - 60})
    rt.redis.hset("wk:src:slow", mapping={"last_elapsed_s": 5.0, "last_poll": now - 60})
    rt.redis.hset("wk:src:killed", mapping={"dispatched_at": now - 30, "last_poll": now - 60})
    rt.redis.hset("wk:src:ok0", mapping={"last_elapsed_s": 0.1, "dispatched_at": now - 61})
    rt.redis.hset("wk:src:ok0", "last_poll", now - 60)
    # When all are due
    messages = run_pass(rt)
    # Then each of the three has a task of its own and the others share
    alone = sorted(m[0].args[0] for m in messages if len(m) == 1)
    assert alone == ["failing", "killed", "slow"]
    shared = [e.args[0] for m in messages if len(m) > 1 for e in m]
    assert sorted(shared) == sorted(n for n in names if n.startswith("ok"))


def test_a_batch_polls_each_source_once_and_one_failure_stays_its_own(
    runtime: Any, worker: Any, celery_app: Any, http_server: HTTPFixtureServer
) -> None:
    names = [f"b{i}" for i in range(11)]
    serve(http_server, *names)
    http_server.static("/broken", "oops", status=500)
    rt = runtime.use_config(sources(http_server, *names, "broken"))
    rt.settings = replace(rt.settings, concurrency=1, poll_batch=16)

    def send(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
        task, args, task_id, options = message(rt.settings, batch, task_ids)
        celery_app.send_task(task, args=args, task_id=task_id, ignore_result=True, **options)

    # When the 12 due sources are dispatched (as four batches of 3) to a real worker
    assert sorted(len(m) for m in run_pass(rt, send)) == [3, 3, 3, 3]
    # Then every source is polled once, its queued marker cleared by its own poll
    every = [*names, "broken"]
    wait_for(lambda: all(rt.redis.hget(f"wk:src:{n}", "last_status") for n in every), 20)
    assert [http_server.hits(f"/{n}") for n in every] == [1] * 12
    assert not rt.redis.exists(*[f"wk:queued:http_log:{n}" for n in every])
    # And the broken one failed alone: the others wrote their lines
    assert rt.redis.hget("wk:src:broken", "errors") == "1"
    assert {rt.redis.hget(f"wk:src:{n}", "last_status") for n in names} == {"ok"}
    assert rt.redis.xlen("wk:stream:logs") == len(names)
    # And the next pass sends nothing (hourly sources) but the backing-off one, never
    assert run_pass(rt, send) == []


def test_a_batch_past_its_budget_sends_the_rest_on_and_a_redelivered_batch_polls_nothing_twice(
    runtime: Any, worker: Any, celery_app: Any, http_server: HTTPFixtureServer
) -> None:
    serve(http_server, *[f"c{i}" for i in range(12)])
    rt = runtime.use_config(sources(http_server, *[f"c{i}" for i in range(12)]))
    rt.settings = replace(rt.settings, concurrency=1, poll_batch=16)
    batch = run_pass(rt)[0]  # the first of four batches of 3
    names = [e.args[0] for e in batch]
    tokens = {e.args[0]: rt.redis.get(e.marker) for e in batch}
    polls = [[e.kind, e.args[0], tokens[e.args[0]]] for e in batch]
    sent_on: list[str] = []

    def send_alone(kind: SourceKind, name: str, task_id: str) -> None:
        assert task_id == tokens[name]  # its queued marker still names it
        sent_on.append(name)
        celery_app.send_task(kind.task, args=[name], task_id=task_id, ignore_result=True)

    # When a batch has used up its budget (0 s) after its first poll
    over = Runtime(replace(rt.settings, poll_batch_budget=0.0), rt.redis, rt.config_path)
    outcomes = poll_batch(over, polls, send_alone)
    # Then it polled one source and sent the other two on as tasks of their own
    assert [o["status"] for o in outcomes] == ["ok"] and len(sent_on) == 2
    wait_for(lambda: all(rt.redis.hget(f"wk:src:{n}", "last_status") for n in names), 20)
    assert [http_server.hits(f"/{n}") for n in names] == [1] * 3
    assert not rt.redis.exists(*[e.marker for e in batch])
    # When the same batch is delivered again (its worker died before the ack)
    again = poll_batch(rt, polls, send_alone)
    # Then no source is polled twice: each is not due
    assert {o["status"] for o in again} == {"skipped"}
    assert [http_server.hits(f"/{n}") for n in names] == [1] * 3


def test_a_pool_process_killed_mid_batch_loses_no_poll_and_doubles_none(
    runtime: Any, redis_url: str, celery_app: Any, http_server: HTTPFixtureServer, tmp_path: Path
) -> None:
    names = [f"k{i}" for i in range(6)]
    serve(http_server, *names)
    release = threading.Event()

    def hang_once(req: Any) -> None:  # the third source's first request never finishes
        if http_server.hits("/k2") == 1:
            release.wait(60)
        respond(req, 200, json.dumps({"key": "k2"}) + "\n")

    http_server.route("/k2", hang_once)
    rt = runtime.use_config(sources(http_server, *names))
    picked: list[tuple[Entry, str]] = []
    run_pass(rt, lambda batch, ids: picked.extend(zip(batch, ids, strict=True)))
    limits = {"task_time_limit": 10, "notify_run_budget": 3, "notify_timeout": 3}
    with subprocess_worker(
        redis_url, rt.redis, tmp_path, max_worker_kills=3, config=str(rt.config_path), **limits
    ) as worker:
        # Given the six due sources in one batch, polled by a prefork worker
        task, args, task_id, options = message(
            rt.settings, [e for e, _ in picked], [i for _, i in picked]
        )
        celery_app.send_task(task, args=args, task_id=task_id, queue=worker.queue, **options)
        # When its pool process is killed (as the OOM killer would) in the third poll
        wait_for(lambda: http_server.hits("/k2") == 1, 30, message="third poll started")
        [child] = psutil.Process(worker.proc.pid).children()
        os.kill(child.pid, signal.SIGKILL)
        release.set()
        # Then the redelivered batch polls the three it had not reached
        polled = ("k0", "k1", "k3", "k4", "k5")
        wait_for(lambda: all(rt.redis.hget(f"wk:src:{n}", "last_status") for n in polled), 60)

        # And the killed poll's source, once its lock has expired, is dispatched alone
        def k2_dispatched() -> bool:
            for batch in run_pass(rt, lambda b, ids: _send_to(celery_app, worker, rt, b, ids)):
                assert [e.args[0] for e in batch] == ["k2"]
                return True
            return False

        wait_for(k2_dispatched, 30, interval=0.5, message="the killed poll's source dispatched")
        wait_for(lambda: rt.redis.hget("wk:src:k2", "last_status") == "ok", 30)
    # So every source's line was written exactly once; only the killed request was repeated
    lines = [f["line"] for _, f in rt.redis.xrange("wk:stream:logs")]
    assert sorted(json.loads(line)["key"] for line in lines) == names
    assert [http_server.hits(f"/{n}") for n in names] == [1, 1, 2, 1, 1, 1]


def _send_to(
    app: Any, worker: Any, rt: Runtime, batch: Sequence[Entry], task_ids: Sequence[str]
) -> None:
    task, args, task_id, options = message(rt.settings, batch, task_ids)
    app.send_task(task, args=args, task_id=task_id, queue=worker.queue, **options)


def test_one_poll_failing_unexpectedly_does_not_stop_the_rest_of_its_batch(
    runtime: Any, http_server: HTTPFixtureServer, monkeypatch: Any
) -> None:
    import workers.polling.batch as batch_module

    names = [f"u{i}" for i in range(4)]
    serve(http_server, *names)
    rt = runtime.use_config(sources(http_server, *names))
    real = batch_module.poll_by_name

    def poll_by_name(rt: Runtime, kind: SourceKind, name: str, **kw: Any) -> dict[str, Any]:
        if name == "u1":  # a bug in a stage, not a source error
            raise RuntimeError("boom")
        return real(rt, kind, name, **kw)

    monkeypatch.setattr(batch_module, "poll_by_name", poll_by_name)
    polls = [["http_log", n, f"t{n}"] for n in names]
    outcomes = poll_batch(rt, polls, lambda *a: None)
    assert [o["status"] for o in outcomes] == ["ok", "error", "ok", "ok"]
    assert [http_server.hits(f"/{n}") for n in names] == [1, 0, 1, 1]
