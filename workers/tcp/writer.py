"""The bounded queue between TCP readers and Redis, and the single writer that drains it.

Throughput: per-command client overhead, not Redis, bounds a Python writer (DESIGN.md: ~60k
lines/s with one pipelined XADD per line, ~285k with one script per batch). So a reader hands
over *chunks* — the lines of one read from one peer, joined by ``\\n`` — and the writer sends one
call of ``lua/write_lines.lua`` per batch whose arguments are three per chunk (peer, receive
time, lines); the script splits them and XADDs each line inside Redis, then trims the stream
once, oldest first, to its cap and byte budget (``workers/store/lua/lib/stream_budget.lua``).
Every entry carries ``seq`` and ``schema`` from the stream's counter, as
every stream entry does (``workers/store/streams.py``).

Redis itself then bounds the rate at one stream entry per line (~3.5 µs of Redis CPU each with
the append-only file on; bench/bench_tcp.py). So the writer packs *only under backlog*: while
fewer than ``WATCHKEEPER_TCP_PACK_BACKLOG`` lines wait, every line is its own entry; beyond that
up to ``WATCHKEEPER_TCP_PACK_LINES`` consecutive lines of one read share an entry (fields
``lines`` and ``count``), which Redis writes ~20x faster, until the backlog is gone.
``workers/tcp/entries.py`` turns either shape back into one record per line.

Durability: the writer keeps the batch it holds until Redis accepts it, retrying with backoff
while the queue fills and the readers pause. A retry after a lost reply must not write the
batch twice, and a batch that failed must not be skipped because a later one succeeded: every
batch carries its number, and the script records written numbers in this listener instance's
own set (``wk:tcp:batch:{instance}``), in the same atomic step as the writes. Resending every
batch in flight after a broken connection or an error reply therefore writes each exactly once,
whatever other listeners on the same Redis do.

Replicas (with Sentinel): Redis replicates asynchronously, so a batch a primary accepted can
vanish with it in a failover — and lines the listener has let go of are never sent again. So
after each round of batches the writer sends ``WAIT n ms`` on the same connection
(``workers.store.replicas``) and lets go of the batches before it only when ``n`` replicas
have them; otherwise it reconnects — through Sentinel, to whichever server is primary now — and
resends them, and the batch numbers make the resend write only what the failover lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from workers.core import sentinel
from workers.store import replicas
from workers.store.scripts import Script
from workers.store.streams import SCHEMA
from workers.tcp.stats import TcpStats, now_ms

log = logging.getLogger("watchkeeper.tcp")

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
MARKER_TTL_S = 3600
PIPELINE_DEPTH = 4

MARKER_WINDOW = 64
"""Batch numbers an instance remembers: far more than the ``PIPELINE_DEPTH`` ever resent."""

_WRITE_LINES = Script("workers.tcp", "write_lines", include=("workers.store:stream_budget",))


def new_instance() -> str:
    """A name no other listener, and no earlier run of this one, has used."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Chunk:
    """Consecutive valid lines from one read of one peer, joined by ``\\n`` (no empty lines)."""

    peer: str
    received_at: str
    count: int
    payload: bytes


class LineQueue:
    """FIFO of chunks bounded by lines and bytes.

    ``put`` never refuses: the caller (the listener) pauses every reader as soon as ``full()``,
    so the bound is exceeded by at most one read. ``resumable()`` (half the caps) gives the
    readers hysteresis instead of pausing and resuming on every batch.
    """

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self._items: deque[Chunk] = deque()
        self.lines = 0
        self.bytes = 0
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, chunk: Chunk) -> None:
        self._items.append(chunk)
        self.lines += chunk.count
        self.bytes += len(chunk.payload)
        self.ready.set()

    def full(self) -> bool:
        return self.lines >= self.max_lines or self.bytes >= self.max_bytes

    def resumable(self) -> bool:
        return self.lines <= self.max_lines // 2 and self.bytes <= self.max_bytes // 2

    def take(self, max_lines: int) -> list[Chunk]:
        """At least one chunk (if any), then more while the batch stays within ``max_lines``."""
        batch: list[Chunk] = []
        taken = 0
        while self._items and (not batch or taken + self._items[0].count <= max_lines):
            chunk = self._items.popleft()
            batch.append(chunk)
            taken += chunk.count
            self.lines -= chunk.count
            self.bytes -= len(chunk.payload)
        if not self._items:
            self.ready.clear()
        return batch


def async_client(url_kwargs: dict[str, Any], url: str | None) -> aioredis.Redis:
    """An asyncio client without redis-py's own retries: the writer owns retry and backoff.
    With a Sentinel URL each connection it makes asks Sentinel for the primary first."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_timeout": 10,
        "socket_connect_timeout": 2,
        "retry": Retry(NoBackoff(), 0),
    }
    if url_kwargs:
        return aioredis.Redis(**url_kwargs, **options)
    assert url is not None
    if sentinel.is_sentinel(url):
        client: aioredis.Redis = sentinel.async_client(sentinel.parse(url), **options)
        return client
    return aioredis.Redis.from_url(url, **options)


@dataclass(frozen=True)
class Target:
    """Where a writer writes: the stream, its ``seq`` counter, its cap, this instance's
    marker key (``wk:tcp:batch:{instance}``), and the stream's byte budget and ledger key."""

    stream: str
    seq_key: str
    marker: str
    cap: int
    budget: int
    ledger_key: str


@dataclass
class Sent:
    """One command in flight: a batch (its script arguments and lines) or a ``WAIT``."""

    args: list[Any] | None
    lines: int = 0
    counted: bool = False


