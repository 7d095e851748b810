"""Sending one message to one Apprise URL, with an outcome the retry policy can act on.

Apprise does the sending for every service. Its plugins report success as a boolean and keep
the HTTP response to themselves, so for ``json://`` / ``jsons://`` — the webhook case, and the
one where a receiver's ``429``/``503`` ``Retry-After`` matters most — this module makes the
request itself from the plugin Apprise parsed (same URL syntax, same payload, plus an
``idempotency_key`` field and an ``Idempotency-Key`` header) and returns the status and
``Retry-After``. Every other service goes through ``Apprise.notify``.

Hostile receivers. Every send runs inside a ``workers.core.exchange.Exchange``:

* **a wall-clock deadline for the whole send** — connect, request, headers and body —
  of WATCHKEEPER_NOTIFY_TIMEOUT (plus, for an Apprise plugin, its own pacing pause between two
  messages to one service). A receiver answering one byte per second is cut at the deadline,
  whatever the per-read timeouts, for Apprise's plugins too (SMTP included): the exchange shuts
  their sockets down. Apprise runs the plugin in this thread (``ASSET``: no deadline of its
  own, so nothing is left running in its thread pool). A send cut by the deadline is
  "timed out after Ns": retried with backoff like any failure;
* **at most WATCHKEEPER_NOTIFY_MAX_REPLY_BYTES of a reply read** — here by streaming the
  answer and stopping there, for Apprise's HTTP plugins (``requests``) by the exchange's cap on
  every response built while it runs. Not bounded in bytes: a non-HTTP plugin's replies (SMTP
  reply lines are read whole by ``smtplib``; the deadline bounds how long it reads);
* **text is text**: Apprise is told the body is plain text (``body_format``), so it escapes it
  for a service that renders HTML or Markdown (e-mail goes out as ``text/plain``), and mass
  mentions (``@everyone``, ``@here``, ``<!channel>``, ``@all``, ``@room``…) are broken with an
  invisible zero-width space for the chat services that have them. A JSON webhook is a program:
  it gets the text unchanged.

Secrets: nothing here logs or returns a URL. Apprise's own logger quotes URLs when it rejects
one, so it is kept out of the process's log handlers; error texts come from Apprise's captured
messages with every part of the URL but its scheme, host and port replaced by ``***``. A label
(``describe``) is the service's name and, where Apprise does not mask it, the host: never a
path, a query or a user.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
import requests

from workers.core.exchange import Exchange
from workers.core.exchange import current as current_exchange
from workers.core.redact import SECRET_PARAMS, redact_text
from workers.core.version import VERSION
from workers.polling.retry_after import parse_retry_after

logging.getLogger("apprise").propagate = False  # it quotes rejected URLs, secrets included
logging.getLogger("apprise").addHandler(logging.NullHandler())
_REQUEST_LINE = re.compile(r'"([A-Z]+) \S+ (HTTP/[0-9.]+)"')


class _HidePaths(logging.Filter):
    """urllib3 logs each request line at DEBUG, path included — and a webhook's path can be
    its token (``json://host/hook/SECRET``): during a send, the path is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if current_exchange() is not None:
            record.msg = _REQUEST_LINE.sub(r'"\1 *** \2"', record.getMessage())
            record.args = None
        return True


if not any(isinstance(f, _HidePaths) for f in logging.getLogger("urllib3.connectionpool").filters):
    logging.getLogger("urllib3.connectionpool").addFilter(_HidePaths())

TRUNCATED = "\n…[truncated]"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
JSON_PROTOCOLS = ("json", "jsons")
MAX_ERROR = 300
REPLY_CAP = 16384
"""Bytes of a reply read when the caller gives no cap (WATCHKEEPER_NOTIFY_MAX_REPLY_BYTES)."""
ASSET = apprise.AppriseAsset(service_timeout=0, async_mode=False)
"""Apprise runs each plugin in the calling thread, with no deadline of its own: the exchange's
deadline bounds it, and nothing is left running in Apprise's thread pool after a timeout."""

MENTION_SERVICES = frozenset(
    {
        "discord",
        "slack",
        "mmost",
        "mmosts",
        "rocket",
        "rockets",
        "tgram",
        "msteams",
        "zulip",
        "matrix",
        "matrixs",
        "gchat",
        "guilded",
        "revolt",
        "ryver",
        "flock",
        "twist",
        "mastodon",
        "toot",
        "toots",
        "misskey",
        "misskeys",
        "bluesky",
    }
)
"""Services (Apprise schemes) whose messages can mention people: their text is neutralised."""
_MENTION = re.compile(r"@(?=[^\s@])|<(?=[!@#]|users/)")
_CREDENTIAL_VALUE = re.compile(r"^\s*(bearer|basic|token|digest|apikey)\b", re.I)
_MODE_WORDS = frozenset({"basic", "token", "bearer", "digest", "none"})


@dataclass(frozen=True)
class Message:
    """One notification: what it says and the key a receiver can deduplicate on."""

    title: str
    body: str
    key: str


@dataclass(frozen=True)
class SendResult:
    ok: bool
    retryable: bool = True
    error: str = ""
    status: int | None = None
    retry_after: float | None = None
    truncated: bool = False


def plugin_for(url: str) -> Any:
    """Apprise's parsed plugin for a URL (run in the calling thread), or None when Apprise
    cannot load it."""
    return apprise.Apprise.instantiate(url, asset=ASSET)


def split_urls(value: str) -> list[str]:
    """The URLs in one value: Apprise's convention for a list, whitespace and/or commas."""
    return [part for part in re.split(r"[\s,]+", value) if part]


def url_problem(url: str, secret_allowed: bool) -> str | None:
    """Why ``url`` cannot be a destination; never quotes the URL (only its scheme, and the
    name of a header or parameter that holds a secret)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        return "not an Apprise URL (scheme://...)"
    plugin = plugin_for(url)
    if plugin is None:
        return f"not a valid Apprise URL for {scheme}://"
    if secret_allowed:
        return None
    what = written_secret(url, plugin)
    if what:
        return (
            f"this {scheme}:// URL holds a secret ({what}): put it in an environment variable "
            "and write 'env:NAME'"
        )
    return None


def written_secret(url: str, plugin: Any) -> str | None:
    """What in ``url`` is a secret, by name (None: nothing): what Apprise masks in its privacy
    form (passwords, tokens), and headers (``+Name``), payload fields (``:name``) and query
    parameters (``-name`` or plain) named like a token, key, password or signature, or whose
    value is a credential (``Bearer …``)."""
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        name = key.lstrip("+-:")
        kind = {"+": "header", ":": "payload field", "-": "parameter"}.get(key[:1], "parameter")
        if name.lower() == "auth" and value.lower() in _MODE_WORDS:
            continue  # an authentication mode (ntfy's ?auth=basic), not a credential
        if SECRET_PARAMS.search(name) or _CREDENTIAL_VALUE.match(value):
            return f"the {kind} {key!r}"
    if plugin.url(privacy=True) != plugin.url(privacy=False):
        return "a password or token"
    return None


def describe(url: str, secret_allowed: bool = True) -> str:
    """A label safe to show: the service's name and, where Apprise does not mask it, the host
    (with its port) — never a path, a query or a user."""
    plugin = plugin_for(url)
    if plugin is None:
        return url.split("://", 1)[0]
    return service_host(plugin, url)


def service_host(plugin: Any, url: str = "") -> str:
    service = str(getattr(plugin, "service_name", "") or url.split("://", 1)[0])
    host = str(getattr(plugin, "host", "") or "")
    try:
        public = urlsplit(str(plugin.url(privacy=True))).hostname or ""
    except ValueError:
        public = ""
    if not host or "..." in public or host.lower() != public.lower():
        return service  # the "host" is a token Apprise masks (Slack, Discord, Telegram…)
    port = getattr(plugin, "port", None)
    return f"{service} {host}:{port}" if isinstance(port, int) else f"{service} {host}"


def secrets_of(url: str, plugin: Any = None) -> tuple[str, ...]:
    """Every part of ``url`` but its scheme, host and port — user, password, path, query — to
    mask in an error text (a path can be the token: ``json://host/hook/SECRET``)."""
    try:
        parts = urlsplit(url)
        public = {parts.scheme, parts.hostname or "", str(parts.port or "")}
    except ValueError:
        public = set()
    separators = r"[/:@?&=#,+\s]"
    tokens = set(re.split(separators, url)) | set(re.split(separators, unquote(url)))
    return tuple(sorted((t for t in tokens - public if len(t) >= 3), key=len, reverse=True))


def limits(plugin: Any, max_chars: int) -> tuple[int, int]:
    """(title, body) character limits: the service's own, and never above ``max_chars``."""
    body_max = int(getattr(plugin, "body_maxlen", 0) or 0)
    title_max = int(getattr(plugin, "title_maxlen", 0) or 0)
    body = min(max_chars, body_max) if body_max > 0 else max_chars
    return (title_max if title_max > 0 else 0), body


def fit(message: Message, title_max: int, body_max: int, footer: str) -> tuple[str, str, bool]:
    """Title and body cut to the limits (``title_max`` 0: the service has no title)."""
    title, body, cut = message.title, message.body, False
    if title_max and len(title) > title_max:
        title, cut = title[: title_max - 1].rstrip() + "…", True
    room = body_max - len(footer)
    if len(body) > room:
        body, cut = body[: max(0, room - len(TRUNCATED))].rstrip() + TRUNCATED, True
    return title, body + footer, cut


def neutralise(text: str) -> str:
    """Mentions made inert: a zero-width space after ``@`` (``@everyone``, ``@here``, ``@all``,
    ``@channel``, ``@room``, ``<@123>``) and after ``<`` opening ``<!channel>``, ``<#…>`` or
    ``<users/all>`` — the text reads the same, no service sees a mention."""
    return _MENTION.sub(lambda m: m.group(0) + "\u200b", text)


def mentions(plugin: Any) -> bool:
    """Whether the service can mention people (so its text is neutralised)."""
    schemes = set()
    for attr in ("protocol", "secure_protocol"):
        value = getattr(plugin, attr, None)
        schemes.update([value] if isinstance(value, str) else list(value or ()))
    return bool(schemes & MENTION_SERVICES)


def pause_of(plugin: Any) -> float:
    """Seconds Apprise may wait before a request, pacing messages to one service."""
    return float(getattr(plugin, "request_rate_per_sec", 0) or 0)


def send(
    url: str,
    message: Message,
    timeout: float,
    max_chars: int,
    session: requests.Session | None = None,
    plugin: Any = None,
    *,
    reply_cap: int = REPLY_CAP,
    exchange: Exchange | None = None,
) -> SendResult:
    """Send ``message`` to ``url`` once, within ``timeout`` seconds in all; never raises.

    ``plugin``: Apprise's parse of ``url``, and ``exchange``: the sockets of earlier sends, when
    the caller sends many messages to it (a destination's run, with ``session``)."""
    if plugin is None:
        try:
            plugin = plugin_for(url)
        except Exception:  # Apprise parsing is third-party code: any failure is this URL's
            plugin = None
    if plugin is None:
        return SendResult(False, retryable=False, error="not a valid Apprise URL")
    exchange = exchange or Exchange(reply_cap)
    exchange.reply_cap = reply_cap
    is_json = plugin.protocol in JSON_PROTOCOLS or plugin.secure_protocol in JSON_PROTOCOLS
    try:
        with exchange.within(timeout + (0.0 if is_json else pause_of(plugin))):
            if is_json:
                result = _send_json(plugin, message, timeout, max_chars, session, reply_cap)
            else:
                result = _send_apprise(url, plugin, message, timeout, max_chars)
    except Exception as exc:  # a plugin's bug must not stop the destination's queue
        text = redact_text(f"{type(exc).__name__}: {exc}", secrets_of(url, plugin))
        result = SendResult(False, error=text[:MAX_ERROR])
    if exchange.expired and not result.ok:
        return SendResult(False, error=f"timed out after {timeout:g}s", truncated=result.truncated)
    return result


def _send_json(
    plugin: Any,
    message: Message,
    timeout: float,
    max_chars: int,
    session: requests.Session | None,
    reply_cap: int,
) -> SendResult:
    title_max, body_max = limits(plugin, max_chars)
    title, body, cut = fit(message, title_max, body_max, "")
    payload: dict[str, Any] = {
        "version": "1.0",
        "title": title,
        "message": body,
        "attachments": [],
        "type": "info",
    }
    for key, value in plugin.payload_extras.items():  # Apprise's ":key=value" remapping
        if key in payload:
            moved = payload.pop(key)
            if value:
                payload[value] = moved
        else:
            payload[key] = value
    payload["idempotency_key"] = message.key
    headers = {
        "User-Agent": f"watchkeeper/{VERSION}",
        "Content-Type": "application/json",
        **plugin.headers,
        "Idempotency-Key": message.key,
    }
    scheme = "https" if plugin.secure else "http"
    port = f":{plugin.port}" if isinstance(plugin.port, int) else ""
    target = f"{scheme}://{plugin.host}{port}{plugin.fullpath}"
    auth = (plugin.user, plugin.password or "") if plugin.user else None
    http = session or requests
    try:
        response = http.request(
            plugin.method,
            target,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            params=plugin.params,
            headers=headers,
            auth=auth,
            verify=plugin.verify_certificate,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,  # the reply is read below, up to the cap
        )
        with response:
            read_reply(response, reply_cap)
    except requests.Timeout:
        return SendResult(False, error=f"timed out after {timeout:g}s", truncated=cut)
    except requests.RequestException as exc:
        gone = any(w in str(exc) for w in ("Remote", "reset", "broken", "IncompleteRead"))
        return SendResult(False, error="connection closed" if gone else "connection failed")
    status = response.status_code
    if 200 <= status < 300:
        return SendResult(True, status=status, truncated=cut)
    retry_after = (
        parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
    )
    return SendResult(
        False,
        retryable=status in RETRYABLE_STATUS,
        error=f"HTTP {status}",
        status=status,
        retry_after=retry_after,
        truncated=cut,
    )


def read_reply(response: requests.Response, cap: int) -> int:
    """Read at most ``cap`` bytes of the reply (all of a short one, so the connection can be
    reused; beyond the cap it is closed by ``with response``, not drained). Returns the bytes
    read."""
    read = 0
    for chunk in response.iter_content(chunk_size=min(cap, 4096) or 1):
        read += len(chunk)
        if read >= cap:
            break
    return read


def _send_apprise(
    url: str, plugin: Any, message: Message, timeout: float, max_chars: int
) -> SendResult:
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    title_max, body_max = limits(plugin, max_chars)
    title, body, cut = fit(message, title_max, body_max, f"\n\n— {message.key}")
    if mentions(plugin):
        title, body = neutralise(title), neutralise(body)
    sender = apprise.Apprise(asset=ASSET)
    sender.add(plugin)
    result = sender.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
    if bool(result):
        return SendResult(True, truncated=cut)
    return SendResult(False, error=_failure_text(result, url, plugin), truncated=cut)


def _failure_text(result: Any, url: str, plugin: Any) -> str:
    """What Apprise said about the failure, secrets masked (Apprise 2 keeps per-attempt logs)."""
    lines: list[str] = []
    for service in getattr(result, "results", None) or ():
        for attempt in getattr(service, "attempts", None) or ():
            lines += [str(getattr(e, "message", e)) for e in getattr(attempt, "logs", ())]
    status = getattr(getattr(result, "status", None), "name", "FAILURE")
    text = f"{plugin.service_name}: {status.lower()}" + (f": {lines[-1]}" if lines else "")
    return redact_text(text, secrets_of(url, plugin))[:MAX_ERROR]
