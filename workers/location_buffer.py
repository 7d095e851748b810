"""The location buffer in Redis: bounded, shared by every worker, exactly-once results.

The seed kept its batch buffer, timestamps, retry counters and pending results in process memory;
a failing batch step leaked all four. Here every structure is a Redis key under the prefix with
a cap or a TTL, and an alert's life is one atomic handover after another:

* ``alert:{id}`` (HASH, TTL) — title, summary, source and the ``batch_queued_at`` marker, only
  while the alert waits for a location: ``finish`` deletes it in the step that writes the
  result, so the number of alert hashes is bounded by the unlocated alerts (buffer cap plus
  leased batches), not by the alert rate times a TTL.
* ``loc:queued`` (ZSET id → queued-at) — index of the markers: every alert not yet located.
  Bounded by the buffer cap plus the leased batches; the stale-marker expiry reads it.
* ``loc:buffer`` (ZSET id → queued-at) — alerts waiting for a batch, capped at
  MOONSHOT_MAX_BUFFER_SIZE inside the same Lua call that grows it; the evicted are returned to
  the caller, which gives them the fallback location (reason ``buffer_full``).
* ``loc:lease`` (ZSET batch id → deadline) and ``loc:batch:{id}`` (JSON id list, TTL) — a claim
  moves up to WATCHKEEPER_LOCATION_BATCH ids from the buffer into a batch in one Lua call, so
  two workers never get the same alert; an expired lease returns its unlocated ids.
* ``loc:retries`` (HASH batch id → attempts), ``loc:failed`` (capped list of failed batches),
  ``loc:stats`` (HASH of counters), ``loc:last_error`` (TTL) — bounded by the leases, a cap,
  a fixed field set and a TTL; cleanup drops entries whose batch is gone.
* ``stream:locations`` — one capped entry per located alert, which ``watchkeeper tail
  locations`` shows.

Results: appended to the capped ``locations`` stream (``watchkeeper tail locations``) with the
alert's stream id, source and title, because entries of the ``alerts`` stream cannot be edited.

Exactly once: ``finish`` removes the id from ``loc:queued`` and writes the result only if that
removal succeeded, in one Lua call. Whoever gets there first — a batch, a fallback after
retries, an eviction, a stale-marker expiry — locates the alert; everyone else skips it. Times
are the caller's clock (``now`` arguments, which tests also use to age items).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.bounded import CappedList
from workers.location_model import Location
from workers.settings import Settings

TITLE_MAX = 500
SUMMARY_MAX = 2000
FAILED_BATCHES_CAP = 100
CHUNK = 1000

_EVICT = """
local function evict(buffer, cap)
  local n = redis.call('ZCARD', buffer)
  if n <= cap then return {} end
  local old = redis.call('ZRANGE', buffer, 0, n - cap - 1)
  redis.call('ZREMRANGEBYRANK', buffer, 0, n - cap - 1)
  return old
end
"""

# KEYS: buffer, queued. ARGV: now, cap, ttl, ids... → evicted ids
_ENQUEUE = _EVICT + """
local now = tonumber(ARGV[1])
for i = 4, #ARGV do
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[1], now, ARGV[i])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return evict(KEYS[1], tonumber(ARGV[2]))
"""

# KEYS: buffer, lease, batch key. ARGV: n, deadline, batch id, batch ttl → claimed ids
_CLAIM = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return ids end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], cjson.encode(ids), 'EX', ARGV[4])
return ids
"""

# KEYS: lease, buffer, queued, retries. ARGV: now, batch key prefix, cap
# → {expired batches, returned ids, evicted ids...}. Batch keys are derived from the lease
# members (single-instance Redis; watchkeeper does not run on Redis Cluster).
_REAP = _EVICT + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
local returned = 0
for _, b in ipairs(expired) do
  local raw = redis.call('GET', ARGV[2] .. b)
  if raw then
    for _, id in ipairs(cjson.decode(raw)) do
      local q = redis.call('ZSCORE', KEYS[3], id)
      if q then
        redis.call('ZADD', KEYS[2], q, id)
        returned = returned + 1
      end
    end
    redis.call('DEL', ARGV[2] .. b)
  end
  redis.call('ZREM', KEYS[1], b)
  redis.call('HDEL', KEYS[4], b)
