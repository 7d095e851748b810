"""One delivery at a time per sink's reading and per destination: ``SET NX PX`` locks.

Reading a sink's streams and sending to each of its destinations take separate locks, so a
destination that is slow or timing out never holds up the sink's other destinations: the next
run (another worker) skips only the destination still busy. Locks expire with the task time
limit; release is compare-and-delete (the runtime's ``lock_release.lua``).
"""

from __future__ import annotations

import uuid

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.store import replicas
from workers.store.scripts import Script

_RELEASE = Script("workers.polling", "lock_release")


def lock_key(settings: Settings, sink: str, part: str) -> str:
    return keys.NOTIFY_LOCK.key(settings, sink, part)


def acquire(client: redis.Redis, settings: Settings, sink: str, part: str) -> str | None:
    """A token when the lock is taken. With Sentinel it counts only once a replica has it: a
    lock a failover takes back could be taken again by another worker, and both would send."""
    token = uuid.uuid4().hex
    ms = int(settings.task_time_limit * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.set(lock_key(settings, sink, part), token, nx=True, px=ms)
    waited = replicas.queue_wait(pipe, settings)
    replies = pipe.execute()
    if not replies[0]:
        return None
    try:
        replicas.split(replies, waited, settings, "notification lock")
    except replicas.NotReplicated:
        release(client, settings, sink, part, token)
        return None
    return token


def release(client: redis.Redis, settings: Settings, sink: str, part: str, token: str) -> None:
    _RELEASE(client, [lock_key(settings, sink, part)], [token])
