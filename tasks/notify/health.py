"""Source health as notifications: one ``health`` entry when a source goes down, one when it
recovers — never a storm.

The poll loop calls ``source_health_changed`` after it saved a source's state. A source is
down once its consecutive errors reach WATCHKEEPER_NOTIFY_AFTER_ERRORS, and up again at its
first success; only those two changes write an entry to the capped ``health`` stream (fields
``source``, ``kind``, ``state``, ``errors``, ``last_error``, ``since``, ``at``, ``title``,
``message``), which sinks take like any other stream. The per-source alert state is a Redis
hash holding only the sources currently down (``lua/health.lua``), so any worker polling a
source next sees the same picture.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tasks.notify.streams import SCHEMA, as_int, seq_key, stream_key
from tasks.notify.tasks import notify_new_items
from workers.core import keys
from workers.core.runtime import Runtime
from workers.store.scripts import Script

log = logging.getLogger(__name__)

MAX_ERROR = 300
_HEALTH = Script("tasks.notify", "health", include=("workers.store:stream_budget",))


def source_health_changed(
    rt: Runtime,
    source_name: str,
    state_values: Mapping[str, Any],
    *,
    kind: str = "",
    previous_errors: int | None = None,
) -> str:
    """Record a poll's outcome; returns "down" or "up" on a change of state, else "".

    ``state_values`` are the fields the poll just saved (``errors``, ``last_error``);
    ``previous_errors`` (the streak before this poll), when given, spares the Redis call on the
    common path — a success after fewer errors than the threshold cannot be a recovery.
    """
    s = rt.settings
    errors = as_int(state_values.get("errors"))
    if errors is None:
        return ""
    threshold = s.notify_after_errors
    if 0 < errors < threshold:
        return ""
    if errors == 0 and previous_errors is not None and previous_errors < threshold:
        return ""
    error = str(state_values.get("last_error") or "")[:MAX_ERROR]
    change = str(
        _HEALTH(
            rt.redis,
            [
                keys.NOTIFY_HEALTH.key(s),
                stream_key(s, "health"),
                seq_key(s, "health"),
                keys.STREAM_BYTES.key(s, "health"),
            ],
            [
                source_name,
                kind,
                errors,
                threshold,
                error,
                s.stream_cap("health"),
                SCHEMA,
                s.stream_budget("health"),
            ],
        )
        or ""
    )
    if change == "down":
        log.warning("[health] source %r is down after %d errors: %s", source_name, errors, error)
    elif change == "up":
        log.info("[health] source %r recovered", source_name)
    if change:
        notify_new_items(rt, "health")
    return change
