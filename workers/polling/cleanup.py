"""Cleanup of per-source keys whose source left the sources file."""

from __future__ import annotations

from typing import Any

from workers.core import keys
from workers.core.keys import KeySpec
from workers.core.maintenance import declare_cleanup
from workers.core.runtime import Runtime


def forget_removed(rt: Runtime, specs: tuple[KeySpec, ...]) -> int:
    """Delete the keys of ``specs`` (each with one ``{source}`` part) whose source is gone."""
    configured = {s.name for s in rt.config().sources}
    removed = 0
    for spec in specs:
        prefix = spec.prefix_of(rt.settings)
        for key in rt.redis.scan_iter(match=spec.glob(rt.settings), count=500):
            if str(key)[len(prefix) :] not in configured:
                removed += int(rt.redis.delete(key))
    return removed


@declare_cleanup
def forget_removed_sources(rt: Runtime) -> dict[str, Any]:
    """State and seen-sets of sources no longer in the sources file: their seen-sets would
    expire by age anyway; deleting them now returns the memory at once."""
    return {"removed_source_keys": forget_removed(rt, (keys.SOURCE_STATE, keys.SEEN))}
