"""Sending one message to one Apprise URL, with an outcome the retry policy can act on.

Apprise does the sending for every service. Its plugins report success as a boolean and keep
the HTTP response to themselves, so for ``json://`` / ``jsons://`` — the webhook case, and the
one where a receiver's ``429``/``503`` ``Retry-After`` matters most — this module makes the
request itself from the plugin Apprise parsed (same URL syntax, same payload, plus an
``idempotency_key`` field and an ``Idempotency-Key`` header) and returns the status and
``Retry-After``. Every other service goes through ``Apprise.notify``.

Secrets: nothing here logs or returns a URL. Apprise's own logger quotes URLs when it rejects
one, so it is kept out of the process's log handlers; error texts come from Apprise's captured
messages with every part of the URL that Apprise itself would mask replaced by ``***``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import apprise
import requests

from workers.core.redact import redact_text
from workers.core.version import VERSION
from workers.polling.retry_after import parse_retry_after

logging.getLogger("apprise").propagate = False  # it quotes rejected URLs, secrets included
logging.getLogger("apprise").addHandler(logging.NullHandler())

TRUNCATED = "\n…[truncated]"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
JSON_PROTOCOLS = ("json", "jsons")
MAX_ERROR = 300
_NOTIFY_TAKES_TIMEOUT = "timeout" in inspect.signature(apprise.Apprise.notify).parameters


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
    """Apprise's parsed plugin for a URL, or None when Apprise cannot load it."""
    return apprise.Apprise.instantiate(url)


def url_problem(url: str, secret_allowed: bool) -> str | None:
    """Why ``url`` cannot be a destination; never quotes the URL (only its scheme)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        return "not an Apprise URL (scheme://...)"
    plugin = plugin_for(url)
    if plugin is None:
        return f"not a valid Apprise URL for {scheme}://"
    if not secret_allowed and plugin.url(privacy=True) != plugin.url(privacy=False):
        return (
            f"this {scheme}:// URL holds a secret: put it in an environment variable and "
            "write 'env:NAME'"
        )
    return None


def describe(url: str, secret_allowed: bool) -> str:
    """A label safe to show: the service's name, and for a secret-free URL its host part."""
    plugin = plugin_for(url)
    if plugin is None:
        return url.split("://", 1)[0]
    service = str(getattr(plugin, "service_name", "") or url.split("://", 1)[0])
    if secret_allowed:
        return service
    shown = str(plugin.url(privacy=True)).split("?", 1)[0]
    return f"{service} {shown}"


def secrets_of(url: str, plugin: Any) -> tuple[str, ...]:
    """Parts of ``url`` that Apprise masks in its privacy form: they must not be shown."""
    tokens = set(re.split(r"[/:@?&=#,+]", url))
    public = set(re.split(r"[/:@?&=#,+]", str(plugin.url(privacy=True)))) if plugin else set()
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


def send(
    url: str,
    message: Message,
    timeout: float,
    max_chars: int,
    session: requests.Session | None = None,
    plugin: Any = None,
) -> SendResult:
    """Send ``message`` to ``url`` once; never raises. ``plugin``: Apprise's parse of ``url``,
    when the caller sends many messages to it."""
    if plugin is None:
        try:
            plugin = plugin_for(url)
        except Exception:  # Apprise parsing is third-party code: any failure is this URL's
            plugin = None
    if plugin is None:
        return SendResult(False, retryable=False, error="not a valid Apprise URL")
    try:
        if plugin.protocol in JSON_PROTOCOLS or plugin.secure_protocol in JSON_PROTOCOLS:
            return _send_json(plugin, message, timeout, max_chars, session)
        return _send_apprise(url, plugin, message, timeout, max_chars)
    except Exception as exc:  # a plugin's bug must not stop the destination's queue
        text = redact_text(f"{type(exc).__name__}: {exc}", secrets_of(url, plugin))
        return SendResult(False, error=text[:MAX_ERROR])


def _send_json(
    plugin: Any,
    message: Message,
    timeout: float,
    max_chars: int,
    session: requests.Session | None,
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
        )
    except requests.Timeout:
        return SendResult(False, error=f"timed out after {timeout:g}s", truncated=cut)
    except requests.ConnectionError as exc:
        reason = "connection closed" if "Remote" in str(exc) or "reset" in str(exc) else ""
        return SendResult(False, error=reason or "connection failed", truncated=cut)
    with response:
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


def _send_apprise(
    url: str, plugin: Any, message: Message, timeout: float, max_chars: int
) -> SendResult:
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    title_max, body_max = limits(plugin, max_chars)
    title, body, cut = fit(message, title_max, body_max, f"\n\n— {message.key}")
    sender = apprise.Apprise()
    sender.add(plugin)
    # Apprise's call deadline covers the connection, the send and the plugin's own pause
    # between messages to one service (its rate limit, honoured: the plugin is reused per run).
    pause = float(getattr(plugin, "request_rate_per_sec", 0) or 0)
    kwargs: dict[str, Any] = {"timeout": timeout * 3 + pause} if _NOTIFY_TAKES_TIMEOUT else {}
    result = sender.notify(body=body, title=title, **kwargs)
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
