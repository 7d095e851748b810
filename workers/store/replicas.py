"""Replica acknowledgements: a write the outside world is told about must survive a failover.

Redis replicates asynchronously. When a primary dies, Sentinel promotes the replica that got
the most of its replication stream, and whatever the old primary had not yet sent is gone —
as if those writes had never happened. Every watchkeeper write is atomic and idempotent, so a
write lost this way is simply done again: a poll refetches its items (the seen-set forgot them
with the stream entries), a location batch's lease comes back, a message redelivers. What
cannot be done again is what already left Redis:

* TCP lines the listener has let go of (the sender will not send them twice);
* a notification sent for a stream entry that a failover then takes back (the entry is written
  again under a new id, and notified again);
* a notification recorded as sent (else it is sent again — the receiver's idempotency key
  catches that, but it need not happen);
* a lock that guards such a send (held twice after a failover, two workers would send).

So those writes are followed by ``WAIT n ms`` *on the connection that wrote them* (WAIT counts
the replicas that have received everything this connection wrote, and so everything the primary
wrote before it): with ``n`` replicas confirming, the promoted replica has the write (Sentinel
promotes the most advanced one), so nothing acknowledged is lost while at most ``n`` of the
replicas fail at once. A WAIT that times out raises ``NotReplicated`` (a ``ConnectionError``: the
callers already retry those), and the write is not treated as done.

``WATCHKEEPER_REPLICA_ACKS`` is ``n`` (0: never wait), ``WATCHKEEPER_REPLICA_WAIT_MS`` the
timeout. Without Sentinel nothing waits: a single server has no replica to wait for.
"""

from __future__ import annotations

from typing import Any

import redis

from workers.core import keys
from workers.core.settings import Settings


class NotReplicated(redis.ConnectionError):
    """Fewer replicas than ``WATCHKEEPER_REPLICA_ACKS`` confirmed a write in time."""


def wanted(settings: Settings) -> int:
    """Replicas a told-about write must reach: 0 without Sentinel or when turned off."""
    return settings.replica_acks if settings.uses_sentinel else 0


def wait_args(settings: Settings) -> tuple[str, int, int]:
    return ("WAIT", settings.replica_acks, settings.replica_wait_ms)


FENCE_TTL_S = 3600


def queue_wait(pipe: Any, settings: Settings) -> bool:
    """Add a WAIT to a pipeline after its writes (same connection); False when none is due.

    WAIT waits for the replication offset of this connection's last *write*. A connection that
    only read (pending stream entries read again) or whose write changed nothing (a retried
    script finding its work done) has none, and WAIT would answer at once. So a one-key write
    (``wk:replicas:fence``) goes first: its offset is past everything the primary had written
    when the pipeline ran, which WAIT then waits for."""
    if not wanted(settings):
        return False
    pipe.set(keys.REPLICA_FENCE.key(settings), "1", ex=FENCE_TTL_S)
    pipe.execute_command(*wait_args(settings))
    return True


def check(reply: Any, settings: Settings, what: str) -> None:
    """Raise ``NotReplicated`` unless a WAIT's reply reaches ``WATCHKEEPER_REPLICA_ACKS``."""
    confirmed(reply, wait_args(settings), what)


def confirmed(reply: Any, wait: tuple[Any, ...], what: str) -> None:
    """Raise ``NotReplicated`` unless the reply to ``wait`` (``WAIT n ms``) reaches ``n``."""
    acked, needed = int(reply), int(wait[1])
    if acked < needed:
        raise NotReplicated(f"{what}: {acked} of {needed} replicas confirmed within {wait[2]} ms")


def split(replies: list[Any], waited: bool, settings: Settings, what: str) -> list[Any]:
    """A pipeline's replies without the fence and WAIT ``queue_wait`` added, checked."""
    if not waited:
        return replies
    check(replies[-1], settings, what)
    return replies[:-2]


def confirm(client: Any, settings: Settings, what: str) -> None:
    """After writes made on any connection of ``client``: raise ``NotReplicated`` unless
    enough replicas have everything the primary wrote so far (the fence key is written, then
    waited for)."""
    pipe = client.pipeline(transaction=False)
    if queue_wait(pipe, settings):
        split(pipe.execute(), True, settings, what)
