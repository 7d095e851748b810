"""The location buffer in Redis: bounded, shared by every worker, exactly-once results.

Every structure is a key declared in ``workers/core/keys.toml`` with a cap, and an alert's life
is one atomic handover after another, timed by Redis's clock (every script takes TIME):

* ``loc:alerts`` (HASH id → JSON title, summary, source, coordinates) — what an alert awaiting
  a location needs; ``finish`` deletes its field in the step that writes the result, so it
  holds as many alerts as there are markers.
* ``loc:queued`` (ZSET id → queued at) — the markers: every alert not yet located, written in
  the same step that hands the alert over (a feed poll's dedup-and-write, or ``enqueue``).
  The stale-marker expiry (MOONSHOT_MAX_ALERT_BATCH_AGE) falls back whatever nobody finished.
* ``loc:buffer`` (ZSET id → queued at) — alerts waiting for a batch, capped at
  MOONSHOT_MAX_BUFFER_SIZE in the call that grows it; the evicted are returned to the caller,
  which falls them back (reason ``buffer_full``).
* ``loc:lease`` (ZSET batch id → deadline) and ``loc:batches`` (HASH batch id → JSON ids) — a
  claim moves up to WATCHKEEPER_LOCATION_BATCH ids from the buffer into a batch in one call,
  idempotent per batch id, so two workers never get the same alert and a retried call never
  claims twice; an expired lease returns its unlocated ids.
* ``loc:retries``, ``loc:failed``, ``loc:stats``, ``loc:last_error`` — bounded by the leases,
  a cap, a fixed field set and a TTL; cleanup drops entries whose batch is gone.
* ``stream:locations`` — one capped entry per located alert (``watchkeeper tail locations``).

None of the capped sets has a TTL: workers down for hours must not lose waiting alerts.
Exactly once: ``finish`` removes the marker and writes the result only if that removal
succeeded, in one call; whoever gets there first locates the alert, everyone else skips it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tasks.locations.model import Location
from workers.core import keys
from workers.core.settings import Settings
from workers.store.lists import CappedList
from workers.store.scripts import Script
from workers.store.seen import Handoff
from workers.store.streams import SCHEMA

TITLE_MAX = 500
SUMMARY_MAX = 2000
FAILED_BATCHES_CAP = 100
IDS_PER_CALL = 1000
"""Alert ids per script call or pipeline."""

_ENQUEUE = Script("tasks.locations", "enqueue")
_CLAIM = Script("tasks.locations", "claim")
_REAP = Script("tasks.locations", "reap")
_RELEASE = Script("tasks.locations", "release")
_EXTEND = Script("tasks.locations", "extend")
_FINISH = Script("tasks.locations", "finish", include=("workers.store:stream_budget",))
REAP_LIMIT = 200
"""Expired leases returned per call."""


class LocKeys:
    """Every key the location stage writes, named as ``workers/core/keys.toml`` declares them
    (``loc:*`` and the ``locations`` stream)."""

    buffer: str
    queued: str
    alerts: str
    lease: str
    batches: str
    stats: str
    retries: str
    failed: str
    last_error: str
    flush_flag: str
    stream: str
    stream_seq: str
    stream_ledger: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for name in (
            "buffer",
            "queued",
            "alerts",
            "lease",
            "batches",
            "stats",
            "retries",
            "failed",
            "last_error",
            "flush_flag",
        ):
            setattr(self, name, getattr(keys, f"LOC_{name.upper()}").key(settings))
        self.stream = keys.STREAM.key(settings, "locations")
        self.stream_seq = keys.STREAM_SEQ.key(settings, "locations")
        self.stream_ledger = keys.STREAM_BYTES.key(settings, "locations")


@dataclass(frozen=True)
class Pending:
    """An alert still awaiting a location: its text, and the point its feed gave, if any."""

    id: str
    text: str
    coordinates: tuple[float, float] | None = None


def payload(fields: dict[str, Any]) -> str:
    """What an alert awaiting a location keeps (``loc:alerts``): bounded text, coordinates."""
    return json.dumps(
        {
            "title": _text(fields.get("title"), TITLE_MAX),
            "summary": _text(fields.get("summary"), SUMMARY_MAX),
            "source": _text(fields.get("source"), 200),
            "coordinates": coordinates_of(fields),
        },
        ensure_ascii=False,
    )


def coordinates_of(fields: dict[str, Any]) -> tuple[float, float] | None:
    coords = fields.get("coordinates")
    if not isinstance(coords, dict):
        return None
    try:
        return float(coords["lat"]), float(coords["lon"])
    except (KeyError, TypeError, ValueError):
        return None


def redis_now(client: redis.Redis) -> float:
    """Redis's clock, shared by every worker (one round trip; not on hot paths)."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


