"""The HTTP ``Retry-After`` header as seconds: shared by fetching and the location API client."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, cap: float | None = None) -> float | None:
    """Seconds from delta-seconds or an HTTP date (never negative, at most ``cap``); None when
    absent or unparseable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value.strip()).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    seconds = max(0.0, seconds)
    return seconds if cap is None else min(seconds, cap)