end
local out = {#expired, returned}
for _, id in ipairs(evict(KEYS[2], tonumber(ARGV[3]))) do out[#out + 1] = id end
return out
"""

# KEYS: queued, buffer, stats, stream. ARGV: now, stream cap, alert prefix, alert ttl,
# stats ttl, then (id, location json, method, reason) quadruples → ids located by this call
_FINISH = """
local done = {}
for i = 6, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    local k = ARGV[3] .. id
    local meta = redis.call('HMGET', k, 'source', 'title')
    redis.call('DEL', k)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'alert', id,
               'source', meta[1] or '', 'title', meta[2] or '', 'location', ARGV[i + 1],
               'location_method', ARGV[i + 2], 'fallback_reason', ARGV[i + 3],
               'located_at', ARGV[1])
    redis.call('HINCRBY', KEYS[3], 'located:' .. ARGV[i + 2], 1)
    if ARGV[i + 3] ~= '' then
      redis.call('HINCRBY', KEYS[3], 'fallback:' .. ARGV[i + 3], 1)
    end
    done[#done + 1] = id
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[5])
return done
"""


@dataclass(frozen=True)
class LocKeys:
    """Every key this module writes, derived from the settings' prefix."""

    settings: Settings

    def alert(self, alert_id: str) -> str:
        return self.settings.key("alert", alert_id)

    @property
    def alert_prefix(self) -> str:
        return self.settings.key("alert", "")

    def batch(self, batch_id: str) -> str:
        return self.settings.key("loc", "batch", batch_id)

    @property
    def batch_prefix(self) -> str:
        return self.settings.key("loc", "batch", "")

    def __getattr__(self, name: str) -> str:
        if name in ("buffer", "queued", "lease", "stats", "retries", "failed", "last_error",
                    "flush_flag"):
            return self.settings.key("loc", name)
        if name == "stream":
            return self.settings.key("stream", "locations")
        raise AttributeError(name)


def alert_ttl(settings: Settings) -> int:
    """Alert hashes outlive the marker age plus one cleanup period, so expiry still sees them."""
    return settings.moonshot_max_alert_batch_age + settings.moonshot_cleanup_interval


def lease_ttl(settings: Settings) -> int:
    """Batch member lists outlive their lease so the reaper can still return the ids."""
    return 2 * settings.location_lease + 60


class LocationStore:
    """Plain operations on the location structures; one instance per call is cheap."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings, self.keys = client, settings, LocKeys(settings)

    # --- writes -------------------------------------------------------------------------
    def enqueue(self, alerts: Sequence[tuple[str, dict[str, Any]]],
                now: float | None = None) -> list[str]:
        """Store and buffer alerts; return ids evicted to make room (oldest first)."""
        now = time.time() if now is None else now
        ttl = alert_ttl(self.settings)
        evicted: list[str] = []
        for start in range(0, len(alerts), CHUNK):
            chunk = alerts[start:start + CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for alert_id, fields in chunk:
                key = self.keys.alert(alert_id)
                pipe.hset(key, mapping={
                    "title": _text(fields.get("title"), TITLE_MAX),
                    "summary": _text(fields.get("summary"), SUMMARY_MAX),
                    "source": _text(fields.get("source"), 200),
                    "batch_queued_at": repr(now)})
                pipe.expire(key, ttl)
            pipe.execute()
            evicted += self._script(_ENQUEUE, [self.keys.buffer, self.keys.queued],
                                    [now, self.settings.moonshot_max_buffer_size,
                                     ttl, *(a for a, _ in chunk)])
        return evicted

    def write_feed_locations(self, alerts: Sequence[tuple[str, dict[str, Any]]],
                             now: float | None = None) -> list[str]:
        """Alerts whose feed gave coordinates: located at once, method "feed", no batch.

        They pass through the marker index for an instant so ``finish`` stays the one writer of
        results, counters and stream entries.
        """
        now = time.time() if now is None else now
        pipe = self.client.pipeline(transaction=False)
        rows = []
        for alert_id, fields in alerts:
            coords = fields["coordinates"]
            self.store_text(pipe, alert_id, fields)
            pipe.zadd(self.keys.queued, {alert_id: now}, nx=True)
            rows.append((alert_id, Location("", "", "", float(coords["lat"]),
                                            float(coords["lon"]), "point"), "feed", ""))
        pipe.execute()
        return self.finish(rows, now=now)

    def store_text(self, pipe: Any, alert_id: str, fields: dict[str, Any]) -> None:
        key = self.keys.alert(alert_id)
        pipe.hset(key, mapping={"title": _text(fields.get("title"), TITLE_MAX),
                                "summary": _text(fields.get("summary"), SUMMARY_MAX),
                                "source": _text(fields.get("source"), 200)})
        pipe.expire(key, alert_ttl(self.settings))

    def finish(self, results: Iterable[tuple[str, Location, str, str]],
               now: float | None = None) -> list[str]:
        """Record (id, location, method, fallback reason) for ids still unlocated.

        Returns the ids this call located; ids already located by someone else are skipped.
        """
        now = time.time() if now is None else now
        rows = list(results)
        done: list[str] = []
        for start in range(0, len(rows), CHUNK):
            args: list[Any] = [now, self.settings.max_alerts, self.keys.alert_prefix,
                               alert_ttl(self.settings), self.settings.state_ttl]
            for alert_id, loc, method, reason in rows[start:start + CHUNK]:
                args += [alert_id, json.dumps(loc.as_dict()), method, reason]
            done += self._script(_FINISH, [self.keys.queued, self.keys.buffer,
                                           self.keys.stats, self.keys.stream], args)
        return done

    def claim(self, n: int | None = None, now: float | None = None,
              lease: float | None = None) -> tuple[str, list[str]]:
        """Atomically move up to ``n`` oldest buffered ids into a new leased batch."""
        now = time.time() if now is None else now
        lease = self.settings.location_lease if lease is None else lease
        batch_id = uuid.uuid4().hex[:16]
        ids = self._script(_CLAIM, [self.keys.buffer, self.keys.lease, self.keys.batch(batch_id)],
                           [n or self.settings.location_batch, now + lease, batch_id,
                            lease_ttl(self.settings)])
        return batch_id, ids

    def reap(self, now: float | None = None) -> tuple[int, int, list[str]]:
        """Return expired leases' unlocated ids to the buffer: (batches, returned, evicted)."""
        now = time.time() if now is None else now
        out = self._script(_REAP, [self.keys.lease, self.keys.buffer, self.keys.queued,
                                   self.keys.retries],
                           [now, self.keys.batch_prefix, self.settings.moonshot_max_buffer_size])
        return int(out[0]), int(out[1]), [str(i) for i in out[2:]]

    def members(self, batch_id: str) -> list[str] | None:
        raw = self.client.get(self.keys.batch(batch_id))
        return None if raw is None else [str(i) for i in json.loads(str(raw))]

    def set_members(self, batch_id: str, ids: Sequence[str]) -> None:
        self.client.set(self.keys.batch(batch_id), json.dumps(list(ids)),
                        ex=lease_ttl(self.settings))

    def extend_lease(self, batch_id: str, until: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.lease, {batch_id: until}, xx=True)
        pipe.expire(self.keys.batch(batch_id), int(until - time.time()) + lease_ttl(
            self.settings))
        pipe.execute()

    def release(self, batch_id: str) -> None:
        """A batch is done (located or fallen back): drop its lease, members and retries."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.lease, batch_id)
        pipe.delete(self.keys.batch(batch_id))
        pipe.hdel(self.keys.retries, batch_id)
        pipe.execute()

    def add_retry(self, batch_id: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.keys.retries, batch_id, 1)
        pipe.expire(self.keys.retries, lease_ttl(self.settings) + self.settings.state_ttl)
        return int(pipe.execute()[0])

    def count(self, name: str, by: int = 1) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats, name, by)
        pipe.expire(self.keys.stats, self.settings.state_ttl)
        pipe.execute()

    def record_failed(self, batch_id: str, size: int, reason: str, now: float) -> None:
        CappedList(self.client, self.keys.failed, FAILED_BATCHES_CAP,
                   self.settings.state_ttl).push(
            {"batch": batch_id, "alerts": size, "reason": reason, "at": now})

    def record_error(self, message: str, now: float) -> None:
        self.client.set(self.keys.last_error, json.dumps({"error": message, "at": now}),
                        ex=self.settings.state_ttl)

    # --- reads --------------------------------------------------------------------------
    def pending(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, title + summary) for the ids not yet located, in input order."""
        pipe = self.client.pipeline(transaction=False)
        for alert_id in ids:
            pipe.zscore(self.keys.queued, alert_id)
            pipe.hmget(self.keys.alert(alert_id), "title", "summary")
        replies = pipe.execute()
        out = []
        for i, alert_id in enumerate(ids):
            if replies[2 * i] is not None:
                title, summary = replies[2 * i + 1]
                out.append((alert_id, f"{title or ''}\n{summary or ''}".strip()))
        return out

    def older_than(self, key: str, cutoff: float, limit: int = CHUNK) -> list[str]:
        return [str(i) for i in self.client.zrangebyscore(key, "-inf", f"({cutoff}",
                                                          start=0, num=limit)]

    def _script(self, source: str, keys: list[str], args: list[Any]) -> list[Any]:
        return list(self.client.register_script(source)(keys=keys, args=args))


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]
