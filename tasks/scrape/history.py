"""A site's session history: one JSON record per run, newest first, capped.

A ``CappedList`` of at most WATCHKEEPER_MAX_HISTORY runs per site (``watchkeeper history
SITE``), so a history never grows with the run count. Its TTL (WATCHKEEPER_SEEN_MAX_AGE, like the
site's seen keys) is refreshed by every run, so a site removed from the sources file ages out —
it is never deleted on one process's view of the file, which another machine may not share.
"""

from __future__ import annotations

from typing import Any

from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.lists import CappedList


def history(rt: Runtime, site: str) -> CappedList:
    s = rt.settings
    return CappedList(rt.redis, keys.HISTORY.key(s, site), s.max_history, s.seen_max_age or None)


def history_rows(rt: Runtime, site: str, n: int) -> list[dict[str, Any]]:
    """``watchkeeper history SITE -n N``: the newest ``n`` runs, newest first."""
    return history(rt, site).latest(max(0, n)) if n > 0 else []
