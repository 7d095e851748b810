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
    now = time.time()
    rows = []
    for name, src in sources_section(rt).items():
        state: dict[str, str] = src.get("state", {})
        seen = src.get("seen", {})
        rows.append(
            {
                "name": name,
                "kind": src.get("kind"),
                "url": src.get("url"),
                "interval_s": src.get("interval_s"),
                "health": health(state, bool(src.get("paused")), rt.settings.notify_after_errors),
                "paused": bool(src.get("paused")),
                "polling": bool(src.get("polling")),
                "errors": int(as_float(state.get("errors"))),
                "error": state.get("last_error") or "",
                "warning": state.get("last_warning") or seen.get("warning") or "",
                "last_ok_ago": _ago(now, state.get("last_ok")),
                "last_poll": state.get("last_poll", ""),
                "last_poll_ago": _ago(now, state.get("last_poll")),
                "next_in": None if src.get("paused") else src.get("next_check_in_s"),
                "seen": int(seen.get("size", 0)),
                "seen_cap": int(seen.get("cap", 0)),
                "counts": {
                    k: int(as_float(state.get(f"last_{k}")))
                    for k in ("fetched", "new", "duplicate", "bad")
                },
            }
        )
    return rows


def _ago(now: float, stamp: str | None) -> float | None:
    value = as_float(stamp)
    return round(max(0.0, now - value), 1) if value else None
