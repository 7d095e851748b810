"""``workers.core.exchange``: a deadline shuts down the sockets of its own exchange only (never
another thread's — the Redis client's, a poll's), and a reply read in an exchange stops at its
cap. Real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from workers.core.exchange import Exchange


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()
    for conn in held:
        conn.close()


def _reader(port: int, outcome: dict[str, Any], exchange: Exchange | None, seconds: float):
    def run() -> None:
        def read() -> None:
            sock = socket.create_connection(("127.0.0.1", port))
            try:
                outcome["data"] = sock.recv(10)  # b"" once shut down
            except OSError as exc:
                outcome["error"] = exc
            finally:
                sock.close()

        if exchange is None:
            read()
        else:
            with exchange.within(seconds):
                read()
            outcome["expired"] = exchange.expired

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_deadline_shuts_down_only_its_own_exchange_sockets(silent_server):
    short, long_ = Exchange(), Exchange()
    cut: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    outside: dict[str, Any] = {}
    threads = [
        _reader(silent_server, cut, short, 0.5),
        _reader(silent_server, kept, long_, 600),
        _reader(silent_server, outside, None, 0),
    ]
    threads[0].join(20)
    assert not threads[0].is_alive(), "the exchange past its deadline is still reading"
    assert cut["expired"] is True and cut.get("data", b"") == b""
    time.sleep(1.0)
    # the other exchange, and a socket of no exchange, are still waiting for their peer
    assert threads[1].is_alive() and threads[2].is_alive()
    assert kept == {} and outside == {}


def test_an_exchange_that_finishes_in_time_is_not_expired(silent_server):
    exchange = Exchange()
    with exchange.within(30):
        socket.create_connection(("127.0.0.1", silent_server)).close()
    assert exchange.expired is False


class _Big(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"x" * 200_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the capped client hangs up
            self.wfile.write(body)


def test_a_reply_read_in_an_exchange_stops_at_its_cap():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with Exchange(reply_cap=1000).within(30):
            capped = requests.get(url, timeout=10)
        assert capped.status_code == 200 and len(capped.content) == 1000
        assert len(requests.get(url, timeout=10).content) == 200_000  # outside: untouched
    finally:
        server.shutdown()
        server.server_close()


def test_a_deadline_that_fires_as_its_send_ends_never_cuts_the_next_send(silent_server):
    """The watchdog takes a send's alarm off its heap, and before it shuts that exchange's
    sockets the send ends at its deadline and the next send on the same Exchange starts (on
    the pooled connection): the late expiry must leave the next send alone."""
    exchange = Exchange()
    popped, go, done = threading.Event(), threading.Event(), threading.Event()
    expire = exchange.expire

    def held_expire(*args: Any) -> None:  # the watchdog, stopped between its pop and expiry
        popped.set()
        assert go.wait(20)
        try:
            expire(*args)
        finally:
            done.set()

    exchange.expire = held_expire  # type: ignore[method-assign]
    # Given a send that reaches its deadline: the watchdog has taken its alarm
    with exchange.within(0.05):
        assert popped.wait(20)
    # When the next send starts on the same Exchange, its socket open, and only then does the
    # watchdog go on with the first send's expiry
    with exchange.within(600):
        sock = socket.create_connection(("127.0.0.1", silent_server))
        try:
            go.set()
            assert done.wait(20)
            # Then the next send is not expired and its socket still waits for its peer
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(10)  # b"" at once had it been shut down
        finally:
            sock.close()
    assert exchange.expired is False
    # And a send that really runs past its deadline is still cut
    exchange.expire = expire  # type: ignore[method-assign]
    cut: dict[str, Any] = {}
    thread = _reader(silent_server, cut, exchange, 0.3)
    thread.join(20)
    assert cut["expired"] is True and cut.get("data", b"") == b""
