"""The embedded Redis: one server per home, shared, stopped with its last user, durable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.support.helpers import wait_for
from workers.core.connection import EmbeddedRedis, RedisUnavailable, connect

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


def test_its_data_files_are_readable_by_their_owner_only(tmp_path):
    # Given a data directory an older version left readable by everyone
    (tmp_path / "redis").mkdir(mode=0o755)
    os.chmod(tmp_path / "redis", 0o755)
    embedded = EmbeddedRedis(tmp_path)
    client = connect(embedded.acquire())
    try:
        # When the registry writes a source whose URL holds a token
        client.hset("wk:sources", "feed", '{"url": "https://h/feed?token=SECRET"}')
        # Then its append-only files sit in a directory only the owner can enter
        assert embedded.dir == tmp_path / "redis"
        assert embedded.dir.stat().st_mode & 0o077 == 0
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


def test_a_live_server_that_does_not_answer_is_waited_for_never_replaced(tmp_path):
    # Given a running embedded server that stops answering (paused, as if busy or loading)
    holder = EmbeddedRedis(tmp_path)
    holder.acquire()
    server = holder.server_pid()
    assert server is not None
    os.kill(server, signal.SIGSTOP)
    try:
        # When another process needs it while it hangs for longer than a PING timeout
        other = subprocess.Popen(
            [sys.executable, "-c", USER, str(tmp_path), "0"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(4)
        assert other.poll() is None  # still waiting, not starting its own
        os.kill(server, signal.SIGCONT)
        # Then it joins the same server once it answers, and no second server ever ran
        assert int(other.stdout.readline()) == server  # type: ignore[union-attr]
        assert other.wait(timeout=30) == 0
        servers = [
            p
            for p in psutil.process_iter(["name", "cwd"])
            if "redis" in (p.info["name"] or "") and p.info["cwd"] == str(holder.dir)
        ]
        assert [p.pid for p in servers] == [server]
    finally:
        os.kill(server, signal.SIGCONT)
        holder.release()


def test_a_server_that_never_answers_gives_one_line_not_a_second_server(tmp_path):
    holder = EmbeddedRedis(tmp_path)
    holder.acquire()
    server = holder.server_pid()
    assert server is not None
    os.kill(server, signal.SIGSTOP)
    try:
        with pytest.raises(RedisUnavailable, match=r"pid \d+ is running but has not answered"):
            EmbeddedRedis(tmp_path).acquire(wait=3)
        assert holder.process_pid() == server
    finally:
        os.kill(server, signal.SIGCONT)
        holder.release()
