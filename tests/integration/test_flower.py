"""Flower, started for real against the test broker, sees watchkeeper's tasks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.support.helpers import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flower(redis_url):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = dict(os.environ, REDIS_URL=redis_url, FLOWER_UNAUTHENTICATED_API="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthcheck", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=60, interval=0.5, message="flower to answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_flower_lists_watchkeeper_tasks_run_by_a_worker(runtime, worker, flower):
    # Given Flower watching the broker while a real worker runs
    from tasks.cleanup import cleanup

    def listed(task_id: str) -> dict[str, object] | None:
        return requests.get(f"{flower}/api/tasks", timeout=5).json().get(task_id)  # type: ignore[no-any-return]

    # When watchkeeper tasks run (sent again until Flower's event receiver has connected)
    def send_and_look() -> dict[str, object] | None:
        task_id = cleanup.delay().id
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            found = listed(task_id)
            # a task sent before Flower's receiver connected shows its later events only
            if found and found.get("state") == "SUCCESS" and found.get("received"):
                return found
            time.sleep(0.1)
        return None

    task = wait_for(send_and_look, timeout=90, interval=0.1, message="Flower to list a task")
    # Then Flower's API names it and saw it succeed, and its metrics count events
    assert task["name"] == "tasks.cleanup.cleanup"
    assert task["worker"]
    assert "flower_events_total" in requests.get(f"{flower}/metrics", timeout=5).text
