"""Polling discipline shared by every polled source: state, backoff, locks, host politeness.

All of it lives in Redis so any worker (or ``watchkeeper poll``) sees the same picture and a
worker can die at any moment:

* ``wk:src:{name}`` — a HASH of the source's state (etag, last-modified, next check, error
  streak, last error, last success, last counts), refreshed with a TTL on every poll.
* ``wk:lock:{name}`` — ``SET NX PX``: one poll of a source at a time; a poll due while one runs
  is skipped, not queued. The expiry frees the lock of a worker that was killed.
* ``wk:host:{host}:slots`` / ``wk:host:{host}:next`` — requests in flight to a host (a ZSET of
  leases) and the earliest time the next may start, both expiring: at most
  ``host_concurrency`` at once and ``host_delay`` between starts, across every worker.

``poll_source`` is the one poll routine (fetch → parse → dedup → emit → record state) that the
feed and log-endpoint tasks share; what differs between them is a ``SourceKind``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import redis

from workers.bounded import CappedStream, SeenSet
from workers.config import Source
from workers.runtime import Runtime
from workers.settings import Settings

if TYPE_CHECKING:
    from tasks.fetch import FetchResult

log = logging.getLogger(__name__)

JITTER = (0.75, 1.0)
"""Backoff is multiplied by a random factor in this range: never below 3/4 of the doubling, so
the delay still grows with every error while workers that failed together spread out."""

SUCCESS_RECHECK = 0.9
"""After a success a source is due again after this fraction of its interval, matching the
schedule's expiry, so beat's next tick is never skipped as "not due"."""


class SourceError(Exception):
    """An expected failure of one source (fetch, politeness, content); ``str()`` is already a
    clear one-line message, so it is recorded as is."""


class HostBusy(SourceError):
    """No politeness slot for a host within the wait allowed; the message names the host."""


class SourceProblem(SourceError):
    """The fetched body is not what the source should serve (one line, names the problem)."""


# --- host politeness --------------------------------------------------------------------------

_HOST_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, lease, delay = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if nxt > now then
  return nxt - now
end
if redis.call('ZCARD', KEYS[1]) >= limit then
  return 25
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
if delay > 0 then
  redis.call('SET', KEYS[2], now + delay, 'PX', delay)
end
return 0
"""


def host_keys(settings: Settings, host: str) -> tuple[str, str]:
    return settings.key("host", host, "slots"), settings.key("host", host, "next")


def slot_lease_ms(settings: Settings) -> int:
    """Longest one request may take: connect, first byte, whole body, plus slack."""
    return int((settings.http_connect_timeout + 2 * settings.http_read_timeout + 5) * 1000)


def slot_wait_s(settings: Settings) -> float:
    """How long a poll waits for its host before giving up with ``HostBusy``."""
    return max(settings.http_connect_timeout + settings.http_read_timeout,
               2 * settings.host_delay * settings.host_concurrency)


@contextlib.contextmanager
def host_slot(client: redis.Redis, settings: Settings, host: str) -> Iterator[None]:
    """Hold one of the host's request slots, started no sooner than ``host_delay`` after the
    previous request to that host from any worker."""
    slots, next_key = host_keys(settings, host)
    token = uuid.uuid4().hex
    script = client.register_script(_HOST_ACQUIRE)
    deadline = time.monotonic() + slot_wait_s(settings)
    while True:
        wait_ms = int(script(keys=[slots, next_key], args=[
            token, settings.host_concurrency, slot_lease_ms(settings),
            int(settings.host_delay * 1000)]))
        if wait_ms <= 0:
            break
        if time.monotonic() + wait_ms / 1000 > deadline:
            raise HostBusy(f"host {host}: no request slot within {slot_wait_s(settings):g}s "
                           f"(WATCHKEEPER_HOST_CONCURRENCY={settings.host_concurrency}, "
                           f"WATCHKEEPER_HOST_DELAY={settings.host_delay:g})")
        time.sleep(min(wait_ms, 1000) / 1000)
    try:
        yield
    finally:
        client.zrem(slots, token)


# --- per-source lock --------------------------------------------------------------------------

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def acquire_lock(client: redis.Redis, settings: Settings, name: str) -> str | None:
    """A token when this caller now polls ``name`` alone, else None. Expires with the task's
    hard time limit, so a killed worker's lock frees itself."""
    token = uuid.uuid4().hex
    ok = client.set(settings.key("lock", name), token, nx=True,
                    px=int(settings.task_time_limit * 1000))
    return token if ok else None


def release_lock(client: redis.Redis, settings: Settings, name: str, token: str) -> None:
    client.register_script(_RELEASE)(keys=[settings.key("lock", name)], args=[token])


# --- per-source state -------------------------------------------------------------------------

