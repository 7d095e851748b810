"""Polite by the source's own word: when a source says to come back, within the source's clamps.

After a poll that did not fail, the next check is, in seconds from the poll's start on Redis's
clock:

1. every signal the source gave — HTTP ``Cache-Control: max-age`` (less ``Age``; it wins over
   ``Expires``), ``Expires`` (less ``Date``, so the server's clock, not ours, decides; less
   ``Age``), and what the kind reads from the body: RSS ``<ttl>`` (minutes), the RSS 1.0
   syndication module's ``sy:updatePeriod`` / ``sy:updateFrequency`` — the *longest* of them is
   taken (each is a "not before"); with none (or ``no-cache`` / ``no-store``, which give no
   lifetime) the source's ``interval``;
2. clamped to ``[interval_min, interval_max]`` (defaults: the interval, and the interval times
   ``WATCHKEEPER_INTERVAL_MAX_FACTOR``) — so by default the source's word can only slow polling
   down, never below the user's interval nor past the clamp;
3. moved out of RSS ``<skipHours>`` (GMT hours) and ``<skipDays>`` to the start of the next hour
   the feed allows, unless that passes ``interval_max`` (the clamp wins).

``honour_cache = false`` skips 1 and 3: every poll is one interval after the last. After a
failed poll none of this applies: the existing backoff (``WATCHKEEPER_BACKOFF_BASE`` doubling,
capped at ``WATCHKEEPER_BACKOFF_MAX``) or the server's ``Retry-After`` decides, as before — an
error is not the source's word on freshness, and its clamp is the backoff cap. The reason for
the wait is stored as ``next_check_reason`` and shown in ``status``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.core.text import duration

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,12})\"?\s*(?:,|$)", re.I)
NO_LIFETIME_RE = re.compile(r"(?:^|,)\s*(no-cache|no-store)\s*(?:[,=]|$)", re.I)
HOUR = 3600


@dataclass(frozen=True)
class Freshness:
    """What one response said about when to come back (all optional).

    ``signals``: ``(seconds after the response, label)``; ``expires_at``: an ``Expires`` time
    without a ``Date`` to measure it against (compared with Redis's time when the next check
    is planned); ``skip_hours`` (0-23, GMT) and ``skip_days`` (0 = Monday)."""

    signals: tuple[tuple[float, str], ...] = ()
    expires_at: float | None = None
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[int] = frozenset()

    def __add__(self, other: Freshness | None) -> Freshness:
        if other is None:
            return self
        return Freshness(
            self.signals + other.signals,
            self.expires_at if self.expires_at is not None else other.expires_at,
            self.skip_hours | other.skip_hours,
            self.skip_days | other.skip_days,
        )

    def to_json(self) -> str:
        """Stored with the source's state, so a 304 (no body) keeps the body's signals."""
        return json.dumps(
            {
                "signals": [[round(s, 3), label] for s, label in self.signals],
                "skip_hours": sorted(self.skip_hours),
                "skip_days": sorted(self.skip_days),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Freshness | None:
        try:
            data = json.loads(text) if text else None
            if not isinstance(data, dict):
                return None
            return cls(
                tuple((float(s), str(label)) for s, label in data.get("signals", [])[:8]),
                None,
                frozenset(int(h) for h in data.get("skip_hours", []) if 0 <= int(h) <= 23),
                frozenset(int(d) for d in data.get("skip_days", []) if 0 <= int(d) <= 6),
            )
        except (ValueError, TypeError):
            return None


def from_headers(headers: dict[str, str]) -> Freshness | None:
    """The HTTP caching signals of a response (lower-cased header names)."""
    control = headers.get("cache-control", "")
    expires = headers.get("expires")
    if not control and expires is None:
        return None
    if control and NO_LIFETIME_RE.search(control):
        return None  # must be revalidated every time: no lifetime to honour
    age = _seconds(headers.get("age")) or 0.0
    if control and (m := MAX_AGE_RE.search(control)):
        max_age = float(m.group(1))
        return Freshness(((max(0.0, max_age - age), f"cache-control max-age={m.group(1)}"),))
    if expires is None:
        return None
    at = _http_date(expires)
    if at is None:  # "0", "-1", garbage: already expired (RFC 9111 5.3)
        return Freshness(((0.0, "expires (already expired)"),))
    date = _http_date(headers.get("date", ""))
    if date is None:
        return Freshness(expires_at=at - age)
    lifetime = max(0.0, at - date - age)
    return Freshness(((lifetime, f"expires in {duration(lifetime)}"),))


def bounds(settings: Settings, source: Source) -> tuple[float, float]:
    """``(interval_min, interval_max)`` of a source, defaults filled in."""
    low = source.interval if source.interval_min is None else source.interval_min
    high = (
        source.interval * settings.interval_max_factor
        if source.interval_max is None
        else source.interval_max
    )
    return min(low, source.interval), max(high, source.interval)


def next_wait(
    settings: Settings, source: Source, freshness: Freshness | None, now: float
) -> tuple[float, str]:
    """Seconds from ``now`` (the poll's start, Redis's clock) to the next check, and why."""
    if freshness is None or not source.honour_cache:
        return source.interval, "interval"
    low, high = bounds(settings, source)
    signals = list(freshness.signals)
    if freshness.expires_at is not None:
        left = max(0.0, freshness.expires_at - now)
        signals.append((left, f"expires in {duration(left)}"))
    wait, reason = source.interval, "interval"
    if signals:
        wait, reason = max(signals, key=lambda s: s[0])
        if wait < low:
            wait, reason = low, f"{reason}, raised to interval_min {duration(low)}"
        elif wait > high:
            wait, reason = high, f"{reason}, cut to interval_max {duration(high)}"
    if freshness.skip_hours or freshness.skip_days:
        wait, reason = _skip(freshness, now, wait, reason, high)
    return wait, reason


def _skip(
    freshness: Freshness, now: float, wait: float, reason: str, high: float
) -> tuple[float, str]:
    """Move ``now + wait`` to the start of the next hour the feed allows (GMT)."""
    at = now + wait
    for _ in range(7 * 24 + 1):
        hour = int(at // HOUR)
        if hour % 24 not in freshness.skip_hours and _weekday(hour) not in freshness.skip_days:
            break
        at = (hour + 1) * HOUR
    else:
        return wait, reason  # every hour skipped: a feed that says that cannot be honoured
    if at <= now + wait:
        return wait, reason
    which = "skipHours" if int((now + wait) // HOUR) % 24 in freshness.skip_hours else "skipDays"
    if at - now > high:
        return high, f"{which}, cut to interval_max {duration(high)}"
    return at - now, which if reason == "interval" else f"{reason}, then {which}"


def _weekday(hour: int) -> int:
    return (hour // 24 + 3) % 7  # 1970-01-01 (hour 0) was a Thursday (3)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value.strip()) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _http_date(value: str) -> float | None:
    if not value.strip():
        return None
    try:
        when = parsedate_to_datetime(value.strip())
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
