"""One destination working through the messages it owes: send, then settle each outcome.

A destination takes its due messages oldest first (``lua/due.lua``, Redis time) and sends them
one by one; each outcome is settled at once (``lua/settle.lua``), so a worker dying mid-batch
resends at most the message it was sending (at-least-once; receivers deduplicate on the
idempotency key every message carries). Failures:

* retryable (connection refused or closed, a send past its deadline — WATCHKEEPER_NOTIFY_TIMEOUT
  for the whole send, not per read —, 408/425/429/5xx): the attempt is counted and
  the message is due again after ``WATCHKEEPER_NOTIFY_BACKOFF_BASE`` doubling per attempt, with
  jitter, capped by ``WATCHKEEPER_NOTIFY_BACKOFF_MAX``; a ``Retry-After`` (429/503) replaces the
  backoff. The rest of this run's batch is not sent — the destination just failed — and counts
  the same attempt, so a destination that is down costs one timeout per run, not one per message;
* at ``WATCHKEEPER_NOTIFY_MAX_ATTEMPTS`` attempts, or on a non-retryable answer (another 4xx, an
  unusable URL), the message goes to the sink's dead-letter list.

If Redis is unreachable when an outcome must be recorded, the outcome is retried for up to
``WATCHKEEPER_NOTIFY_REDIS_WAIT`` seconds rather than dropped: a message already sent is not
sent again because its record was lost with the connection.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import requests

from tasks.notify import locks
from tasks.notify.config import Destination, Sink
from tasks.notify.outbox import SinkKeys
from tasks.notify.send import Message, SendResult, plugin_for, send
from workers.core.exchange import Exchange
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.store import replicas
from workers.store.scripts import Script, execute

log = logging.getLogger(__name__)

JITTER = (0.5, 1.0)
CLOCK_SLACK = 1.0
"""A message due within this many seconds (Redis's clock) is sent by this run."""
_DUE = Script("tasks.notify", "due")
_SETTLE = Script("tasks.notify", "settle")
T = TypeVar("T")


def backoff(
    settings: Settings, attempts: int, rng: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    exponent = min(max(attempts, 1) - 1, 30)
    return float(
        min(
            settings.notify_backoff_max, settings.notify_backoff_base * 2.0**exponent * rng(*JITTER)
        )
    )


def decide(settings: Settings, result: SendResult, attempts: int) -> tuple[str, float]:
    """("ok" | "retry" | "dead", seconds until the next attempt) after one more attempt."""
    if result.ok:
        return "ok", 0.0
    done = attempts + 1
    if not result.retryable or done >= settings.notify_max_attempts:
        return "dead", 0.0
    if result.retry_after is not None:
        return "retry", min(settings.notify_backoff_max, result.retry_after)
    return "retry", backoff(settings, done)


def with_redis(rt: Runtime, call: Callable[[], T]) -> T:
    """``call()``, retried while Redis is unreachable (up to WATCHKEEPER_NOTIFY_REDIS_WAIT)."""
    deadline = time.monotonic() + rt.settings.notify_redis_wait
    pause = 0.1
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= deadline:
                raise
            log.warning("[notify] Redis unreachable; retrying in %.1fs", pause)
            time.sleep(pause)
            pause = min(2.0, pause * 2)


def deliver_destination(
    rt: Runtime, sink: Sink, dest: Destination, k: SinkKeys, deadline: float
) -> dict[str, int]:
    """Send what ``dest`` owes until nothing is due, it fails, or ``deadline`` (monotonic)."""
    slot = [d.id for d in sink.destinations].index(dest.id)
    pipe = rt.redis.pipeline(transaction=False)  # the due scores are Redis TIME: compare
    pipe.zrange(k.due[slot], 0, 0, withscores=True)  # with Redis's clock, not this machine's
    pipe.time()
    earliest, (seconds, micros) = pipe.execute()
    if not earliest or float(earliest[0][1]) > seconds + micros / 1e6 + CLOCK_SLACK:
        return {"idle": 1}  # nothing due: no lock taken (the common case, every second)
    token = locks.acquire(rt.redis, rt.settings, sink.name, dest.id)
    if token is None:
        return {"busy": 1}
    counts = {"delivered": 0, "retried": 0, "dead": 0}
    session = requests.Session()  # one connection for the run, where the receiver keeps it
    exchange = Exchange(rt.settings.notify_max_reply_bytes)  # its sockets, for the deadlines
    try:
        _run(rt, sink, dest, k, deadline, (session, exchange), counts)
    finally:
        session.close()
        with_redis(rt, lambda: locks.release(rt.redis, rt.settings, sink.name, dest.id, token))
    return counts


def _run(
    rt: Runtime,
    sink: Sink,
    dest: Destination,
    k: SinkKeys,
    deadline: float,
    http: tuple[requests.Session, Exchange],
    counts: dict[str, int],
) -> None:
    s = rt.settings
    slot = [d.id for d in sink.destinations].index(dest.id)
    due_key = k.due[slot]
    url = dest.url()
    plugin = plugin_for(url) if url else None  # parsed once per run, not per message
    while time.monotonic() < deadline:
        reply = with_redis(rt, lambda: _DUE(rt.redis, [due_key, k.outbox], [s.notify_batch]))
        pairs = list(zip(reply[1::2], reply[2::2], strict=True))
        if not pairs:
            return
        failure: SendResult | None = None
        deferred: list[dict[str, Any]] = []
        for key, raw in pairs:
            rec = json.loads(raw) if raw else None
            state = rec["d"].get(dest.id) if rec else None
            if rec is None or state is None:
                deferred.append({"k": key, "o": "ok"})  # nothing owed: settle drops it
                continue
            if failure is not None:
                result = SendResult(
                    False, error=f"deferred: {failure.error}", retry_after=failure.retry_after
                )
                deferred.append(outcome(s, sink, dest, rec, state, result))
                continue
            if time.monotonic() >= deadline:
                break
            result = _send_one(s, url, dest, rec, http, plugin)
            settle(rt, sink, dest, k, [outcome(s, sink, dest, rec, state, result)], counts)
            if not result.ok and result.retryable:
                failure = result
        if deferred:
            settle(rt, sink, dest, k, deferred, counts)
        if failure is not None or len(pairs) < s.notify_batch:
            return


def _send_one(
    s: Settings,
    url: str,
    dest: Destination,
    rec: dict[str, Any],
    http: tuple[requests.Session, Exchange],
    plugin: Any,
) -> SendResult:
    if not url:
        return SendResult(False, error=f"{dest.variable} is not set in this delivery process")
    message = Message(rec.get("t", ""), rec.get("b", ""), rec["k"])
    session, exchange = http
    result = send(
        url,
        message,
        s.notify_timeout,
        s.notify_max_chars,
        session,
        plugin,
        reply_cap=s.notify_max_reply_bytes,
        exchange=exchange,
    )
    if rec.get("tr") and not result.truncated:
        result = SendResult(
            result.ok, result.retryable, result.error, result.status, result.retry_after, True
        )
    return result


def outcome(
    s: Settings,
    sink: Sink,
    dest: Destination,
    rec: dict[str, Any],
    state: list[Any],
    result: SendResult,
) -> dict[str, Any]:
    """One settle entry (and its delivery-log record) for a send's result."""
    attempts = int(state[0])
    verdict, delay = decide(s, result, attempts)
    entry = {
        "at": round(time.time(), 3),
        "key": rec["k"],
        "dest": dest.label,
        "outcome": {"ok": "delivered", "retry": "retry", "dead": "dead_letter"}[verdict],
        "attempt": attempts + 1,
        "error": result.error,
        "status": result.status,
        "truncated": result.truncated,
    }
    if verdict == "retry":
        entry["retry_in_s"] = round(delay, 2)
        if not result.error.startswith("deferred"):
            log.warning(
                "[notify] sink %r → %s: %s (attempt %d/%d, retry in %.1fs)",
                sink.name,
                dest.label,
                result.error,
                attempts + 1,
                s.notify_max_attempts,
                delay,
            )
    elif verdict == "dead":
        log.warning(
            "[notify] sink %r → %s: %s; dead-lettered %s after %d attempts",
            sink.name,
            dest.label,
            result.error,
            rec["k"],
            attempts + 1,
        )
    return {
        "k": rec["k"],
        "o": verdict,
        "n": delay,
        "e": result.error,
        "t": 1 if result.truncated else 0,
        "l": json.dumps(entry, ensure_ascii=False),
    }


def settle(
    rt: Runtime,
    sink: Sink,
    dest: Destination,
    k: SinkKeys,
    outcomes: list[dict[str, Any]],
    counts: dict[str, int],
) -> None:
    s = rt.settings
    slot = [d.id for d in sink.destinations].index(dest.id)
    args = [
        k.group,
        dest.id,
        json.dumps(list(sink.streams)),
        s.notify_max_dead_letters,
        s.notify_log_size,
        json.dumps(outcomes, ensure_ascii=False),
    ]
    keys = [k.state, k.outbox, k.queue, k.dead, k.log, k.due[slot], *k.streams]

    def record() -> Any:
        """Settle, and with Sentinel wait until a replica has it (else a failover forgets a
        message was sent and it is sent again); settling twice changes nothing."""
        pipe = rt.redis.pipeline(transaction=False)
        _SETTLE.queue(pipe, keys, args)
        waited = replicas.queue_wait(pipe, s)
        return replicas.split(execute(pipe), waited, s, "notification outcomes")[0]

    delivered, retried, dead, _ = with_redis(rt, record)
    counts["delivered"] += int(delivered)
    counts["retried"] += int(retried)
    counts["dead"] += int(dead)
