"""Bounds for talking to a hostile peer from any thread: a wall-clock deadline for a whole
exchange, and a cap on the bytes of an HTTP reply read.

A timeout given to ``requests`` (or to ``smtplib``, or to any of Apprise's plugins) bounds each
*read*: a receiver that sends its headers and then one byte per second keeps the request alive
for as long as it likes. ``Exchange.within(seconds)`` bounds the whole of it — DNS aside,
connect, request, headers and body together:

* every socket created while an exchange runs is recorded: the interpreter's
  ``socket.__new__`` audit event (PEP 578) names it, and a context variable says which exchange
  is running in this thread — or in a thread started with a copy of its context, as Apprise
  does — so sockets of other threads (the Redis client's, a poll's) are never touched; so is
  the socket of a kept-alive connection a urllib3 pool hands out while it runs (a
  process-wide ``requests.Session`` reuses one made by an earlier exchange);
* one watchdog thread per process keeps the armed deadlines; when one passes it calls
  ``shutdown(SHUT_RDWR)`` on that exchange's sockets still open. A shutdown wakes a ``recv``,
  ``send`` or ``connect`` blocked in any thread at once (closing the descriptor would not, and
  could hit a descriptor number already reused), so the exchange fails within milliseconds of
  its deadline with the library's own connection error, which the caller reports as a timeout
  (``Exchange.expired``).

Why not SIGALRM: only the main thread receives signals, and deliveries run one thread per
destination. Why not a thread per send that is given up on (Apprise's own ``timeout``): the
abandoned thread goes on reading from the peer in the background. Why not a subprocess per
send: it would cost a fork or an interpreter per message, where the watchdog costs a heap push.

Sockets are recorded weakly: a socket closed and collected leaves the set, so an exchange kept
for a whole run (a ``requests.Session`` reusing its connection) holds only live ones.

The reply cap: while an exchange with ``reply_cap`` runs, every ``requests`` response built in
it reads at most that many bytes of its body (``requests.adapters.HTTPAdapter.build_response``
is wrapped once per process; outside an exchange it behaves as before); beyond, the body ends
there and the connection is closed rather than drained. That covers the code we call that uses
``requests`` — Apprise's HTTP plugins included — and nothing else.

What this cannot bound: name resolution (``getaddrinfo`` runs in C and cannot be interrupted —
the resolver's own timeouts bound it), CPU spent in Python between reads, sleeps a library
takes on purpose (Apprise's pacing between messages to one service, which callers add to the
deadline), and the bytes a non-``requests`` transport reads before the deadline (``smtplib``
reads a reply's lines whole; the deadline bounds how long it can read them).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

_CURRENT: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "watchkeeper_exchange", default=None
)


class Exchange:
    """One peer's exchanges (one destination's sends in a run): sockets opened while one of
    them runs, and whether the last one passed its deadline."""

    def __init__(self, reply_cap: int | None = None) -> None:
        self.reply_cap = reply_cap
        self.expired = False
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._generation = 0
        self._running = 0
        """The generation of the ``within`` block running now (0: none)."""
        _install()

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[Exchange]:
        """Run the block with a wall-clock deadline ``seconds`` from now; afterwards
        ``expired`` says whether the deadline cut it.

        Each block is a generation: the watchdog may take a block's alarm just as the block
        ends at its deadline, and call ``expire`` only once the next block on this Exchange
        (the next send, on the pooled connection) has started — so ``expire`` acts only while
        its own generation runs, checked and done under the lock the block's start and end
        take too."""
        with self._lock:
            self._generation += 1
            self._running = generation = self._generation
            self.expired = False
        token = _CURRENT.set(self)
        alarm = _WATCHDOG.arm(time.monotonic() + max(0.0, seconds), self, generation)
        try:
            yield self
        finally:
            _WATCHDOG.disarm(alarm)
            _CURRENT.reset(token)
            with self._lock:
                self._running = 0

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def expire(self, generation: int) -> None:
        """Shut down every socket of this exchange still open (from the watchdog thread), if
        the block ``generation`` is still the one running."""
        with self._lock:
            if self._running != generation:
                return  # it ended in time after all: the next block is not its business
            self.expired = True
            for sock in list(self._sockets):
                with contextlib.suppress(OSError, ValueError):
                    # The base class's method: an SSL socket's own would drop its SSL object
                    # under the reading thread's feet; the kernel socket is what must stop.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def current() -> Exchange | None:
    """The exchange running in this context, if any."""
    return _CURRENT.get()


class _Alarm:
    __slots__ = ("cancelled", "exchange", "generation")

    def __init__(self, exchange: Exchange, generation: int) -> None:
        self.exchange = exchange
        self.generation = generation
        self.cancelled = False


class _Watchdog:
    """One thread per process: expires exchanges whose deadline passed (a heap of alarms)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._pid = -1
        self._waiting_until = float("inf")  # the deadline the thread sleeps until

    def after_fork(self) -> None:
        """A forked child has no watchdog thread, and the lock may have been held."""
        self._cv = threading.Condition()
        self._heap = []
        self._pid = -1
        self._waiting_until = float("inf")

    def arm(self, deadline: float, exchange: Exchange, generation: int) -> _Alarm:
        alarm = _Alarm(exchange, generation)
        with self._cv:
            if self._pid != os.getpid():  # first use in this process: start the thread
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="exchange-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (deadline, next(self._order), alarm))
            if deadline < self._waiting_until:  # else the thread wakes in time anyway
                self._cv.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self._cv:
            alarm.cancelled = True
            self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        """Keep a live alarm on top, so the thread sleeps until a deadline that matters (it
        is not woken for every send that finished in time)."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._drop_cancelled()
                if not self._heap:
                    self._waiting_until = float("inf")
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._waiting_until = self._heap[0][0]
                    self._cv.wait(wait)
                    continue
                _, _, alarm = heapq.heappop(self._heap)
                alarm.cancelled = True
            alarm.exchange.expire(alarm.generation)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.after_fork)
_installed = False
_install_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.__new__":
        exchange = _CURRENT.get()
        if exchange is not None:
            exchange.track(args[0])


def _install() -> None:
    """The audit hook and the ``requests`` reply cap, once per process (neither can be
    removed: both do nothing outside an exchange)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        sys.addaudithook(_audit)
        _cap_requests_replies()
        _track_pooled_connections()
        _installed = True


