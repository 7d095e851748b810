"""The one HTTP fetch layer shared by feeds, log endpoints and site scraping.

A fetch never hangs and never holds an unbounded body: connect and read timeouts bound each
socket operation, ``http_read_timeout`` also bounds the whole body read (a server trickling a
byte a second forever is cut off), and the byte cap applies to the *decompressed* body while it
streams in — a gzip bomb is stopped at the cap, never inflated whole. Wall-clock deadlines bound
what per-read timeouts cannot (a status line or headers trickled a byte at a time): each hop —
connect, status line, headers, body — within ``request_deadline_s`` (the host slot's lease
without its slack), and the whole fetch, hops and slot waits included, within
``http_deadline``. They are ``workers.core.exchange`` deadlines: at the deadline the request's
sockets are shut down, which wakes a read blocked in any phase. Redirects are followed by
hand so a loop or a long chain is a clear error, and each hop takes the host's politeness slot
(``workers.polling.politeness.host_slot``) when a Redis client is given, so every worker shares one
per-host limit — the target host's slot, whatever proxy the request goes through.

A source's request profile (``workers.polling.profile.Resolved``: headers, credentials only to
the source's own host, proxy, TLS verification) applies to every hop; any message a failure
produces has the profile's secrets masked before it leaves this module.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import redis
import requests
from requests.adapters import HTTPAdapter

from workers.core.exchange import Exchange
from workers.core.redact import redact_library_logs
from workers.core.settings import Settings
from workers.core.version import VERSION as __version__
from workers.polling.errors import FetchError, HostBusy
from workers.polling.politeness import host_slot
from workers.polling.profile import NO_PROFILE, Resolved
from workers.polling.retry_after import parse_retry_after

USER_AGENT = f"watchkeeper/{__version__} (+https://github.com/watchkeeper)"
READ_SIZE = 64 * 1024
"""Bytes read from the socket per step of a streamed body."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})

redact_library_logs(  # request lines carry query-string tokens, proxy URLs their credentials
    "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.connection", "urllib3.util.retry"
)


@dataclass(frozen=True)
class FetchResult:
    url: str
    status: int
    body: bytes
    headers: dict[str, str]
    not_modified: bool
    elapsed_s: float


_session: requests.Session | None = None
_session_pid = -1


def get_session() -> requests.Session:
    """This process's Session (connection reuse), re-created in a forked child.

    Cookies are refused: a cookie jar shared by every source would be state that grows between
    tasks.
    """
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        session = requests.Session()
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"})
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        _environment_once(session)
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _session, _session_pid = session, os.getpid()
    return _session


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _environment_once(session: requests.Session) -> None:
    """Read what requests would take from the environment once, not on every request.

    With ``trust_env`` requests scans the whole environment for proxies twice per request and
    looks for a netrc file (about a third of a small fetch's CPU). Without proxy variables or
    a netrc file there is nothing to find but the CA bundle, which is set here once; with any
    of them requests keeps reading the environment itself, so ``no_proxy`` and netrc
    credentials work exactly as before.
    """
    names = {name.lower() for name in os.environ}
    netrc = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if names & set(PROXY_VARIABLES) or os.path.exists(netrc):
        return
    if os.path.exists(os.path.expanduser("~/_netrc")):
        return
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


def fetch(
    url: str,
    settings: Settings,
    redis: redis.Redis | None = None,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int | None = None,
    accept: str | None = None,
    profile: Resolved = NO_PROFILE,
) -> FetchResult:
    """GET ``url`` within every bound; a 2xx or 304 is a result, anything else ``FetchError``.

    ``etag``/``last_modified`` make it conditional (a 304 is a result with ``not_modified``);
    ``profile`` is the source's request profile, resolved for this poll.
    """
    try:
        return _fetch(url, settings, redis, etag, last_modified, max_bytes, accept, profile)
    except FetchError as exc:
        if not profile.secrets:
            raise
        raise FetchError(profile.redact(str(exc)), exc.status, exc.retry_after) from None


def _fetch(
    url: str,
    settings: Settings,
    redis: redis.Redis | None,
    etag: str | None,
    last_modified: str | None,
    max_bytes: int | None,
    accept: str | None,
    profile: Resolved,
) -> FetchResult:
    started = time.monotonic()
    headers: dict[str, str] = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if accept:
        headers["Accept"] = accept
    cap = settings.http_max_bytes if max_bytes is None else max_bytes
    deadline = started + settings.fetch_deadline
    visited = {url}
    current = url
    for _hop in range(settings.http_max_redirects + 1):
        host = host_of(current)
        hop = {**headers, **profile.headers_for(current)} if profile is not NO_PROFILE else headers
        if redis is not None:
            try:
                with host_slot(redis, settings, host):
                    outcome = _get_once(current, settings, hop, cap, profile, deadline)
            except HostBusy as exc:
                raise FetchError(f"{current}: {exc}") from None
        else:
            outcome = _get_once(current, settings, hop, cap, profile, deadline)
        if isinstance(outcome, FetchResult):
            return FetchResult(
                outcome.url,
                outcome.status,
                outcome.body,
                outcome.headers,
                outcome.not_modified,
                time.monotonic() - started,
            )
        current = outcome
        if current in visited:
            raise FetchError(f"{url}: redirect loop at {current}")
        visited.add(current)
    raise FetchError(f"{url}: more than {settings.http_max_redirects} redirects")