@dataclass
class SourceState:
    """The stored state of one source (all fields optional; a new source has none)."""

    etag: str = ""
    last_modified: str = ""
    next_check: float = 0.0
    errors: int = 0
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, client: redis.Redis, settings: Settings, name: str) -> SourceState:
        return cls.from_raw(client.hgetall(settings.key("src", name)))  # type: ignore[arg-type]

    @classmethod
    def from_raw(cls, raw: dict[str, str]) -> SourceState:
        return cls(etag=raw.get("etag", ""), last_modified=raw.get("last_modified", ""),
                   next_check=_float(raw.get("next_check")), errors=int(_float(raw.get("errors"))),
                   raw=raw)

    def due(self, now: float) -> bool:
        return now >= self.next_check


def state_ttl(settings: Settings, source: Source) -> int:
    """Long enough to outlive any backoff and several intervals; removed sources age out."""
    return int(max(settings.state_ttl, 2 * settings.backoff_max, 3 * source.interval))


def save_state(client: redis.Redis, settings: Settings, source: Source,
               values: dict[str, Any] | None, release_token: str | None = None,
               seen: SeenSet | None = None, stream: CappedStream | None = None,
               items: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> list[tuple[int, str]]:
    """End a poll in one round trip, in this order: dedup ``(key, entry)`` items against
    ``seen`` and append the new ones to ``stream`` (atomically, per chunk), write the state
    fields (refreshing the TTL), release the source's lock. Validators are so stored only with
    the entries they cover, and a worker dying before this call loses nothing: the next poll
    fetches the same entries again. Returns ``(index into items, stream id)`` of the new ones.
    """
    key = settings.key("src", source.name)
    pipe = client.pipeline(transaction=False)
    calls = (seen.queue_add_and_append(pipe, stream, items, counts_key=key)
             if seen is not None and stream is not None and items else 0)
    if values and not calls:
        values = {**values, "last_new": 0, "last_duplicate": 0}
    if values:
        pipe.hset(key, mapping={k: "" if v is None else str(v) for k, v in values.items()})
        pipe.expire(key, state_ttl(settings, source))
    if release_token is not None:
        pipe.eval(_RELEASE, 1, settings.key("lock", source.name), release_token)
    results = pipe.execute()
    return SeenSet.parse_add_and_append(results[:calls])


def claim(client: redis.Redis, settings: Settings, name: str) -> tuple[str | None, SourceState]:
    """Try the source's lock and read its state in one round trip."""
    token = uuid.uuid4().hex
    pipe = client.pipeline(transaction=False)
    pipe.set(settings.key("lock", name), token, nx=True, px=int(settings.task_time_limit * 1000))
    pipe.hgetall(settings.key("src", name))
    locked, raw = pipe.execute()
    return (token if locked else None), SourceState.from_raw(raw)


def backoff_delay(settings: Settings, errors: int, retry_after: float | None = None,
                  rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds until the next try after ``errors`` consecutive errors.

    Doubles from ``backoff_base`` with jitter, capped by ``backoff_max``; a server's
    Retry-After wins when given (still capped, so a source is never stopped for good).
    """
    if retry_after is not None:
        return min(settings.backoff_max, max(0.0, retry_after))
    exponent = min(max(errors, 1) - 1, 60)
    return min(settings.backoff_max, settings.backoff_base * 2.0 ** exponent * rng(*JITTER))


# --- bulk stream writes -----------------------------------------------------------------------

# --- the poll routine -------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One parsed entry: its dedup key and the fields written to the output stream."""

    key: str
    fields: dict[str, Any]


@dataclass
class Parsed:
    items: list[Item]
    bad: int = 0


class Fetcher(Protocol):
    def __call__(self, url: str, settings: Settings, redis: redis.Redis | None = None, *,
                 etag: str | None = None, last_modified: str | None = None,
                 max_bytes: int | None = None, accept: str | None = None) -> FetchResult: ...


class SourceKind(Protocol):
    """What differs between feeds and log endpoints: what to accept, how to parse, where to
    write. ``parse`` raises ``SourceProblem`` for a body that yields nothing usable."""

    accept: str

    def parse(self, source: Any, result: FetchResult) -> Parsed: ...

    def stream(self, rt: Runtime) -> CappedStream:
        """Where new entries are written."""
        ...

    def emitted(self, rt: Runtime, source: Any, written: list[tuple[str, dict[str, Any]]],
                ) -> None:
        """Called with (stream id, fields) of the entries just written."""
        ...


def seen_set(rt: Runtime, name: str) -> SeenSet:
    s = rt.settings
    return SeenSet(rt.redis, s.key("seen", name), s.max_seen, s.seen_max_age)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def poll_source(rt: Runtime, source: Source, kind: SourceKind, fetcher: Fetcher, *,
                scheduled: bool = True, show_items: bool = False) -> dict[str, Any]:
    """One poll of ``source``. Scheduled polls skip a source that is not due (backing off) or
    being polled elsewhere; ``scheduled=False`` (``watchkeeper poll``) ignores the due time but
    never the lock. Any failure is recorded as the source's error, never raised."""
    started = time.time()
    token, state = claim(rt.redis, rt.settings, source.name)
    if token is None:
        if scheduled:
            return _result(source, "skipped", started, reason="being polled by another worker")
        return _result(source, "error", started,
                       error=f"source '{source.name}': being polled by another worker")
    lock: str | None = token
    try:
        if scheduled and not state.due(started):
            return _result(source, "skipped", started, reason="not due",
                           next_check=state.next_check)
        outcome, values, items = _poll_locked(rt, source, kind, fetcher, state, started)
        new = save_state(rt.redis, rt.settings, source, values, release_token=token,
                         seen=seen_set(rt, source.name), stream=kind.stream(rt),
                         items=[(item.key, item.fields) for item in items])
        lock = None
        if outcome["status"] != "error":
            _count_new(outcome, len(new), started)
        if show_items and outcome["status"] != "error":
            fresh = {index for index, _ in new}
            outcome["items"] = [{**item.fields, "new": index in fresh}
                                for index, item in enumerate(items)]
        if new:
            kind.emitted(rt, source, [(sid, items[index].fields) for index, sid in new])
        return outcome
    finally:
        if lock is not None:
            save_state(rt.redis, rt.settings, source, None, release_token=lock)


def _poll_locked(rt: Runtime, source: Source, kind: SourceKind, fetcher: Fetcher,
                 state: SourceState, started: float,
                 ) -> tuple[dict[str, Any], dict[str, Any], list[Item]]:
    """Fetch and parse; the caller dedups and writes the items together with the state."""
    try:
        result = fetcher(source.url, rt.settings, rt.redis, etag=state.etag or None,
                         last_modified=state.last_modified or None, accept=kind.accept)
        parsed = Parsed([]) if result.not_modified else kind.parse(source, result)
    except Exception as exc:  # any failure is this source's error; others keep polling
        return (*_record_error(rt, source, state, started, exc), [])
    status = "not_modified" if result.not_modified else "ok"
    outcome = _result(source, status, started, fetched=len(parsed.items), bad=parsed.bad)
    values: dict[str, Any] = {
        "last_status": status, "last_poll": started, "last_ok": started, "errors": 0,
        "last_error": "", "last_http_status": result.status, "backoff_s": 0,
        "next_check": started + SUCCESS_RECHECK * source.interval,
        "last_fetched": outcome["fetched"], "last_bad": parsed.bad,
        "last_elapsed_s": outcome["elapsed_s"]}
    if "etag" in result.headers or not result.not_modified:
        values["etag"] = result.headers.get("etag", "")
    if "last-modified" in result.headers or not result.not_modified:
        values["last_modified"] = result.headers.get("last-modified", "")
    return outcome, values, parsed.items


def _count_new(outcome: dict[str, Any], new: int, started: float) -> None:
    """Complete a successful poll's outcome with how many items were new (the state got the
    same counts from the dedup-and-write call)."""
    outcome["new"], outcome["duplicate"] = new, outcome["fetched"] - new
    outcome["elapsed_s"] = round(time.time() - started, 3)


def _record_error(rt: Runtime, source: Source, state: SourceState, started: float,
                  exc: Exception) -> tuple[dict[str, Any], dict[str, Any]]:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, SourceError):
        message = f"{type(exc).__name__}: {message}"
    errors = state.errors + 1
    retry_after = getattr(exc, "retry_after", None)
    delay = backoff_delay(rt.settings, errors, retry_after)
    log.warning("[poll] source %r: %s (error %d, next try in %.0fs)", source.name, message,
                errors, delay)
    now = time.time()
    values = {
        "last_status": "error", "last_poll": started, "errors": errors,
        "last_error": message[:500], "last_error_at": now,
        "last_http_status": getattr(exc, "status", None), "backoff_s": round(delay, 3),
        "retry_after": retry_after, "next_check": now + delay,
        "last_fetched": 0, "last_new": 0, "last_duplicate": 0, "last_bad": 0}
    return _result(source, "error", started, error=message, next_check=now + delay), values


def _result(source: Source, status: str, started: float, *, fetched: int = 0, new: int = 0,
            bad: int = 0, error: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"source": source.name, "status": status, "fetched": fetched, "new": new,
            "duplicate": fetched - new, "bad": bad, "error": error,
            "elapsed_s": round(time.time() - started, 3), **extra}


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def poll_status(rt: Runtime, source: Source) -> dict[str, Any]:
    """What ``status`` adds per polled source: whether a poll runs now, when the next is due,
    and the politeness slots in use for its host (every key here expires by itself)."""
    now = time.time()
    state = SourceState.load(rt.redis, rt.settings, source.name)
    slots, _ = host_keys(rt.settings, source.host)
    return {
        "polling": bool(rt.redis.exists(rt.settings.key("lock", source.name))),
        "due": state.due(now),
        "next_check_in_s": round(max(0.0, state.next_check - now), 1),
        "host": {"key": slots, "in_flight": int(rt.redis.zcount(slots, now * 1000, "+inf")),
                 "cap": rt.settings.host_concurrency},
    }
