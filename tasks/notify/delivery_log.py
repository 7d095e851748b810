"""A sink's delivery log: its last WATCHKEEPER_NOTIFY_LOG_SIZE attempts, newest first.

Each record: ``at`` (epoch seconds), ``key`` (the message's idempotency key), ``dest`` (the
destination's label — never its URL), ``outcome`` (``delivered``, ``retry``, ``dead_letter``),
``attempt``, ``error``, ``status`` (HTTP status when known), ``truncated`` and, for a retry,
``retry_in_s``. Written by ``lua/settle.lua`` with each outcome.
"""

from __future__ import annotations

import json
from typing import Any, cast

from tasks.notify.config import Sink
from tasks.notify.outbox import sink_keys
from workers.core.runtime import Runtime


def delivery_log(rt: Runtime, sink: Sink, count: int = 20) -> list[dict[str, Any]]:
    key = sink_keys(rt.settings, sink).log
    return [json.loads(r) for r in cast(list[str], rt.redis.lrange(key, 0, count - 1))]