def host_of(url: str) -> str:
    """``host[:port]`` without user info: politeness keys never carry a credential."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def request_deadline_s(settings: Settings) -> float:
    """Longest one request may take, wall clock: connect, then the status line and headers
    within a read timeout, then the body within another."""
    return settings.http_connect_timeout + 2 * settings.http_read_timeout


def _get_once(
    url: str,
    settings: Settings,
    headers: dict[str, str],
    cap: int,
    profile: Resolved,
    deadline: float,
) -> FetchResult | str:
    """One request within its own deadline and the fetch's (``deadline``, monotonic)."""
    left = deadline - time.monotonic()
    seconds = min(request_deadline_s(settings), left)
    late = (
        f"{url}: fetch not complete within {settings.fetch_deadline:g}s (WATCHKEEPER_HTTP_DEADLINE)"
        if seconds == left
        else f"{url}: response not complete within {seconds:g}s"
    )
    if seconds <= 0:
        raise FetchError(late)
    exchange = Exchange()
    with exchange.within(seconds):
        try:
            outcome = _request(url, settings, headers, cap, profile)
            if exchange.expired:  # a body cut by the shutdown can read as one that ended
                raise FetchError(late)
        except Exception:
            if exchange.expired:
                raise FetchError(late) from None
            raise
    return outcome


def _request(
    url: str, settings: Settings, headers: dict[str, str], cap: int, profile: Resolved
) -> FetchResult | str:
    """One request: a result, or the absolute URL a redirect points to."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{url}: not an http(s) URL")
    try:
        response = get_session().get(
            url,
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=(settings.http_connect_timeout, settings.http_read_timeout),
            proxies=profile.proxies,
            verify=profile.verify,
        )
    except requests.exceptions.ConnectTimeout:
        raise FetchError(
            f"{url}: connect timed out after {settings.http_connect_timeout:g}s"
        ) from None
    except requests.exceptions.ReadTimeout:
        raise FetchError(f"{url}: no response within {settings.http_read_timeout:g}s") from None
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"{url}: {_first_line(exc)}") from None
    with response:
        status = response.status_code
        lower = {k.lower(): v for k, v in response.headers.items()}
        if status in REDIRECTS:
            location = lower.get("location")
            if not location:
                raise FetchError(f"{url}: HTTP {status} redirect without Location", status)
            return urljoin(url, location)
        if status == 304:
            return FetchResult(url, status, b"", lower, True, 0.0)
        if not 200 <= status < 300:
            retry_after = (
                parse_retry_after(lower.get("retry-after")) if status in (429, 503) else None
            )
            reason = f" {response.reason}" if response.reason else ""
            wait = f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""
            raise FetchError(f"{url}: HTTP {status}{reason}{wait}", status, retry_after)
        body = _read_body(url, response, lower, settings.http_read_timeout, cap)
        return FetchResult(url, status, body, lower, False, 0.0)


def _read_body(
    url: str, response: requests.Response, headers: dict[str, str], deadline_s: float, cap: int
) -> bytes:
    """Stream the body, decompressing as it arrives, within ``deadline_s`` and ``cap`` bytes."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    decoder = _Decoder(url, encoding, cap)
    if (
        encoding == "identity"
        and (length := headers.get("content-length", "")).isdigit()
        and (int(length) > cap)
    ):
        raise FetchError(f"{url}: body of {int(length)} bytes exceeds the cap of {cap} bytes")
    deadline = time.monotonic() + deadline_s
    raw = response.raw
    try:
        while True:
            chunk = raw.read1(READ_SIZE, decode_content=False)
            if not chunk:
                break
            decoder.feed(chunk)
            if time.monotonic() > deadline:
                raise FetchError(
                    f"{url}: body not complete within {deadline_s:g}s ({decoder.size} bytes read)"
                )
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"{url}: {_first_line(exc)}") from None
    except OSError as exc:  # socket timeouts and resets surface from urllib3 as OSError
        raise FetchError(f"{url}: body read failed: {_first_line(exc)}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("urllib3"):
            raise FetchError(f"{url}: body read failed: {_first_line(exc)}") from None
        raise
    return decoder.finish()


class _Decoder:
    """Identity, gzip or deflate, output capped: at most ``cap + 1`` bytes ever inflated."""

    def __init__(self, url: str, encoding: str, cap: int) -> None:
        self.url, self.encoding, self.cap = url, encoding, cap
        self.parts: list[bytes] = []
        self.size = 0
        self._z: zlib._Decompress | None = None
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = None  # zlib-wrapped or raw, decided by the first bytes
        elif encoding != "identity":
            raise FetchError(f"{url}: unsupported Content-Encoding {encoding!r}")

    def feed(self, data: bytes) -> None:
        if self.encoding == "identity":
            self._keep(data)
            return
        if self._z is None:
            zlib_header = (
                len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8 | data[1]) % 31 == 0)
            )
            self._z = zlib.decompressobj(-zlib.MAX_WBITS if not zlib_header else zlib.MAX_WBITS)
        try:
            while data:
                out = self._z.decompress(data, self.cap - self.size + 1)
                self._keep(out)
                data = self._z.unconsumed_tail
                if self._z.eof and self._z.unused_data and self.encoding != "deflate":
                    data = self._z.unused_data  # a further gzip member
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise FetchError(f"{self.url}: corrupt {self.encoding} body: {exc}") from None

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise FetchError(
                f"{self.url}: body exceeds the cap of {self.cap} bytes"
                + ("" if self.encoding == "identity" else " after decompression")
            )
        if data:
            self.parts.append(data)

    def finish(self) -> bytes:
        if self._z is not None:
            try:
                self._keep(self._z.flush(self.cap - self.size + 1))
            except zlib.error as exc:
                raise FetchError(f"{self.url}: corrupt {self.encoding} body: {exc}") from None
        return b"".join(self.parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
