"""Redis Sentinel: one parser for ``sentinel://`` URLs, and clients that follow a failover.

Two URL forms are accepted (both documented in docs/running.md):

* ``sentinel://[user:password@]h1:26379,h2:26379,h3:26379/mymaster/0`` — every Sentinel in one
  URL, then the master's name and the database;
* kombu's ``sentinel://[:password@]h1:26379[/0];sentinel://h2:26379`` — one URL per Sentinel;
  the master's name comes from ``WATCHKEEPER_SENTINEL_MASTER`` (or ``?master_name=``).

``sentinels://`` is the TLS form (as ``rediss://`` is for ``redis://``): Sentinels and Redis
servers are both reached over TLS, verified with the rediss-style query options
(``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``). The password in the
user info (or ``?password=``) is the Redis servers' (``requirepass``); the Sentinels' own is
``?sentinel_password=`` or ``WATCHKEEPER_SENTINEL_PASSWORD`` — Sentinels usually have none, and
sending them the servers' password would fail their ``AUTH``.

``resolve`` folds those settings into the URL, so the one string ``REDIS_URL`` that
``watchkeeper run`` hands its children, Celery's broker and result backend, every watchkeeper
client and the TCP listener's asyncio client are all built from the same ``SentinelTarget``.

A client made here asks Sentinel for the primary whenever it connects, and reconnects — so asks
again — when a connection breaks, when the server it reaches says ``READONLY`` (it was demoted)
and when it says ``NOREPLICAS`` (``min-replicas-to-write``: a primary cut off from its replicas
refuses writes; after a failover Sentinel names another). Commands are retried through a
failover for ``WATCHKEEPER_FAILOVER_WAIT`` seconds.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

SCHEMES = ("sentinel", "sentinels")
DEFAULT_PORT = 26379
TLS_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
KNOWN_PARAMS = frozenset(
    {
        *TLS_PARAMS,
        "password",
        "username",
        "sentinel_password",
        "sentinel_username",
        "master_name",
        "db",
    }
)
BACKOFF_CAP_S = 1.0
NOREPLICAS = "NOREPLICAS"


class SentinelURLError(ValueError):
    """A ``sentinel://`` URL that cannot be used; the message says why (no secrets in it)."""


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES if "://" in url else False


@dataclass(frozen=True)
class SentinelTarget:
    """Everything a client needs to reach the current primary through Sentinel."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()

    # --- what each client is given ----------------------------------------------------------

    def ssl_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS keyword arguments (certificates verified unless told otherwise)."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {k: v for k, v in self.tls_options if k != "ssl_cert_reqs"}
        reqs = dict(self.tls_options).get("ssl_cert_reqs", "required").lower()
        options["ssl_cert_reqs"] = CERT_REQS.get(reqs.removeprefix("cert_"), ssl.CERT_REQUIRED)
        return options

    def sentinel_kwargs(self, timeout: float) -> dict[str, Any]:
        """How to talk to the Sentinels themselves: their own credentials, TLS, timeouts."""
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.tls:
            kwargs["ssl"] = True
            kwargs.update(self.ssl_kwargs())
        return kwargs

    def data_kwargs(self) -> dict[str, Any]:
        """How to talk to the Redis servers: database and their credentials."""
        kwargs: dict[str, Any] = {"db": self.db}
        if self.password:
            kwargs["password"] = self.password
        if self.username:
            kwargs["username"] = self.username
        return kwargs

    def kombu_url(self) -> str:
        """kombu's form for Celery's broker and result backend: one ``sentinel://`` per
        Sentinel, each carrying the servers' credentials and the database (kombu and Celery
        read them from the first)."""
        user = quote(self.username or "", safe="")
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        auth = f"{user}{secret}@" if user or secret else ""
        return ";".join(f"sentinel://{auth}{_host(h)}:{p}/{self.db}" for h, p in self.sentinels)

    def url(self) -> str:
        """This target as one complete URL (the first form), settings folded in."""
        scheme = "sentinels" if self.tls else "sentinel"
        user = quote(self.username or "", safe="")
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        auth = f"{user}{secret}@" if user or secret else ""
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
        query: list[tuple[str, str]] = list(self.tls_options)
        if self.sentinel_username:
            query.append(("sentinel_username", self.sentinel_username))
        if self.sentinel_password:
            query.append(("sentinel_password", self.sentinel_password))
        tail = f"?{urlencode(query)}" if query else ""
        return f"{scheme}://{auth}{hosts}/{quote(self.master, safe='')}/{self.db}{tail}"

    def describe(self) -> str:
        """For messages: the Sentinels and the master's name, no credentials."""
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
        return f"{'sentinels' if self.tls else 'sentinel'}://{hosts}/{self.master}/{self.db}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- parsing ----------------------------------------------------------------------------------


