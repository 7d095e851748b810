"""``watchkeeper listen``: newline-delimited log lines over TCP into the ``logs`` stream.

Every resource a client can make the listener hold has a bound that a setting names:

* a line longer than ``WATCHKEEPER_TCP_MAX_LINE`` is discarded up to its next newline and
  counted; the connection goes on and its later lines arrive;
* a connection never buffers more than ``WATCHKEEPER_TCP_MAX_BUFFER`` bytes (each read is sized
  to the room left), and all readers share one read buffer;
* beyond ``WATCHKEEPER_TCP_MAX_CONNECTIONS`` new connections are closed at once and counted,
  and so are those of one IP address beyond ``WATCHKEEPER_TCP_MAX_CONNECTIONS_PER_PEER`` (one
  host cannot take every slot); each refusal is counted by reason;
* a connection without a complete line for ``WATCHKEEPER_TCP_IDLE_TIMEOUT`` seconds is closed;
* lines wait in one queue bounded by lines and bytes; when it is full *every* reader stops
  reading (the kernel then pushes back on senders) until the single Redis writer has drained
  half of it. A Redis outage therefore pauses reading instead of growing memory, and the lines
  already read wait in the queue until Redis is back.

On SIGTERM / SIGINT the listener stops accepting, stops reading and half-closes every client,
writes every line it has read, and exits within ``WATCHKEEPER_TCP_SHUTDOWN_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from workers.core import keys
from workers.core.connection import client_kwargs, resolve_url
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.store import replicas
from workers.store.series import Every, queue_point
from workers.tcp.stats import (
    RUNNING_TTL_S,
    STATS_INTERVAL_S,
    TcpStats,
    now_ms,
    publish,
)
from workers.tcp.writer import BatchWriter, Chunk, LineQueue, Target, async_client, new_instance

log = logging.getLogger("watchkeeper.tcp")

READ_SIZE = 256 * 1024
LOG_BURST_PER_S = 50
BACKLOG = 1024

__all__ = ["BackgroundListener", "LineFramer", "Listener", "main"]


class LineFramer:
    """Splits one connection's bytes into chunks of valid lines, discarding and reporting the rest.

    ``partial`` (an unterminated line) never exceeds the line limit, so a client sending no
    newline costs at most that much; once over, the framer skips to the next newline.
    """

    __slots__ = ("batch", "discarding", "limit", "max_buffer", "max_line", "on_discard", "partial")

    def __init__(
        self,
        max_line: int,
        max_buffer: int,
        batch_lines: int,
        on_discard: Callable[[str, int], None],
    ) -> None:
        self.max_line, self.max_buffer, self.batch = max_line, max_buffer, batch_lines
        self.limit = max(1, min(max_line, max_buffer - 2))
        self.on_discard = on_discard
        self.partial = b""
        self.discarding = False

    def room(self) -> int:
        """How many bytes the next read may take without passing the buffer cap."""
        return self.max_buffer - len(self.partial)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume one read; return ``(line count, lines joined by \\n)`` chunks."""
        if self.discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return []
            self.discarding = False
            data = data[nl + 1 :]
        elif self.partial:
            data = self.partial + data
            self.partial = b""
        out: list[tuple[int, bytes]] = []
        end = data.rfind(b"\n")
        if end >= 0:
            self._lines(data[:end], out)
            data = data[end + 1 :]
        size = len(data) - (1 if data.endswith(b"\r") else 0)
        if size > self.limit:
            self.discarding = True
            self._discard(size)
        else:
            self.partial = data
        return out

    def finish(self) -> list[tuple[int, bytes]]:
        """At a clean end of stream: the last line even without its newline."""
        out: list[tuple[int, bytes]] = []
        if self.partial and not self.discarding:
            self._lines(self.partial, out)
        self.partial = b""
        return out

    def drop(self) -> int:
        """Forget an unterminated line (reset, idle close, shutdown); return its size."""
        size, self.partial = len(self.partial), b""
        return size

    def _discard(self, size: int) -> None:
        self.on_discard("too_long" if size > self.max_line else "buffer_overflow", size)

    def _lines(self, block: bytes, out: list[tuple[int, bytes]]) -> None:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
            if block.endswith(b"\r"):
                block = block[:-1]
        ok = len(block) <= self.limit or max(map(len, block.split(b"\n"))) <= self.limit
        if ok and (not block or block[0] == 10 or block[-1] == 10 or b"\n\n" in block):
            ok = False
        if ok and not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                ok = False
        if ok:
            n = block.count(b"\n") + 1
            if n <= self.batch:
                out.append((n, block))
                return
            self._emit(block.split(b"\n"), out)
            return
        self._emit(self._valid_lines(block), out)

    def _valid_lines(self, block: bytes) -> list[bytes]:
        good = []
        for line in block.split(b"\n"):
            if not line:
                continue
            if len(line) > self.limit:
                self._discard(len(line))
                continue
            if not line.isascii():
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    self.on_discard("invalid_utf8", len(line))
                    continue
            good.append(line)
        return good

    def _emit(self, lines: list[bytes], out: list[tuple[int, bytes]]) -> None:
        for i in range(0, len(lines), self.batch):
            part = lines[i : i + self.batch]
            out.append((len(part), b"\n".join(part)))


