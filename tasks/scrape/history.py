"""A site's session history: one JSON record per run, newest first, capped.

A ``CappedList`` of at most WATCHKEEPER_MAX_HISTORY runs per site (``watchkeeper history
SITE``), so a history never grows with the run count.
"""

from __future__ import annotations

from typing import Any

from workers.core import keys
from workers.core.maintenance import declare_cleanup
from workers.core.runtime import Runtime
from workers.polling.cleanup import forget_removed
from workers.store.lists import CappedList


def history(rt: Runtime, site: str) -> CappedList:
    return CappedList(rt.redis, keys.HISTORY.key(rt.settings, site), rt.settings.max_history)


def history_rows(rt: Runtime, site: str, n: int) -> list[dict[str, Any]]:
    """``watchkeeper history SITE -n N``: the newest ``n`` runs, newest first."""
    return history(rt, site).latest(max(0, n)) if n > 0 else []


@declare_cleanup
def forget_removed_sites(rt: Runtime) -> dict[str, Any]:
    """Session histories of sites no longer in the sources file."""
    return {"removed_histories": forget_removed(rt, (keys.HISTORY,))}
