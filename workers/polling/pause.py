"""Pause and resume a source (the dashboard, ``watchkeeper sources pause|resume``):
``paused`` = "1" in its state hash.

Scheduled polls skip a paused source at claim (``workers.polling.poll``), so beat's entries
keep firing but do nothing; "check now" still polls it. While paused the state hash has no
TTL — a paused source is never polled, so nothing would refresh it and the pause would expire
with it; removing the source from the registry restores the TTL, so its state ages out.
Resuming restores the TTL and makes the source due at once (in its state and in beat's due
set).
"""

from __future__ import annotations

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.polling.state import entry_name, state_ttl


def set_paused(client: redis.Redis, settings: Settings, source: Source, paused: bool) -> None:
    key = keys.SOURCE_STATE.key(settings, source.name)
    pipe = client.pipeline(transaction=True)
    if paused:
        pipe.hset(key, "paused", "1")
        pipe.persist(key)
    else:
        pipe.hdel(key, "paused")
        pipe.hset(key, "next_check", "0")
        pipe.expire(key, state_ttl(settings, source))
        pipe.zadd(keys.BEAT_DUE.key(settings), {entry_name(source.kind, source.name): 0})
        pipe.expire(keys.BEAT_DUE.key(settings), settings.state_ttl)
    pipe.execute()
