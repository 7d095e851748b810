"""Delivery never shares pool processes with polls (issue 19 #1): its tasks have their own
queue, consumed by their own small worker that `watchkeeper run` starts — and not by a worker
started as docs/running.md (several machines) says."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from tests.support.helpers import wait_for
from tests.support.processes import start_celery, stop

NOTIFY_QUEUE = "notify"


def test_delivery_tasks_are_routed_to_their_own_queue_with_their_own_time_limits(celery_app):
    route = celery_app.amqp.router.route
    assert route({}, "tasks.notify.deliver")["queue"].name == NOTIFY_QUEUE
    assert route({}, "tasks.feeds.poll")["queue"].name == "celery"
    assert route({}, "tasks.cleanup.cleanup")["queue"].name == "celery"
    task = celery_app.tasks["tasks.notify.deliver"]
    settings = celery_app.watchkeeper_settings
    assert task.time_limit == settings.notify_task_time_limit < settings.task_time_limit
    assert task.soft_time_limit < task.time_limit


def test_run_starts_a_small_delivery_worker_beside_the_pool(settings, tmp_path: Path):
    from workers.core.sources_file import validate_config
    from workers.ops.supervisor import child_commands

    children = {c.name: c.argv for c in child_commands(settings, validate_config({}), 4, tmp_path)}
    pool, delivery = children["worker"], children["notify"]
    assert pool[pool.index("--queues") + 1] == "celery"
    assert delivery[delivery.index("--queues") + 1] == NOTIFY_QUEUE
    assert delivery[delivery.index("--concurrency") + 1] == str(settings.notify_concurrency)
    assert delivery[delivery.index("--pool") + 1] == "prefork"  # time limits end a stuck child
    assert delivery[delivery.index("--hostname") + 1].startswith("watchkeeper-notify-")


def _active_queues(app, node: str) -> list[str]:
    reply = app.control.inspect(destination=[node], timeout=5).active_queues() or {}
    return sorted(q["name"] for q in reply.get(node, []))


def test_a_worker_as_the_readme_starts_it_leaves_deliveries_to_the_delivery_worker(
    celery_app, redis_url, tmp_path: Path
):
    env = {"REDIS_URL": redis_url, "WATCHKEEPER_HOME": str(tmp_path / "home")}
    tag = uuid.uuid4().hex[:8]
    pool_node, notify_node = f"pool-{tag}@localhost", f"notify-{tag}@localhost"
    # the commands of docs/running.md, as a user types them on each machine
    started = [
        start_celery(
            ["worker", "--pool", "prefork", "--concurrency", "1", "-n", pool_node],
            env,
            tmp_path / "pool.log",
        ),
        start_celery(
            ["worker", "-Q", NOTIFY_QUEUE, "--concurrency", "1", "-n", notify_node],
            env,
            tmp_path / "notify.log",
        ),
    ]
    try:
        for node in (pool_node, notify_node):
            wait_for(lambda n=node: _active_queues(celery_app, n), 120, 1, f"worker {node}")
        assert _active_queues(celery_app, pool_node) == ["celery"]
        assert _active_queues(celery_app, notify_node) == [NOTIFY_QUEUE]
    finally:
        for proc in started:
            stop(proc)


def test_at_most_one_requested_delivery_run_waits_in_the_queue(runtime):
    # with no delivery worker running, writers' requests must not pile up in its queue
    from tasks.notify.tasks import notify_new_items

    runtime.use_config('[[notify]]\nname = "ops"\nurls = ["json://127.0.0.1:9/x"]\n')
    runtime.redis.delete(NOTIFY_QUEUE)
    lengths = []
    for _ in range(5):
        notify_new_items(runtime, "alerts")
        lengths.append(runtime.redis.llen(NOTIFY_QUEUE))
        time.sleep(0.3)  # past the 250 ms between two requests
    assert max(lengths) <= 1, lengths


def test_beat_adds_no_scheduled_run_while_one_waits_for_a_delivery_worker(
    tmp_path: Path, celery_app
):
    """Beat's periodic delivery entry: with no delivery worker consuming ``notify``, every
    expiry of its queued marker would add a message, and expired messages stay in the list
    until consumed — the queue would grow without bound."""
    import dataclasses
    import os
    import subprocess

    import pytest

    from beat_schedule import DispatchScheduler
    from workers.celery_app import create_app
    from workers.core import keys
    from workers.core.connection import connect
    from workers.core.settings import Settings

    if not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("needs the system redis-server")
    from tests.support.notify_receivers import free_port

    # Given a Redis of this test alone (no worker of the session consumes its queues) and a
    # short delivery interval
    port = free_port()
    server = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = connect(url)
    from tests.integration.test_redis_urls import _answers

    wait_for(lambda: _answers(url), 20, message="the test's redis-server")
    settings = dataclasses.replace(
        Settings.from_env(), redis_url=url, notify_interval=0.1, dispatch_interval=0.1
    )
    app = create_app(settings, config_path=None)
    beat = DispatchScheduler(app, lazy=True)
    marker = keys.QUEUED.key(settings, "notify:deliver")
    lengths = []
    try:
        # When beat makes 20 passes, the entry's queued marker expiring before each
        for _ in range(20):
            client.delete(marker)
            time.sleep(0.15)  # past the entry's interval: it is due
            beat.tick()
            lengths.append(client.llen(NOTIFY_QUEUE))
        # Then the notify queue holds a bounded few runs, not one per pass
        assert lengths[0] == 1 and max(lengths) <= 1, lengths
        # And once that run is past its expiry, status asks whether a delivery worker runs
        from tasks.notify.status import queue_state, render
        from workers.core.runtime import Runtime

        rt = Runtime(settings, client, None)
        assert queue_state(rt)["expired"] is False
        waiting = json.loads(client.lindex(NOTIFY_QUEUE, -1))
        waiting["headers"]["expires"] = "2000-01-01T00:00:00+00:00"
        client.lset(NOTIFY_QUEUE, -1, json.dumps(waiting))
        shown = render({"sinks": {}, "queue": queue_state(rt)})
        assert any("past their expiry: is a delivery worker running?" in s for s in shown)
    finally:
        beat.close()
        celery_app.set_current()
        celery_app.set_default()
        client.close()
        server.terminate()
        server.wait(timeout=10)


def test_requested_runs_do_not_pile_up_past_the_pending_markers_age(runtime, celery_app):
    # with no delivery worker, the writers' request marker expires (QUEUED_MAX_AGE) and they
    # request again: a run already waiting in the queue will do
    from tasks.notify.tasks import notify_new_items
    from workers.core import keys

    runtime.use_config('[[notify]]\nname = "ops"\nurls = ["json://127.0.0.1:9/x"]\n')
    runtime.redis.delete(NOTIFY_QUEUE)
    lengths = []
    for _ in range(20):
        runtime.redis.delete(keys.NOTIFY_PENDING.key(runtime.settings))  # its age passed
        notify_new_items(runtime, "alerts")
        lengths.append(runtime.redis.llen(NOTIFY_QUEUE))
    runtime.redis.delete(NOTIFY_QUEUE)
    assert max(lengths) <= 1, lengths