class LocationStore:
    """Plain operations on the location structures; one instance per call is cheap."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings, self.keys = client, settings, LocKeys(settings)

    def handoff(self) -> Handoff:
        """The buffer as a hand-off queue for a feed poll's atomic dedup-and-write."""
        k = self.keys
        return Handoff(k.buffer, k.queued, k.alerts, self.settings.moonshot_max_buffer_size)

    # --- writes -------------------------------------------------------------------------
    def enqueue(self, alerts: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        """Store and buffer alerts; return ids evicted to make room (oldest first)."""
        evicted: list[str] = []
        k = self.keys
        for start in range(0, len(alerts), IDS_PER_CALL):
            args: list[Any] = [self.settings.moonshot_max_buffer_size]
            for alert_id, fields in alerts[start : start + IDS_PER_CALL]:
                args += [alert_id, payload(fields)]
            evicted += [str(i) for i in _ENQUEUE(self.client, [k.buffer, k.queued, k.alerts], args)]
        return evicted

    def finish(self, results: Iterable[tuple[str, Location, str, str]]) -> list[str]:
        """Record (id, location, method, fallback reason) for ids still unlocated.

        Returns the ids this call located; ids already located by someone else are skipped.
        """
        rows = list(results)
        done: list[str] = []
        k = self.keys
        for start in range(0, len(rows), IDS_PER_CALL):
            s = self.settings
            args: list[Any] = [
                s.stream_cap("locations"),
                s.state_ttl,
                SCHEMA,
                s.max_locations_bytes,
            ]
            for alert_id, loc, method, reason in rows[start : start + IDS_PER_CALL]:
                args += [alert_id, json.dumps(loc.as_dict()), method, reason]
            keys_ = [k.queued, k.buffer, k.stats, k.stream, k.stream_seq, k.alerts]
            keys_.append(k.stream_ledger)
            done += [str(i) for i in _FINISH(self.client, keys_, args)]
        return done

    def claim(
        self, n: int | None = None, lease: float | None = None, batch_id: str | None = None
    ) -> tuple[str, list[str]]:
        """Atomically move up to ``n`` oldest buffered ids into a new leased batch (the same
        batch again when ``batch_id`` was claimed already)."""
        lease = self.settings.location_lease if lease is None else lease
        batch_id = batch_id or uuid.uuid4().hex[:16]
        k = self.keys
        ids = _CLAIM(
            self.client,
            [k.buffer, k.lease, k.batches],
            [n or self.settings.location_batch, lease, batch_id],
        )
        return batch_id, [str(i) for i in ids]

    def reap(self) -> tuple[int, int, list[str]]:
        """Return expired leases' unlocated ids to the buffer: (batches, returned, evicted)."""
        k = self.keys
        out = _REAP(
            self.client,
            [k.lease, k.buffer, k.queued, k.retries, k.batches],
            [REAP_LIMIT, self.settings.moonshot_max_buffer_size],
        )
        return int(out[0]), int(out[1]), [str(i) for i in out[2:]]

    def members(self, batch_id: str) -> list[str] | None:
        raw = self.client.hget(self.keys.batches, batch_id)
        return None if raw is None else [str(i) for i in json.loads(str(raw))]

    def extend(self, batch_id: str, ids: Sequence[str], seconds: float) -> bool:
        """Keep a batch leased for ``seconds`` more, now holding ``ids``; False if reaped."""
        return bool(
            _EXTEND(
                self.client,
                [self.keys.lease, self.keys.batches],
                [batch_id, seconds, json.dumps(list(ids))],
            )
        )

    def release(self, batch_id: str, outcome: str = "") -> bool:
        """A batch is done: drop its lease, members and retries; count ``outcome`` once."""
        k = self.keys
        return bool(
            _RELEASE(self.client, [k.lease, k.batches, k.retries, k.stats], [batch_id, outcome])
        )

    def add_retry(self, batch_id: str) -> int:
        return int(self.client.hincrby(self.keys.retries, batch_id, 1))

    def count(self, name: str, by: int = 1) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats, name, by)
        pipe.expire(self.keys.stats, self.settings.state_ttl)
        pipe.execute()

    def record_failed(self, batch_id: str, size: int, reason: str) -> None:
        CappedList(self.client, self.keys.failed, FAILED_BATCHES_CAP, self.settings.state_ttl).push(
            {"batch": batch_id, "alerts": size, "reason": reason, "at": redis_now(self.client)}
        )

    def record_error(self, message: str) -> None:
        self.client.set(
            self.keys.last_error,
            json.dumps({"error": message, "at": redis_now(self.client)}),
            ex=self.settings.state_ttl,
        )

    # --- reads --------------------------------------------------------------------------
    def pending(self, ids: Sequence[str]) -> list[Pending]:
        """The ids not yet located, in input order, with what locating them needs."""
        pipe = self.client.pipeline(transaction=False)
        for alert_id in ids:
            pipe.zscore(self.keys.queued, alert_id)
            pipe.hget(self.keys.alerts, alert_id)
        replies = pipe.execute()
        out = []
        for i, alert_id in enumerate(ids):
            if replies[2 * i] is None:
                continue
            try:
                data = json.loads(replies[2 * i + 1] or "{}")
            except ValueError:
                data = {}
            text = f"{data.get('title') or ''}\n{data.get('summary') or ''}".strip()
            point = data.get("coordinates")
            out.append(Pending(alert_id, text, tuple(point) if point else None))
        return out

    def older_than(self, key: str, age: float, limit: int = IDS_PER_CALL) -> list[str]:
        """Members of ``key`` queued more than ``age`` seconds ago, on Redis's clock."""
        cutoff = redis_now(self.client) - age
        found = self.client.zrangebyscore(key, "-inf", f"({cutoff}", start=0, num=limit)
        return [str(i) for i in found]


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]
