"""The embedded Redis: one server per home, shared, stopped with its last user, durable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil

from tests.support.helpers import wait_for
from workers.core.connection import EmbeddedRedis, connect

USER = textwrap.dedent("""
    import sys, time
    from workers.core.connection import EmbeddedRedis
    from pathlib import Path
    e = EmbeddedRedis(Path(sys.argv[1]))
    e.acquire()
    print(e.server_pid(), flush=True)
    time.sleep(float(sys.argv[2]))
    e.release()
""")


def _users(home, n, hold):
    return [
        subprocess.Popen(
            [sys.executable, "-c", USER, str(home), str(hold)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]


def test_processes_starting_together_share_one_server_that_stops_with_the_last(tmp_path):
    # Given five processes that start using the same home at the same moment
    procs = _users(tmp_path, 5, 1.0)
    pids = {p.stdout.readline().strip() for p in procs}  # type: ignore[union-attr]
    # Then they all found the same server
    assert len(pids) == 1
    server = int(pids.pop())
    assert psutil.pid_exists(server)
    # When the last of them exits, the server stops
    for p in procs:
        assert p.wait(timeout=60) == 0
    wait_for(
        lambda: (
            not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE
        ),
        timeout=15,
        message="server to stop",
    )


def test_a_server_left_by_a_killed_user_is_adopted_and_stopped_by_the_next(tmp_path):
    # Given a user killed with SIGKILL while it held the server
    victim = _users(tmp_path, 1, 60)[0]
    server = int(victim.stdout.readline())  # type: ignore[union-attr]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert psutil.pid_exists(server)
    # When the next user comes and goes
    embedded = EmbeddedRedis(tmp_path)
    embedded.acquire()
    assert embedded.server_pid() == server
    embedded.release()
    # Then the orphaned server is gone too
    wait_for(lambda: not psutil.pid_exists(server), timeout=15, message="server to stop")


def test_data_survives_a_server_restart(tmp_path):
    embedded = EmbeddedRedis(tmp_path)
    client = connect(embedded.acquire())
    client.set("wk:durable", "yes")
    client.close()
    embedded.release()
    assert not embedded.running()
    client = connect(embedded.acquire())
    try:
        assert client.get("wk:durable") == "yes"
    finally:
        client.close()
        embedded.release()


def test_a_long_home_path_still_gets_a_usable_socket(tmp_path):
    home = tmp_path / ("x" * 120)
    embedded = EmbeddedRedis(home)
    client = connect(embedded.acquire())
    try:
        assert client.ping()
    finally:
        client.close()
        embedded.release()
