"""Before the prefork pool forks: freeze the worker parent's objects so its children share them.

CPython's cyclic garbage collector writes into the header of every object it examines. In a
forked child, the first full collection therefore touches nearly every page of the heap it
inherited — imported modules, the Celery app, its configuration — and copy-on-write gives the
child a private copy of each: ~20 MB per pool child before it has run anything useful (issue
15). ``gc.freeze()`` moves every object alive at that moment into a permanent generation that
collections skip (the gc module's documented recipe for fork servers), so those pages stay
shared. It runs on ``celeryd_after_setup``, which Celery sends in the worker's main process once
it is set up and just before the pool starts its children; children forked later (recycling)
inherit the same frozen objects. Frozen objects are never collected: only what the parent
holds for its whole life anyway is alive at that point.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

log = logging.getLogger("watchkeeper.memory")


def freeze_before_fork(**_: Any) -> None:
    """Collect the parent's garbage, then freeze what is left (see the module docstring)."""
    gc.collect()
    gc.freeze()
    log.info("[memory] froze %d objects before forking the pool", gc.get_freeze_count())