def parse(url: str, master: str = "", sentinel_password: str = "") -> SentinelTarget:
    """A ``SentinelTarget`` from either URL form; ``master`` and ``sentinel_password`` are the
    settings' values, used when the URL does not say. Raises ``SentinelURLError``."""
    parts = [p for p in re.split(r";\s*", url.strip()) if p]
    if not parts:
        raise SentinelURLError("empty Sentinel URL")
    schemes = {p.partition("://")[0].lower() for p in parts}
    if not schemes <= set(SCHEMES) or any("://" not in p for p in parts):
        raise SentinelURLError("every ';'-separated part must be a sentinel:// URL")
    if len(schemes) > 1:
        raise SentinelURLError("mixes sentinel:// and sentinels://")
    pieces = [_split(p.partition("://")[2]) for p in parts]
    hosts = tuple(h for piece in pieces for h in piece["hosts"])
    first = pieces[0]
    query: dict[str, str] = {}
    for piece in pieces:
        for key, value in piece["query"].items():
            query.setdefault(key, value)
    unknown = sorted(set(query) - KNOWN_PARAMS)
    if unknown:
        raise SentinelURLError(f"unknown option {unknown[0]!r}")
    url_master, db = _path(first["path"], query)
    named = {_path(p["path"], query)[1] for p in pieces if p["path"].strip("/")}
    if len(named) > 1:
        raise SentinelURLError("the ';'-separated URLs name different databases")
    db = named.pop() if named else db
    if url_master and query.get("master_name", url_master) != url_master:
        raise SentinelURLError("names two masters (in its path and master_name=)")
    name = url_master or query.get("master_name", "")
    if master and name and master != name:
        raise SentinelURLError(
            f"names master {name!r} but WATCHKEEPER_SENTINEL_MASTER is {master!r}"
        )
    name = name or master
    if not name:
        raise SentinelURLError(
            "no master name: add it to the URL (sentinel://h1:26379,h2:26379/mymaster/0) "
            "or set WATCHKEEPER_SENTINEL_MASTER"
        )
    return SentinelTarget(
        sentinels=hosts,
        master=name,
        db=db,
        username=first["username"] or query.get("username") or None,
        password=first["password"] or query.get("password") or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or sentinel_password or None,
        tls="sentinels" in schemes,
        tls_options=tuple((k, query[k]) for k in TLS_PARAMS if query.get(k)),
    )


def _split(rest: str) -> dict[str, Any]:
    """``[user:password@]host[:port][,host[:port]...][/path][?query]`` into its parts."""
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = ""
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user), unquote(secret)
    hosts = [_address(h) for h in hostlist.split(",") if h.strip()]
    if not hosts:
        raise SentinelURLError("no Sentinel address (host:port)")
    return {
        "hosts": hosts,
        "path": path if slash else "",
        "query": dict(parse_qsl(query, keep_blank_values=False)),
        "username": username,
        "password": password,
    }