class CappedBody:
    """A urllib3 response whose body ends after ``cap`` bytes (the connection is then closed,
    not drained); everything else is the response's own."""

    def __init__(self, raw: Any, cap: int) -> None:
        self._raw = raw
        self._cap = cap
        self.read_bytes = 0
        self.truncated = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def _take(self, data: bytes) -> bytes:
        room = self._cap - self.read_bytes
        if len(data) > room:
            data = data[: max(0, room)]
            self.truncated = True
        self.read_bytes += len(data)
        if self.truncated:
            self._raw.close()
        return data

    def read(self, amt: int | None = None, *args: Any, **kwargs: Any) -> bytes:
        if self.truncated:
            return b""
        room = self._cap - self.read_bytes + 1  # one more: to know it went over
        want = room if amt is None else min(amt, room)
        return self._take(self._raw.read(want, *args, **kwargs))

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            data = self._take(chunk)
            if data:
                yield data
            if self.truncated:
                return


def _cap_requests_replies() -> None:
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.build_response
    if getattr(original, "_watchkeeper_capped", False):
        return

    def build_response(self: HTTPAdapter, req: Any, resp: Any) -> Any:
        exchange = _CURRENT.get()
        if exchange is not None and exchange.reply_cap is not None:
            resp = CappedBody(resp, exchange.reply_cap)
        return original(self, req, resp)

    build_response._watchkeeper_capped = True  # type: ignore[attr-defined]
    HTTPAdapter.build_response = build_response  # type: ignore[method-assign]


def _track_pooled_connections() -> None:
    """A connection taken from a urllib3 pool inside an exchange has its socket recorded (a new
    one is recorded when it connects, through the audit hook)."""
    from urllib3.connectionpool import HTTPConnectionPool

    original = HTTPConnectionPool._get_conn
    if getattr(original, "_watchkeeper_tracked", False):
        return

    def _get_conn(self: HTTPConnectionPool, timeout: float | None = None) -> Any:
        conn = original(self, timeout)
        exchange = _CURRENT.get()
        sock = getattr(conn, "sock", None)
        if exchange is not None and isinstance(sock, socket.socket):
            exchange.track(sock)
        return conn

    _get_conn._watchkeeper_tracked = True  # type: ignore[attr-defined]
    HTTPConnectionPool._get_conn = _get_conn  # type: ignore[method-assign]