class _LogLimiter:
    """At most ``LOG_BURST_PER_S`` lines per kind per second: a flood of hostile connections
    must not turn into a flood of log lines."""

    def __init__(self) -> None:
        self.window: dict[str, tuple[float, int, int]] = {}

    def __call__(self, kind: str, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        start, count, suppressed = self.window.get(kind, (now, 0, 0))
        if now - start >= 1.0:
            if suppressed:
                log.log(level, "[tcp] %d more '%s' messages suppressed", suppressed, kind)
            start, count, suppressed = now, 0, 0
        if count < LOG_BURST_PER_S:
            log.log(level, msg, *args)
            count += 1
        else:
            suppressed += 1
        self.window[kind] = (start, count, suppressed)


def format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address or "unknown")


def peer_host(address: Any) -> str:
    """The address a per-peer cap counts: the IP, whatever the source port."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address or "unknown")


class _Connection(asyncio.BufferedProtocol):
    """One client. Reads land in the listener's shared buffer; the framer keeps the rest."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.host = ""
        self.refused = False
        self.last_line = 0.0
        self.pause_mark = 0.0
        s = listener.settings
        self.framer = LineFramer(
            s.tcp_max_line, s.tcp_max_buffer, s.tcp_batch_lines, self._discarded
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.listener.connected(self, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.read_view[: self.framer.room()]

    def buffer_updated(self, nbytes: int) -> None:
        listener = self.listener
        listener.stats.bytes += nbytes
        chunks = self.framer.feed(bytes(listener.read_view[:nbytes]))
        if chunks:
            listener.enqueue(self, chunks)

    def eof_received(self) -> bool:
        chunks = self.framer.finish()
        if chunks:
            self.listener.enqueue(self, chunks)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.lost(self, exc)

    def _discarded(self, reason: str, size: int) -> None:
        self.listener.discarded(self, reason, size)


class Listener:
    """The asyncio server, its bounded queue, the Redis writer and the idle sweeper."""

    def __init__(
        self, settings: Settings, redis_url: str, host: str = "127.0.0.1", port: int = 5140
    ) -> None:
        self.settings, self.redis_url, self.host, self.port = settings, redis_url, host, port
        self.stats = TcpStats(
            queue_cap_lines=settings.tcp_queue_lines, queue_cap_bytes=settings.tcp_queue_bytes
        )
        self.read_view = memoryview(bytearray(READ_SIZE))
        self.conns: set[_Connection] = set()
        self.per_host: dict[str, int] = {}
        self.instance = new_instance()
        self.stats.instance = self.instance
        self.paused = False
        self.paused_at = 0.0
        self.paused_total = 0.0
        self.stopping = False
        self.say = _LogLimiter()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._series = Every(settings.memory_series_interval)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, then start the writer, the idle sweeper and the stats publisher."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.queue = LineQueue(self.settings.tcp_queue_lines, self.settings.tcp_queue_bytes)
        self.client = async_client(client_kwargs(self.redis_url), self.redis_url)
        s = self.settings
        target = Target(
            keys.STREAM.key(s, "logs"),
            keys.STREAM_SEQ.key(s, "logs"),
            keys.TCP_BATCH.key(s, self.instance),
            s.max_logs,
            s.max_logs_bytes,
            keys.STREAM_BYTES.key(s, "logs"),
        )
        self.writer = BatchWriter(
            self.client,
            target,
            s.tcp_batch_lines,
            self.queue,
            self.stats,
            self._maybe_resume,
            pack_lines=s.tcp_pack_lines,
            pack_backlog=s.tcp_pack_backlog,
            wait=replicas.wait_args(s) if replicas.wanted(s) else None,
        )
        self.server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=BACKLOG, reuse_address=True
        )
        sock = self.server.sockets[0].getsockname()
        self.port = int(sock[1])
        self.stats.listening = format_peer((self.host, self.port))
        self.stats.state = "running"
        self._tasks = [
            loop.create_task(self.writer.run()),
            loop.create_task(self._sweep()),
            loop.create_task(self._publish_loop()),
        ]
        self._started = True
        log.info(
            "[tcp] listening on %s (max %d connections, %d per peer, line %d bytes, idle %gs)",
            self.stats.listening,
            s.tcp_max_connections,
            s.tcp_max_connections_per_peer,
            s.tcp_max_line,
            s.tcp_idle_timeout,
        )

    async def serve(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; return the exit code (0: every line read was written)."""
        try:
            await self.start()
        except OSError as exc:
            log.error("[tcp] cannot listen on %s: %s", format_peer((self.host, self.port)), exc)
            if hasattr(self, "client"):
                await self.client.aclose()
            return 2
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopped, self._tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        return await self.shutdown()

    async def shutdown(self) -> int:
        """Stop accepting, stop reading, half-close, flush what was read; bounded in time."""
        if not self._started:
            return 0
        deadline = self.loop.time() + self.settings.tcp_shutdown_s
        self.stopping = True
        self.stats.state = "stopping"
        self.server.close()
        log.info(
            "[tcp] stopping: %d open connections, %d lines queued",
            len(self.conns),
            self.queue.lines + self.writer.holding,
        )
        for conn in list(self.conns):
            assert conn.transport is not None
            conn.transport.pause_reading()
            if conn.transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    conn.transport.write_eof()
        self.writer.stop()
        code = 0
        try:
            await asyncio.wait_for(
                asyncio.shield(self._tasks[0]), max(0.1, deadline - self.loop.time() - 1.0)
            )
        except TimeoutError:
            self._tasks[0].cancel()
            lost = self.queue.lines + self.writer.holding
            log.error(
                "[tcp] shutdown: %d lines read but not written to Redis (%s)",
                lost,
                self.stats.last_write_error or "timeout",
            )
            code = 1
        except Exception:  # the writer died of a bug: say so, never hang or hide it
            log.exception(
                "[tcp] Redis writer failed; %d lines not written",
                self.queue.lines + self.writer.holding,
            )
            code = 1
        for conn in list(self.conns):
            assert conn.transport is not None
            conn.transport.abort()
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)
        self.stats.state = "stopped"
        remaining = deadline - self.loop.time() - 0.1
        if remaining > 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publish(self.settings.state_ttl), remaining)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.aclose(), max(0.05, remaining))
        log.info(
            "[tcp] stopped: %d lines received, %d written", self.stats.lines, self.stats.written
        )
        return code

    # --- connection events (called by _Connection) ------------------------------------------

    def connected(self, conn: _Connection, transport: asyncio.Transport) -> None:
        conn.transport = transport
        address = transport.get_extra_info("peername")
        conn.peer, conn.host = format_peer(address), peer_host(address)
        reason = self._refusal(conn.host)
        if reason:
            conn.refused = True
            self.stats.refused += 1
            self.stats.refused_by[reason] += 1
            s = self.settings
            self.say(
                "refused",
                logging.WARNING,
                "[tcp] refused %s (%s: open %d, limit %d; from this peer %d, limit %d)",
                conn.peer,
                reason,
                len(self.conns),
                s.tcp_max_connections,
                self.per_host.get(conn.host, 0),
                s.tcp_max_connections_per_peer,
            )
            transport.abort()
            return
        self.conns.add(conn)
        self.per_host[conn.host] = self.per_host.get(conn.host, 0) + 1
        self.stats.accepted += 1
        self.stats.open = len(self.conns)
        conn.last_line = self.loop.time()
        conn.pause_mark = self.paused_total
        if self.paused:
            transport.pause_reading()
        self.say(
            "connected", logging.INFO, "[tcp] connected %s (open %d)", conn.peer, len(self.conns)
        )

    def _refusal(self, host: str) -> str:
        """Why a new connection from ``host`` must be refused ("" when it may stay)."""
        if self.stopping:
            return "stopping"
        if len(self.conns) >= self.settings.tcp_max_connections:
            return "max_connections"
        if self.per_host.get(host, 0) >= self.settings.tcp_max_connections_per_peer:
            return "per_peer"
        return ""

    def enqueue(self, conn: _Connection, chunks: list[tuple[int, bytes]]) -> None:
        at = now_ms()
        for count, payload in chunks:
            self.queue.put(Chunk(conn.peer, at, count, payload))
            self.stats.lines += count
        conn.last_line = self.loop.time()
        conn.pause_mark = self.paused_total
        if not self.paused and self.queue.full():
            self._pause()

    def discarded(self, conn: _Connection, reason: str, size: int) -> None:
        self.stats.discarded[reason] += 1
        s = self.settings
        if reason == "too_long":
            self.say(
                reason,
                logging.WARNING,
                "[tcp] line over %d bytes from %s discarded",
                s.tcp_max_line,
                conn.peer,
            )
        elif reason == "buffer_overflow":
            self.say(
                reason,
                logging.WARNING,
                "[tcp] line over the %d-byte connection buffer from %s discarded",
                s.tcp_max_buffer,
                conn.peer,
            )
        elif reason == "invalid_utf8":
            self.say(
                reason,
                logging.WARNING,
                "[tcp] invalid UTF-8 line (%d bytes) from %s discarded",
                size,
                conn.peer,
            )
        else:
            self.say(
                reason,
                logging.INFO,
                "[tcp] unterminated line (%d bytes) from %s discarded at close",
                size,
                conn.peer,
            )

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn.refused or conn not in self.conns:
            return
        self.conns.discard(conn)
        left = self.per_host.get(conn.host, 0) - 1
        if left > 0:
            self.per_host[conn.host] = left
        else:
            self.per_host.pop(conn.host, None)
        partial = conn.framer.drop()
        if partial:
            self.discarded(conn, "incomplete", partial)
        self.stats.closed += 1
        self.stats.open = len(self.conns)
        how = f" ({type(exc).__name__})" if exc is not None else ""
        self.say(
            "closed", logging.INFO, "[tcp] closed %s%s (open %d)", conn.peer, how, len(self.conns)
        )

    # --- backpressure and idle connections ---------------------------------------------------

    def _pause(self) -> None:
        self.paused = True
        self.paused_at = self.loop.time()
        self.stats.pauses += 1
        for conn in self.conns:
            assert conn.transport is not None
            conn.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if not self.paused or self.stopping or not self.queue.resumable():
            return
        self.paused = False
        self.paused_total += self.loop.time() - self.paused_at
        for conn in self.conns:
            assert conn.transport is not None
            conn.transport.resume_reading()

    async def _sweep(self) -> None:
        """Close connections that sent no complete line for the idle timeout.

        Time spent paused by backpressure does not count against a connection.
        """
        timeout = self.settings.tcp_idle_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self.paused or self.stopping:
                continue
            now = self.loop.time()
            for conn in [
                c
                for c in self.conns
                if now - c.last_line - (self.paused_total - c.pause_mark) >= timeout
            ]:
                self.stats.idle_timeouts += 1
                self.say("idle", logging.INFO, "[tcp] idle timeout %s", conn.peer)
                assert conn.transport is not None
                conn.transport.close()

    # --- metrics ------------------------------------------------------------------------------

    async def _publish(self, ttl: int) -> None:
        self.stats.queue_lines = self.queue.lines + self.writer.holding
        self.stats.queue_bytes = self.queue.bytes
        self.stats.paused = self.paused
        await publish(self.client, keys.TCP_STATS.key(self.settings), self.stats, ttl)
        if self._series.due():
            await self._publish_point()

    async def _publish_point(self) -> None:
        """One point of the listener's memory series (USS; RSS where USS is unreadable)."""
        me = psutil.Process()
        try:
            mb = me.memory_full_info().uss / 1048576
        except (psutil.AccessDenied, AttributeError, NotImplementedError):
            mb = me.memory_info().rss / 1048576
        s = self.settings
        pipe = self.client.pipeline(transaction=False)
        point = {"t": round(time.time(), 1), "listener": round(mb, 2), "lines": self.stats.lines}
        key = keys.MEM_SERIES.key(s, "listener")
        queue_point(pipe, key, point, s.memory_series_points, s.state_ttl)
        await pipe.execute()

    async def _publish_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publish(RUNNING_TTL_S), 5)
            await asyncio.sleep(STATS_INTERVAL_S)


class BackgroundListener:
    """A listener on its own event loop in a thread: start on port 0, read ``port``, ``stop``."""

    def __init__(
        self, settings: Settings, redis_url: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.listener = Listener(settings, redis_url, host, port)
        self.exit_code: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-listener", daemon=True)

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def stats(self) -> TcpStats:
        return self.listener.stats

    def start(self, timeout: float = 15.0) -> int:
        self._thread.start()
        if not self._ready.wait(timeout) or self.exit_code is not None:
            raise RuntimeError(f"TCP listener did not start (exit code {self.exit_code})")
        return self.port

    def stop(self, timeout: float | None = None) -> int:
        """Graceful shutdown, as on SIGTERM; returns the exit code."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout or self.listener.settings.tcp_shutdown_s + 5)
        return -1 if self.exit_code is None else self.exit_code

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the listener's loop and return its result (for consistent reads)."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn())
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        return box[0] if box else None

    def _run(self) -> None:
        async def run() -> int:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.listener.start()
            except OSError as exc:
                log.error("[tcp] cannot listen: %s", exc)
                return 2
            finally:
                self._ready.set()
            await self._stop.wait()
            return await self.listener.shutdown()

        self.exit_code = asyncio.run(run())

    def __enter__(self) -> BackgroundListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _configure_logging() -> None:
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


async def _serve_until_signalled(listener: Listener) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await listener.serve(stop)


def main(rt: Runtime, host: str, port: int) -> int:
    """Run the listener until SIGTERM / SIGINT; 0 when every line read reached Redis."""
    _configure_logging()
    listener = Listener(rt.settings, resolve_url(rt.settings), host, port)
    return asyncio.run(_serve_until_signalled(listener))
