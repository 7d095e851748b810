"""Celery's broker and result backend on Redis Sentinel, following a failover.

kombu's Sentinel transport asks Sentinel for the primary when it connects and redis-py's
Sentinel connection turns ``READONLY`` (a demoted primary) into a connection error, so a
reconnect reaches the new primary. Two cases it left stuck, found by the fault run and the
integration tests:

* a primary cut off from its replicas answers writes with ``NOREPLICAS``
  (``min-replicas-to-write``) while still reachable: kombu took that for a channel error, a
  publish failed without reconnecting, and every later one went to the same deposed server. The
  transport below uses ``FollowingConnection``, which treats ``NOREPLICAS`` like ``READONLY``:
  drop the connection, ask Sentinel again;
* a primary that vanishes without closing its connections (a partition, a dead machine: no
  RST) left a consumer waiting on its ``BRPOP`` forever (celery #6348). Socket timeouts, TCP
  keepalive and kombu's BRPOP health check (``health_check_interval``) bound that wait; a
  ``READONLY`` or ``NOREPLICAS`` met by the consumer is retried as a connection loss
  (``broker_channel_error_retry``, celery #7946).
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from celery.app.amqp import AMQP
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis
from redis.sentinel import Sentinel

from workers.core.sentinel import FollowingConnection, SentinelTarget

HEALTH_CHECK_S = 5
"""Seconds between kombu's checks of its long-lived connections; a consumer whose BRPOP got no
reply for its timeout plus this is reconnected (kombu's default, 25, took ~51 s)."""

SOCKET_TIMEOUT_S = 15
"""A synchronous broker command (a publish, an ack) gives up on a silent server after this."""

KEEPALIVE = {
    getattr(socket, "TCP_KEEPIDLE", 4): 5,
    getattr(socket, "TCP_KEEPINTVL", 5): 2,
    getattr(socket, "TCP_KEEPCNT", 6): 3,
}
"""TCP keepalive: a connection whose server went silent fails after about 11 s."""


class FollowingKombuSSLConnection(FollowingConnection, kombu_redis.SentinelManagedSSLConnection):
    """kombu's Sentinel TLS connection, following ``NOREPLICAS`` too."""


class FollowingSentinelChannel(kombu_redis.SentinelChannel):
    """kombu's Sentinel channel, given every Sentinel in its transport options (``sentinels``)
    instead of one ``;``-separated URL each: kombu treats those URLs as failover alternates,
    and switching to one re-creates the connection with kombu's own transport (the URL's
    scheme), losing this one's connections."""

    from_transport_options = (
        *kombu_redis.SentinelChannel.from_transport_options,
        "sentinels",
    )  # type: ignore[assignment]
    connection_class = FollowingConnection
    connection_class_ssl = FollowingKombuSSLConnection
    sentinels: list[tuple[str, int]] | None = None

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            # kombu closing a channel after its connection let go (a failover): it would
            # restore unacked messages through a new pool and die on an AttributeError that
            # stopped the worker ("Unrecoverable error"). A connection error is ignored there;
            # the messages come back after the visibility timeout instead.
            raise redis.ConnectionError("the broker connection is closed")
        return super()._get_pool(asynchronous)  # type: ignore[no-untyped-call]

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        params = self._connparams(asynchronous)  # type: ignore[no-untyped-call]
        params.pop("host", None)
        params.pop("port", None)
        manager = Sentinel(
            [(str(h), int(p)) for h, p in self.sentinels or ()],
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        if asynchronous:  # kept so that kombu closes its Sentinel connections too
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        master = getattr(self, "master_name", None)
        if not master:
            raise ValueError("'master_name' transport option must be specified.")
        return manager.master_for(master, redis.Redis).connection_pool


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with connections that follow ``NOREPLICAS`` too."""

    Channel = FollowingSentinelChannel


TRANSPORT = f"{__name__}:SentinelTransport"

RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}
"""How often a lost broker connection is tried again. kombu waits 2, 4, 6… s (up to 30)
between attempts, so a worker came back up to 6 s after the new primary was in place."""


class PromptConnection(Connection):
    """A kombu connection that, lost, is tried again every 0.5-2 s (``RECONNECT``)."""

    def _ensure_connection(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) <= 2:  # errback, max_retries: the intervals were not given
            for name, value in RECONNECT.items():
                kwargs.setdefault(name, value)
        return super()._ensure_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


class SentinelAMQP(AMQP):  # type: ignore[misc]
    """Celery's broker plumbing with ``PromptConnection`` (the app's ``amqp_cls``)."""

    Connection = PromptConnection


AMQP_CLASS = f"{__name__}:SentinelAMQP"


def connection_options() -> dict[str, Any]:
    """Socket options every broker and result connection gets with Sentinel."""
    return {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
        "health_check_interval": HEALTH_CHECK_S,
        "retry_on_timeout": True,
    }


def celery_options(target: SentinelTarget, visibility_timeout: int) -> dict[str, Any]:
    """Celery settings for a broker and result backend behind Sentinel."""
    sentinel_kwargs = target.sentinel_kwargs(5)
    transport = {
        "master_name": target.master,
        "sentinels": [list(address) for address in target.sentinels],
        "sentinel_kwargs": sentinel_kwargs,
        "visibility_timeout": visibility_timeout,
        **connection_options(),
    }
    backend = {
        "master_name": target.master,
        "sentinel_kwargs": sentinel_kwargs,
        "visibility_timeout": visibility_timeout,
    }
    return {
        # One URL (the servers' credentials and database); the Sentinels are in the options.
        "broker_url": target.kombu_url().split(";", 1)[0],
        "broker_transport": TRANSPORT,
        "broker_transport_options": transport,
        "result_backend": target.kombu_url(),
        "result_backend_transport_options": backend,
        "redis_socket_timeout": SOCKET_TIMEOUT_S,
        "redis_socket_connect_timeout": 5,
        "redis_socket_keepalive": True,
        "redis_retry_on_timeout": True,
        "redis_backend_health_check_interval": HEALTH_CHECK_S,
        # A READONLY or NOREPLICAS met by the consumer is a channel error to kombu: reconnect
        # (through Sentinel) rather than stop consuming (celery #7946).
        "broker_channel_error_retry": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
    }
