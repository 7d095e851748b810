"""What the runtime's writers call after writing, so notifications follow at once.

``after_poll`` follows the poll loop (a poll hook, ``workers.polling.kinds``) right after a
poll's one write round trip: it records the source's health (one ``health`` entry per change
of state) and, when new items were written, requests a delivery run. It never raises: a
notification problem must not fail a poll.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tasks.notify.health import source_health_changed
from tasks.notify.tasks import notify_new_items
from workers.core.runtime import Runtime
from workers.core.sources_file import Source
from workers.polling.kinds import declare_poll_hook

log = logging.getLogger(__name__)


def after_poll(
    rt: Runtime,
    source: Source,
    stream: str,
    values: Mapping[str, Any],
    previous_errors: int,
    new: int,
) -> None:
    """``values``: the state fields the poll saved; ``previous_errors``: the source's error
    streak before this poll; ``new``: entries it wrote to ``stream``."""
    try:
        source_health_changed(
            rt, source.name, values, kind=source.kind, previous_errors=previous_errors
        )
        if new:
            notify_new_items(rt, stream)
    except Exception:  # never fail a poll over a notification
        log.exception("[notify] after poll of %r", source.name)


declare_poll_hook(after_poll)
