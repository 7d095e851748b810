"""The memory guard against real prefork workers (subprocesses) and the session's real Redis.

Each worker test starts ``celery -A workers worker`` with small thresholds in the environment,
its own queue and node name, and the test-only tasks in ``tests/support/leaky_tasks.py``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.helpers import wait_for
from tests.support.workers import SubprocessWorker, subprocess_worker
from workers.guard.measure import SelfMemory, over_limit, read_memory
from workers.guard.stats import MemoryStore, TaskMemory, args_summary
from workers.guard.task_guard import TaskGuard

LEAK_MB = 30
MB = 1024 * 1024


class ChildSampler:
    """Samples every pool child's private memory (USS) every 50 ms, from outside the worker."""

    def __init__(self, parent_pid: int) -> None:
        self.parent = psutil.Process(parent_pid)
        self.max_uss: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for child in self.parent.children():
                with contextlib.suppress(psutil.Error):
                    uss = child.memory_full_info().uss / MB
                    self.max_uss[child.pid] = max(self.max_uss.get(child.pid, 0.0), uss)


def node_hash(client: Any, worker: SubprocessWorker) -> dict[str, str]:
    return dict(client.hgetall(f"wk:mem:node:{worker.node}"))


# --- guard against real workers --------------------------------------------------------


def test_leaky_task_recycles_its_child_with_every_result_delivered_exactly_once(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a prefork worker with one child and a 150 MB recycle limit
    with subprocess_worker(
        redis_url,
        redis_client,
        tmp_path,
        concurrency=1,
        memory_warn_mb=60,
        memory_recycle_mb=150,
        memory_hard_mb=1000,
    ) as worker:
        parent = psutil.Process(worker.proc.pid)
        # When a task that keeps 30 MB more on every call runs 20 times
        with ChildSampler(worker.proc.pid) as sampler:
            sent = [worker.send(celery_app, "tests.leaky.leak", i) for i in range(20)]
            results = [r.get(timeout=120) for r in sent]
        # Then all 20 results arrive, each call ran once, and the child was replaced
        assert [r["call"] for r in results] == list(range(20))
        calls = redis_client.lrange("wk:test:calls", 0, -1)
        assert sorted(calls) == sorted(r.id for r in sent)
        pids = {r["pid"] for r in results}
        assert len(pids) >= 3
        # And no child was ever measured above the limit plus one call's leak
        assert sampler.max_uss, "no child was sampled"
        assert max(sampler.max_uss.values()) <= 150 + LEAK_MB + 5, sampler.max_uss
        # And the recycles were the guard's memory recycles, through billiard's clean exit
        wait_for(
            lambda: int(node_hash(redis_client, worker).get("recycles:memory", 0)) >= len(pids) - 1,
            10,
            message="recycle counters",
        )
        counters = node_hash(redis_client, worker)
        assert "recycles:hard" not in counters and "recycles:lost" not in counters
        log = worker.log()
        assert "recycling: rss=" in log and "> 150MB" in log
        assert "> warn 60MB after tests.leaky.leak; gc collected" in log
        assert "WorkerLostError" not in log
        assert parent.is_running()


def test_runaway_task_is_stopped_mid_run_then_dead_lettered_after_two_kills(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a prefork worker with two children and a 250 MB hard limit
    with subprocess_worker(
        redis_url,
        redis_client,
        tmp_path,
        concurrency=2,
        memory_warn_mb=100,
        memory_recycle_mb=150,
        memory_hard_mb=250,
        max_worker_kills=2,
    ) as worker:
        # When a task allocates without bound while ordinary tasks are sent
        runaway = worker.send(celery_app, "tests.leaky.allocate_until_stopped", 10, 1500)
        ordinary = [worker.send(celery_app, "tests.leaky.echo", i) for i in range(10)]
        # Then it is dead-lettered after two kills, with its name, id, args, memory and time
        dead = wait_for(lambda: redis_client.lrange("wk:dead", 0, -1), 90, message="dead letter")
        assert len(dead) == 1
        letter = json.loads(dead[0])
        assert letter["task"] == "tests.leaky.allocate_until_stopped"
        assert letter["id"] == runaway.id
        assert letter["args"] == "[10, 1500]"
        assert letter["kills"] == 2 and letter["reason"] == "hard"
        assert letter["memory_mb"] > 250
        assert letter["at"].endswith("Z")
        # And every ordinary task completed, and the worker survived
        assert [r.get(timeout=60)["value"] for r in ordinary] == list(range(10))
        assert worker.proc.poll() is None
        # And each run was stopped within 2 s of crossing the limit, in a child now gone
        runs_key = f"wk:test:alloc:runs:{runaway.id}"
        assert redis_client.get(runs_key) == "2"
        for run in (1, 2):
            beats = redis_client.hgetall(f"wk:test:alloc:{runaway.id}:{run}")
            if "crossed" in beats:  # absent: stopped before its own next reading
                assert float(beats["last"]) - float(beats["crossed"]) <= 2.0, beats
            assert (
                not psutil.pid_exists(int(beats["pid"]))
                or psutil.Process(int(beats["pid"])).status() == psutil.STATUS_ZOMBIE
            )
        # And it is never run again: acked, revoked, not in the queue
        assert wait_for(lambda: runaway.state == "REVOKED", 20, message="revoked state")
        assert worker.send(celery_app, "tests.leaky.echo", 99).get(timeout=60)["value"] == 99
        assert redis_client.get(runs_key) == "2"
        assert redis_client.llen(worker.queue) == 0
        assert not any(runaway.id in v for v in redis_client.hvals("unacked"))
        counters = node_hash(redis_client, worker)
        assert counters.get("recycles:hard") == "2"
        log = worker.log()
        assert "stopped mid-task tests.leaky.allocate_until_stopped" in log
        assert "> hard 250MB (kill 1/2)" in log and "> hard 250MB (kill 2/2)" in log


def test_child_killed_from_outside_counts_against_its_task_until_quarantined(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a prefork worker and a task whose child is killed mid-run (as the OOM killer would)
    with subprocess_worker(
        redis_url, redis_client, tmp_path, concurrency=1, max_worker_kills=2
    ) as worker:
        task = worker.send(celery_app, "tests.leaky.sleep", 60)
        runs = f"wk:test:sleep:{task.id}"
        for attempt in (1, 2):
            wait_for(lambda n=attempt: redis_client.llen(runs) >= n, 60, message="task start")
            os.kill(int(redis_client.lindex(runs, attempt - 1)), signal.SIGKILL)
        # Then each loss is counted against the task id, and the second quarantines it
        dead = wait_for(lambda: redis_client.lrange("wk:dead", 0, -1), 60, message="dead letter")
        letter = json.loads(dead[0])
        assert (letter["id"], letter["kills"], letter["reason"]) == (task.id, 2, "lost")
        assert redis_client.llen(runs) == 2
        assert wait_for(lambda: task.state == "REVOKED", 20, message="revoked state")
        assert node_hash(redis_client, worker).get("recycles:lost") == "2"
        assert worker.proc.poll() is None


def test_max_tasks_per_child_is_a_backstop_counted_as_its_own_recycle_reason(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a prefork worker whose child is replaced after 3 tasks
    with subprocess_worker(
        redis_url, redis_client, tmp_path, concurrency=1, max_tasks_per_child=3
    ) as worker:
        # When 4 ordinary tasks run
        results = [worker.send(celery_app, "tests.leaky.echo", i).get(timeout=60) for i in range(4)]
        # Then the fourth ran in a fresh child, recorded as a max-tasks recycle
        assert len({r["pid"] for r in results}) == 2
        assert [r["value"] for r in results] == [0, 1, 2, 3]
        wait_for(
            lambda: node_hash(redis_client, worker).get("recycles:max_tasks") == "1",
            10,
            message="max-tasks recycle counted",
        )
        assert "recycles:memory" not in node_hash(redis_client, worker)


def test_solo_pool_reports_and_warns_and_says_once_that_recycling_needs_prefork(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a solo worker, whose only process is itself, with a warn limit it already exceeds
    with subprocess_worker(
        redis_url,
        redis_client,
        tmp_path,
        pool="solo",
        memory_warn_mb=40,
        memory_recycle_mb=50,
        memory_hard_mb=2000,
    ) as worker:
        # When leaky tasks run past the recycle limit
        results = [worker.send(celery_app, "tests.leaky.leak", i).get(timeout=60) for i in range(3)]
        # Then nothing is recycled, each task is warned about, and the pool caveat is said once
        assert {r["pid"] for r in results} == {worker.proc.pid}
        # (the result is stored before task_postrun runs, so the last warning may trail it)
        wait_for(
            lambda: worker.log().count("> warn 40MB after tests.leaky.leak") == 3,
            10,
            message="three warnings",
        )
        assert worker.log().count("need --pool prefork") == 1
        # And memory is still reported
        wait_for(
            lambda: redis_client.hget("wk:stats:mem:tests.leaky.leak", "count") == "3",
            10,
            message="task statistics",
        )
        parent = json.loads(node_hash(redis_client, worker)["parent"])
        assert (parent["pool"], parent["guard"], parent["pid"]) == (
            "solo",
            "reporting",
            worker.proc.pid,
        )


def test_status_names_the_leaking_task_with_the_largest_mean_delta(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path, runtime: Any
) -> None:
    from workers.ops.status import collect_status

    # Given a prefork worker that ran a leaking task and an ordinary one
    with subprocess_worker(redis_url, redis_client, tmp_path, concurrency=1) as worker:
        for i in range(3):
            worker.send(celery_app, "tests.leaky.leak", i).get(timeout=60)
        for i in range(5):
            worker.send(celery_app, "tests.leaky.echo", i).get(timeout=60)
        wait_for(
            lambda: redis_client.hget("wk:stats:mem:tests.leaky.echo", "count") == "5",
            10,
            message="task statistics",
        )
        wait_for(lambda: 8 in child_task_counts(redis_client, worker), 10, message="child record")
        # When status is collected as JSON
        status = json.loads(json.dumps(collect_status(runtime), default=str))
    # Then task_memory lists the leaking task first, with a mean growth of about one leak
    tasks = status["task_memory"]["tasks"]
    first, leak = next(iter(tasks.items()))
    assert first == "tests.leaky.leak"
    assert leak["count"] == 3 and LEAK_MB - 3 <= leak["mean_delta_mb"] <= LEAK_MB + 3
    assert tasks["tests.leaky.echo"]["mean_delta_mb"] < 3
    # And workers shows the node: its parent's memory and the child with its tasks and age
    node = status["workers"]["nodes"][worker.node]
    assert node["parent"]["rss_mb"] > 0 and node["parent"]["pool"] == "prefork"
    (child,) = node["children"]
    assert child["tasks"] == 8 and child["rss_mb"] > 0 and child["uss_mb"] > 0
    assert child["age_s"] >= 0
    assert node["recycles"] == {"memory": 0, "max_tasks": 0, "hard": 0, "lost": 0}
    assert status["dead_letters"]["size"] == 0


def child_task_counts(client: Any, worker: SubprocessWorker) -> list[int]:
    return [
        json.loads(v).get("tasks", 0)
        for f, v in node_hash(client, worker).items()
        if f.startswith("child:")
    ]


# --- the parts, without a worker -------------------------------------------------------


def test_task_statistics_merge_counts_means_and_maxima_and_expire(
    redis_client: Any, settings: Any
) -> None:
    store = MemoryStore(redis_client, settings)
    first, second = TaskMemory(), TaskMemory()
    first.add(100.0, 130.0, 140.0)
    first.add(130.0, 131.0, 135.0)
    second.add(50.0, 40.0, None)
    store.flush("n1", 1, None, {"t": first})
    store.flush("n1", 1, None, {"t": second})
    raw = redis_client.hgetall("wk:stats:mem:t")
    assert raw["count"] == "3"
    assert float(raw["sum_delta_mb"]) == pytest.approx(21.0)
    assert float(raw["max_delta_mb"]) == pytest.approx(30.0)
    assert float(raw["max_peak_mb"]) == pytest.approx(140.0)
    assert float(raw["last_delta_mb"]) == pytest.approx(-10.0)
    assert 0 < redis_client.ttl("wk:stats:mem:t") <= settings.state_ttl


def test_kill_counter_counts_per_task_id_and_expires(redis_client: Any, settings: Any) -> None:
    store = MemoryStore(redis_client, settings)
    assert store.record_kill("id-1", "tasks.x", "[1]", 300.0, "hard") == 1
    assert store.record_kill("id-1", "tasks.x", "[1]", 320.0, "lost") == 2
    assert store.record_kill("id-2", "tasks.x", "[2]", None, "lost") == 1
    assert store.kills("id-1")["last_mem_mb"] == "320.0"
    assert 0 < redis_client.ttl("wk:kills:id-1") <= settings.state_ttl
    assert redis_client.hget("wk:stats:mem:tasks.x", "kills") == "3"


def test_dead_letter_list_keeps_only_the_newest_up_to_its_cap(
    redis_client: Any, settings: Any
) -> None:
    store = MemoryStore(redis_client, replace(settings, max_dead_letters=3))
    for i in range(5):
        store.dead_letter(f"id-{i}", "tasks.x", "[]", {"count": "2"}, "n1")
    assert [d["id"] for d in store.dead_letters().latest()] == ["id-4", "id-3", "id-2"]


def test_args_summary_is_bounded() -> None:
    assert args_summary("[1, 2]", "{}") == "[1, 2]"
    assert len(args_summary("x" * 10_000, "{'a': 1}")) == 200


def test_memory_shared_with_the_parent_after_fork_does_not_count_against_the_child() -> None:
    # Given 200 MB written before a fork, so the child's RSS includes it but none is its own
    ballast = b"\x03" * (200 * MB)
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    try:
        proc = psutil.Process(child.pid)
        wait_for(lambda: proc.memory_info().rss > 200 * MB, 10, message="child mapped")
        # Then a 150 MB limit is not exceeded: only private memory counts
        assert over_limit(proc, 150) is None
        assert read_memory(proc, with_uss=True).private_mb < 150
    finally:
        child.terminate()
        child.join()
    del ballast


def test_task_peak_is_reported_when_the_task_raised_the_high_water_mark(settings: Any) -> None:
    # Given the guard as it runs in a pool child (one task at a time)
    guard = TaskGuard(settings, "n1", recycles=False, exclusive=True)
    high = SelfMemory().peak_mb()
    # When a task briefly holds 50 MB more than this process ever held, then frees it
    guard.before("t1")
    transient = b"\x04" * int((high - SelfMemory().rss_mb() + 50) * MB)
    del transient
    guard.after("t1", "tasks.spike")
    # Then its peak is recorded though its memory after is back where it was
    stats = guard._pending["tasks.spike"]
    assert stats.max_peak is not None and stats.max_peak >= high + 45
    assert stats.last_after < stats.max_peak - 40
    # And a task that stays under the high-water mark reports no peak rather than a wrong one
    guard.before("t2")
    guard.after("t2", "tasks.flat")
    assert guard._pending["tasks.flat"].max_peak is None
