"""One poll of a source at a time: a lock per source (``SET NX PX``) that frees itself.

The lock expires with the task's hard time limit, so a killed worker's lock never outlives the
task that held it; release is compare-and-delete (``lua/lock_release.lua``), so a poll that
overran never releases a lock someone else took since.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.store.scripts import Script

_RELEASE = Script("workers.polling", "lock_release")


def lock_ms(settings: Settings) -> int:
    return int(settings.task_time_limit * 1000)


def acquire_lock(client: redis.Redis, settings: Settings, name: str) -> str | None:
    """A token when this caller now polls ``name`` alone, else None."""
    token = uuid.uuid4().hex
    ok = client.set(keys.SOURCE_LOCK.key(settings, name), token, nx=True, px=lock_ms(settings))
    return token if ok else None


def release_lock(client: redis.Redis, settings: Settings, name: str, token: str) -> None:
    compare_delete(client, keys.SOURCE_LOCK.key(settings, name), token)


def compare_delete(client: redis.Redis, key: str, token: str) -> bool:
    """Delete ``key`` only while it still holds ``token`` (a lock, a queued marker)."""
    return bool(_RELEASE(client, [key], [token]))


def queue_release(pipe: Any, settings: Settings, name: str, token: str) -> None:
    _RELEASE.queue(pipe, [keys.SOURCE_LOCK.key(settings, name)], [token])