def _address(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise SentinelURLError(f"bad Sentinel address {text!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SentinelURLError(f"bad port in Sentinel address {text!r}")
    return host, int(port_text)


def _path(path: str, query: dict[str, str]) -> tuple[str, int]:
    """(master, db) from the path: ``mymaster/0``, ``mymaster``, or kombu's ``0``."""
    segments = [unquote(s) for s in path.split("/") if s]
    if len(segments) > 2:
        raise SentinelURLError("path must be /master/db")
    if len(segments) == 1 and segments[0].isdigit():
        segments = ["", segments[0]]  # kombu's sentinel://host:port/db
    master = segments[0] if segments else ""
    raw_db = segments[1] if len(segments) == 2 else query.get("db", "0")
    if not raw_db.isdigit():
        raise SentinelURLError(f"database {raw_db!r} is not a number")
    return master, int(raw_db)


def resolve(url: str, master: str = "", sentinel_password: str = "") -> str:
    """The complete URL (settings folded in) for a Sentinel URL; any other URL unchanged."""
    if not is_sentinel(url):
        return url
    return parse(url, master, sentinel_password).url()


# --- clients ----------------------------------------------------------------------------------


class FollowingConnection(SentinelManagedConnection):
    """A connection to the primary that lets go of a server refusing writes for want of
    replicas (``NOREPLICAS``, from ``min-replicas-to-write``), as redis-py already does for
    ``READONLY``: it disconnects and raises ``ConnectionError``, so the retry asks Sentinel
    again and reaches the new primary once there is one. The command did not run, so it is
    safe to send again."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if self.connection_pool.is_master and str(exc).startswith(NOREPLICAS):
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis.ConnectionError(f"{exc} (asking Sentinel for the primary)") from None
            raise


class FollowingSSLConnection(FollowingConnection, SentinelManagedSSLConnection):
    pass


def failover_retry(seconds: float) -> Retry:
    """Retries spanning about ``seconds`` of back-off (0.1 s doubling to 1 s), so a command
    outlasts a failover instead of failing in its middle."""
    sleeps, count, step = 0.0, 0, 0.1
    while sleeps < seconds:
        sleeps += step
        count += 1
        step = min(BACKOFF_CAP_S, step * 2)
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=0.05), count)


def client(target: SentinelTarget, failover_wait: float, **options: Any) -> redis.Redis:
    """A redis-py client of the current primary; ``options`` as for ``redis.Redis``."""
    timeout = float(options.get("socket_connect_timeout") or 5)
    options.setdefault("retry", failover_retry(failover_wait))
    connection_class = FollowingSSLConnection if target.tls else FollowingConnection
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(timeout))
    kwargs = {**target.data_kwargs(), **target.ssl_kwargs(), **options}
    primary: redis.Redis = manager.master_for(
        target.master,
        redis_class=redis.Redis,
        connection_pool_class=SentinelConnectionPool,
        connection_class=connection_class,
        **kwargs,
    )
    return primary


def async_client(target: SentinelTarget, **options: Any) -> Any:
    """An asyncio client of the current primary (the TCP listener's writer: it owns its
    retries, and every connection it makes asks Sentinel for the primary first)."""
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    timeout = float(options.get("socket_connect_timeout") or 5)
    manager = AsyncSentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(timeout))
    kwargs = {**target.data_kwargs(), **options}
    if target.tls:
        kwargs.update(ssl=True, **target.ssl_kwargs())
    return manager.master_for(target.master, **kwargs)


def sentinel_clients(target: SentinelTarget, timeout: float) -> list[tuple[str, redis.Redis]]:
    """One plain client per Sentinel (for status: which answer, what they say)."""
    kwargs = target.sentinel_kwargs(timeout)
    kwargs["decode_responses"] = True
    kwargs["retry"] = Retry(ExponentialBackoff(), 0)
    return [(f"{_host(h)}:{p}", redis.Redis(host=h, port=p, **kwargs)) for h, p in target.sentinels]
