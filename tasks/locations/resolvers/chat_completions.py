"""The chat-completions resolver (Moonshot/Kimi or any OpenAI-compatible API): one call per batch.

``POST {MOONSHOT_BASE_URL}/chat/completions`` with the model MOONSHOT_MODEL and JSON-object
response mode; the reply's message content must be ``{"locations": {"<alert id>": {...} |
null}}``. The answer is checked, not trusted: ids we did not send are ignored, ids we sent but
did not get back are ``missing``, items that are not a well-formed place are ``malformed`` —
``process_batch`` retries those alone, then falls back to the gazetteer.

Errors become a ``ResolverError`` with a fixed reason word: ``rate_limited`` (429, with the
Retry-After delay), ``http_5xx``, ``timeout``, ``connection`` and ``malformed_response`` are
retryable; ``auth_failed`` (401/403) and ``rejected`` (other 4xx) are not. The API key is sent
only in the Authorization header and scrubbed from every message this module builds, so it
never reaches a log line, a stored error or ``status``. Bodies are read with a byte cap and an
overall deadline: a server that trickles bytes cannot hold a worker past MOONSHOT_TIMEOUT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import requests

from tasks.locations.model import NO_LOCATION, PRECISIONS, Location, ResolverError, ResolveResult
from workers.core.settings import Settings
from workers.polling.retry_after import parse_retry_after

MAX_BODY = 4 * 1024 * 1024
MAX_RETRY_AFTER = 600.0
TEXT_LIMIT = 600

SYSTEM_PROMPT = (
    "You extract the single most specific real-world place each news alert is about. "
    'Reply with a JSON object {"locations": {"<id>": PLACE or null}} containing every id '
    'you were given and no others. PLACE is {"name": string, "country_code": ISO 3166-1 '
    'alpha-2, "admin": first-level region or "", "lat": number, "lon": number, '
    '"precision": "city" | "state" | "country"}. Use null when the alert names no place.'
)


class ChatCompletionsResolver:
    """Locates a batch with one API call; stateless apart from its settings and session."""

    method = "moonshot"

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()

    @property
    def url(self) -> str:
        return self.settings.moonshot_base_url.rstrip("/") + "/chat/completions"

    def request_body(self, items: Sequence[tuple[str, str]]) -> dict[str, Any]:
        alerts = [{"id": alert_id, "text": text[:TEXT_LIMIT]} for alert_id, text in items]
        return {
            "model": self.settings.moonshot_model,
            "response_format": {"type": "json_object"},
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps({"alerts": alerts}, ensure_ascii=False)},
            ],
        }

    def resolve(self, items: Sequence[tuple[str, str]]) -> ResolveResult:
        status, headers, body = self._post(self.request_body(items))
        if status != 200:
            raise self._http_error(status, headers, body)
        return parse_reply(body, [alert_id for alert_id, _ in items])

    def _post(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        timeout = self.settings.moonshot_timeout
        deadline = time.monotonic() + timeout
        try:
            with self.session.post(
                self.url,
                json=payload,
                stream=True,
                timeout=(min(timeout, self.settings.http_connect_timeout), timeout),
                headers={"Authorization": f"Bearer {self.settings.moonshot_api_key}"},
            ) as resp:
                chunks, size = [], 0
                for chunk in resp.iter_content(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise ResolverError(
                            "malformed_response", f"reply over {MAX_BODY} bytes", retryable=True
                        )
                    if time.monotonic() > deadline:
                        raise ResolverError(
                            "timeout", f"reply took over {timeout:g}s", retryable=True
                        )
                return resp.status_code, dict(resp.headers), b"".join(chunks)
        except requests.Timeout:
            raise ResolverError(
                "timeout", f"no reply within {timeout:g}s from {self.url}", retryable=True
            ) from None
        except requests.RequestException as exc:
            raise ResolverError(
                "connection",
                self._scrub(f"cannot reach {self.url}: {type(exc).__name__}"),
                retryable=True,
            ) from None

    def _http_error(self, status: int, headers: dict[str, str], body: bytes) -> ResolverError:
        snippet = self._scrub(body[:200].decode("utf-8", "replace").replace("\n", " "))
        message = f"HTTP {status} from {self.url}: {snippet}"
        if status == 429:
            return ResolverError(
                "rate_limited",
                message,
                retryable=True,
                retry_after=retry_after_seconds(headers.get("Retry-After")),
            )
        if status >= 500:
            return ResolverError(f"http_{status}", message, retryable=True)
        if status in (401, 403):
            return ResolverError("auth_failed", message, retryable=False)
        return ResolverError("rejected", message, retryable=False)

    def _scrub(self, text: str) -> str:
        key = self.settings.moonshot_api_key
        return text.replace(key, "***") if key else text


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds, capped at MAX_RETRY_AFTER; None when absent or bad."""
    return parse_retry_after(value, cap=MAX_RETRY_AFTER)


def parse_reply(body: bytes, sent: Sequence[str]) -> ResolveResult:
    """Check a chat-completions reply against the ids sent; raise on an unusable reply."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
        answer = json.loads(content)
    except (ValueError, KeyError, IndexError, TypeError):
        raise ResolverError(
            "malformed_response",
            "reply is not a chat completion holding a JSON object",
            retryable=True,
        ) from None
    locations = answer.get("locations", answer) if isinstance(answer, dict) else None
    if not isinstance(locations, dict):
        raise ResolverError("malformed_response", 'reply has no "locations" object', retryable=True)
    result = ResolveResult()
    for alert_id in sent:
        if alert_id not in locations:
            result.missing.append(alert_id)
            continue
        place = parse_place(locations[alert_id])
        if place is None:
            result.malformed.append(alert_id)
        else:
            result.located[alert_id] = place
    return result


def parse_place(item: Any) -> Location | None:
    """A well-formed place, NO_LOCATION for null, None when malformed."""
    if item is None:
        return NO_LOCATION
    if not isinstance(item, dict):
        return None
    name, code, admin = item.get("name"), item.get("country_code") or "", item.get("admin") or ""
    precision = item.get("precision") or "city"
    lat, lon = item.get("lat"), item.get("lon")
    if (
        not isinstance(name, str)
        or not name.strip()
        or not isinstance(code, str)
        or not (code == "" or (len(code) == 2 and code.isalpha()))
        or not isinstance(admin, str)
    ):
        return None
    if precision not in PRECISIONS or precision == "none":
        return None
    if lat is None and lon is None:
        return Location(name.strip()[:200], code.upper(), admin[:200], None, None, precision)
    if (
        not isinstance(lat, int | float)
        or not isinstance(lon, int | float)
        or isinstance(lat, bool)
        or isinstance(lon, bool)
        or not -90 <= lat <= 90
        or not -180 <= lon <= 180
    ):
        return None
    return Location(
        name.strip()[:200], code.upper(), admin[:200], float(lat), float(lon), precision
    )