class BatchWriter:
    """Drains the queue into the ``logs`` stream, one script call per batch, never dropping.

    Up to ``PIPELINE_DEPTH`` batches are in flight on one connection, so Redis has the next
    batch while the event loop is busy reading sockets; one connection keeps them in order.
    ``pack_lines`` is the most lines one entry may hold under backlog (1: never pack), and
    ``pack_backlog`` the queued lines from which packing starts (0: always pack). ``wait`` is
    the ``WAIT`` command that must confirm written batches before they are let go (None: a
    batch is done when Redis accepts it).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        target: Target,
        batch_lines: int,
        queue: LineQueue,
        stats: TcpStats,
        on_taken: Callable[[], None],
        pack_lines: int = 1,
        pack_backlog: int = 0,
        wait: tuple[Any, ...] | None = None,
    ) -> None:
        self.client, self.queue, self.stats = client, queue, stats
        self.pack_lines, self.pack_backlog = pack_lines, pack_backlog
        self.keys = [
            target.stream,
            target.seq_key,
            target.marker,
            target.ledger_key,
        ]
        self.budget = target.budget
        self.cap, self.batch_lines, self.on_taken = target.cap, batch_lines, on_taken
        self.wait = wait
        self.batch = 0
        self.inflight: deque[Sent] = deque()
        """Commands sent whose replies are not read yet, in order."""
        self.unconfirmed: deque[Sent] = deque()
        """Batches Redis accepted that no ``WAIT`` has confirmed on enough replicas yet."""
        self.conn: Any = None
        self.stopping = False

    @property
    def holding(self) -> int:
        """Lines taken from the queue and not yet confirmed written."""
        return sum(b.lines for b in self.unconfirmed) + sum(b.lines for b in self.inflight)

    def _batches_in_flight(self) -> int:
        return sum(1 for b in self.inflight if b.args is not None)

    def stop(self) -> None:
        """Finish what is queued, then return from ``run``."""
        self.stopping = True
        self.queue.ready.set()

    async def run(self) -> None:
        """Write until stopped and drained; on any Redis error back off, reconnect, resend."""
        delay, failing_since = BACKOFF_FIRST_S, 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self._connect()
                    if failing_since:
                        log.warning(
                            "[tcp] Redis writes resumed after %.1fs", loop.time() - failing_since
                        )
                        delay, failing_since = BACKOFF_FIRST_S, 0.0
                    await self._pump()
                    return
                except NoScriptError:
                    # Redis lost its script cache (restart behind a proxy, SCRIPT FLUSH): the
                    # reconnect loads it and resends; batches already written are skipped.
                    await self._disconnect()
                    self.stats.script_reloads += 1
                except (redis.RedisError, OSError) as exc:
                    await self._disconnect()
                    self.stats.write_errors += 1
                    self.stats.last_write_error = f"{type(exc).__name__}: {exc}"[:300]
                    self.stats.last_write_error_at = now_ms()
                    if not failing_since:
                        failing_since = loop.time()
                        log.warning(
                            "[tcp] Redis write failed (%s); holding %d lines, retrying",
                            self.stats.last_write_error,
                            self.holding,
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            await self._disconnect()

    async def _connect(self) -> None:
        """A fresh connection with the script loaded; resend every batch not yet confirmed —
        unconfirmed, then in flight — in order (the batch numbers skip what was written)."""
        if self.conn is not None:
            return
        conn = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self.conn = conn
        await conn.connect()
        await conn.send_command("SCRIPT", "LOAD", _WRITE_LINES.source)
        await conn.read_response()
        resend = [b for b in (*self.unconfirmed, *self.inflight) if b.args is not None]
        self.unconfirmed.clear()
        self.inflight = deque(resend)
        for sent in resend:
            assert sent.args is not None
            await conn.send_command(*self._command(sent.args))
        if resend:
            await self._send_wait()

    async def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def _pump(self) -> None:
        while True:
            sent = False
            while self._batches_in_flight() < PIPELINE_DEPTH and len(self.queue):
                await self._send(self.queue.take(self.batch_lines))
                self.on_taken()
                sent = True
            if sent:
                await self._send_wait()
            if not self.inflight:
                if self.stopping:
                    return
                await self.queue.ready.wait()
                continue
            reply = await self.conn.read_response()
            done = self.inflight.popleft()
            if done.args is None:  # a WAIT: the batches before it are on enough replicas
                replicas.confirmed(reply, self.wait or ("WAIT", 0, 0), "TCP lines")
                self.unconfirmed.clear()
                continue
            lines, entries, again = reply
            if not done.counted:
                done.counted = True
                self.stats.written += int(lines)
                self.stats.entries += int(entries)
                self.stats.resent_skipped += int(again)
            if self.wait is not None:
                self.unconfirmed.append(done)

    async def _send_wait(self) -> None:
        if self.wait is not None:
            self.inflight.append(Sent(None))
            await self.conn.send_command(*self.wait)

    def _command(self, args: list[Any]) -> list[Any]:
        return ["EVALSHA", _WRITE_LINES.sha, len(self.keys), *self.keys, *args]

    def pack_for_next(self) -> int:
        """Lines per entry for the batch being sent: packed only while a backlog waits."""
        return self.pack_lines if self.queue.lines >= self.pack_backlog else 1

    async def _send(self, batch: list[Chunk]) -> None:
        self.batch += 1
        pack = self.pack_for_next()
        args: list[Any] = [
            self.cap,
            self.batch,
            MARKER_TTL_S,
            MARKER_WINDOW,
            SCHEMA,
            pack,
            self.budget,
        ]
        for chunk in batch:
            args += (chunk.peer, chunk.received_at, chunk.payload)
        self.inflight.append(Sent(args, sum(c.count for c in batch)))
        await self.conn.send_command(*self._command(args))
