"""The sources page's rows: one per configured source, read in one pipeline.

Built on the ``sources`` status section (the same numbers ``watchkeeper status`` shows), plus
a health word a person can scan: paused, new (never polled), ok, backing off (errors, fewer
than ``WATCHKEEPER_NOTIFY_AFTER_ERRORS``) or failing (that many or more: the point at which
notifications report the source down).
"""

from __future__ import annotations

import time
from typing import Any

from workers.core.runtime import Runtime
from workers.polling.state import as_float
from workers.polling.status import sources_section


def health(state: dict[str, str], paused: bool, failing_after: int) -> str:
    errors = int(as_float(state.get("errors")))
    if paused:
        return "paused"
    if not state.get("last_poll"):
        return "new"
    if errors == 0:
        return "ok"
    return "failing" if errors >= failing_after else "backing off"


def source_rows(rt: Runtime) -> list[dict[str, Any]]:
    """One row per source, its cells already text (a thousand rows render in a few ms)."""
    now = time.time()
    rows = []
    for name, src in sources_section(rt).items():
        state: dict[str, str] = src.get("state", {})
        seen = src.get("seen", {})
        paused = bool(src.get("paused"))
        word = health(state, paused, rt.settings.notify_after_errors)
        size, cap = int(seen.get("size", 0)), int(seen.get("cap", 0))
        next_in = src.get("next_check_in_s")
        why = src.get("next_check_reason") or ""
        rows.append(
            {
                "name": name,
                "kind": src.get("kind"),
                "where": f"{src.get('url')} · every {float(src.get('interval_s') or 0):.0f} s",
                "health": word,
                "health_class": word.replace(" ", "-"),
                "polling": bool(src.get("polling")),
                "error": (state.get("last_error") or "")[:300],
                "warning": (state.get("last_warning") or seen.get("warning") or "")[:300],
                "last_ok": _ago(now, state.get("last_ok")),
                "last_poll": state.get("last_poll", ""),
                "last_poll_ago": _ago(now, state.get("last_poll")),
                "next": "paused"
                if paused
                else ("due" if not next_in else f"in {float(next_in):.0f} s"),
                "next_reason": why,
                "seen": f"{size} / {cap}",
                "seen_over": size > cap,
                "counts": " · ".join(
                    str(int(as_float(state.get(f"last_{k}"))))
                    for k in ("fetched", "new", "duplicate", "bad")
                ),
                "action": "resume" if paused else "pause",
            }
        )
    return rows


def _ago(now: float, stamp: str | None) -> str:
    value = as_float(stamp)
    return f"{max(0.0, now - value):.0f} s ago" if value else "never"
