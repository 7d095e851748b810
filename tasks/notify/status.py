"""The ``notify`` section of ``watchkeeper status`` (and its Prometheus metrics).

Per sink: ``delivered`` / ``retried`` / ``failed`` (dead-lettered) message counts, ``missed``
(entries the streams' caps trimmed before the sink read them: counted ones, plus — while the
sink is stopped — the gap between its position and the oldest entry still held), ``lag``
(entries written and not yet read), the outbox against its cap with its oldest message's age,
dead letters against their cap, per stream and per destination figures, and the last delivery.
Reads Redis only, so it works from any machine while workers run or not — and without the
notification secrets: a destination whose variable is not set here is shown by the labels the
delivery process recorded (``dest:<id>`` in the sink's state), or as ``env:NAME (secret not set
here)`` before it has.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, cast

from tasks.notify.config import UNSET, Sink, notify_config
from tasks.notify.outbox import DEST_FIELD, sink_keys
from tasks.notify.streams import as_int, first_entry, seq_key
from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section
from workers.core.text import ago, duration, table

QUEUE = "notify"
"""The broker queue of delivery runs (``tasks.notify.*``), consumed by the delivery worker."""
QUEUE_WARN = 10
"""Runs waiting in it beyond which ``status`` asks whether a delivery worker runs — as it does
when the oldest waiting run is past its expiry (a running worker drops those at once; beat adds
no run while one waits, so without a worker the queue stays at a run or two)."""

COUNTERS = (
    "delivered",
    "retried",
    "failed",
    "queued",
    "filtered",
    "truncated",
    "template_missing",
    "evicted",
    "dead_dropped",
    "requeued",
    "digests",
)


def stream_position(rt: Runtime, sink: Sink, stream: str, state: dict[str, str]) -> dict[str, Any]:
    """Where the sink is on one stream, by ``seq``: unread entries and trimmed-unread ones."""
    k = sink_keys(rt.settings, sink)
    skey = k.streams[sink.streams.index(stream)]
    last = as_int(rt.redis.get(seq_key(rt.settings, stream))) or 0
    position = as_int(state.get(f"pos:{stream}"))
    first = first_entry(rt.redis, skey)
    first_seq = as_int(first[1].get("seq")) if first else None
    counted = as_int(state.get(f"missed:{stream}")) or 0
    if position is None:  # the sink has not read this stream yet
        return {"position": None, "last_seq": last, "lag": 0, "missed": counted}
    trimmed_unread = max(0, first_seq - position - 1) if first_seq is not None else 0
    read_up_to = max(position, (first_seq - 1) if first_seq is not None else position)
    return {
        "position": position,
        "last_seq": last,
        "first_seq": first_seq,
        "lag": max(0, last - read_up_to),
        "missed": counted + trimmed_unread,
        "missed_not_yet_counted": trimmed_unread,
    }


def shown_destinations(sink: Sink, state: dict[str, str]) -> list[tuple[str, str]]:
    """(id, label) of each destination as this process can show it: a destination whose
    variable is not set here stands for the ones the delivery process recorded under it."""
    recorded: dict[str, list[tuple[str, str]]] = {}
    for name, value in state.items():
        if name.startswith(DEST_FIELD):
            try:
                info = json.loads(value)
                recorded.setdefault(str(info["raw"]), []).append(
                    (name[len(DEST_FIELD) :], f"{info['label']} ({UNSET})")
                )
            except (ValueError, KeyError, TypeError):
                continue
    rows: list[tuple[str, str]] = []
    for d in sink.destinations:
        rows += (d.unset and sorted(recorded.get(d.raw, []), key=lambda r: r[1])) or [
            (d.id, d.label)
        ]
    return rows


def sink_status(rt: Runtime, sink: Sink, now: float) -> dict[str, Any]:
    s = rt.settings
    k = sink_keys(s, sink)
    state = cast(dict[str, str], rt.redis.hgetall(k.state))
    shown = shown_destinations(sink, state)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hlen(k.outbox)
    pipe.zrange(k.queue, 0, 0, withscores=True)
    pipe.llen(k.dead)
    pipe.lrange(k.dead, 0, 2)
    pipe.llen(k.log)
    pipe.lindex(k.log, 0)
    pipe.llen(k.digest)
    for dest_id, _ in shown:
        pipe.zcard(keys.NOTIFY_DUE.key(s, sink.name, dest_id))
    outbox, oldest, dead, latest_dead, log_size, last_log, digest, *due_sizes = pipe.execute()
    streams = {st: stream_position(rt, sink, st, state) for st in sink.streams}
    counts = {name: int(state.get(name, 0)) for name in COUNTERS}
    out: dict[str, Any] = {
        **counts,
        "missed": sum(p["missed"] for p in streams.values()),
        "lag": sum(p["lag"] for p in streams.values()),
        "outbox": {
            "size": int(outbox),
            "cap": s.notify_max_outbox,
            "oldest_age_s": round(now - float(oldest[0][1]), 1) if oldest else 0.0,
        },
        "dead_letters": {
            "size": int(dead),
            "cap": s.notify_max_dead_letters,
            "latest": [_short_dead(json.loads(r), dict(shown)) for r in latest_dead],
        },
        "delivery_log": {"size": int(log_size), "cap": s.notify_log_size},
        "last_delivery": json.loads(last_log) if last_log else None,
        "streams": streams,
        "destinations": {
            label: {
                "delivered": int(state.get(f"delivered:{dest_id}", 0)),
                "retried": int(state.get(f"retried:{dest_id}", 0)),
                "failed": int(state.get(f"failed:{dest_id}", 0)),
                "owed": int(size),
            }
            for (dest_id, label), size in zip(shown, due_sizes, strict=True)
        },
    }
    if sink.digest:
        out["digest"] = {
            "period_s": sink.digest,
            "collected": int(state.get("digest_items", 0)),
            "lines": int(digest),
            "started": float(state["digest_start"]) if "digest_start" in state else None,
        }
    return out


def _short_dead(row: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "ref": row.get("ref"),
        "destination": labels.get(str(row.get("dest")), row.get("dest")),
        "title": str(row.get("title", ""))[:80],
        "attempts": row.get("attempts"),
        "reason": row.get("reason"),
        "at": row.get("at"),
    }


def notify_status(rt: Runtime) -> dict[str, Any]:
    now = time.time()
    sinks = notify_config(rt.config()).sinks
    health_key = keys.NOTIFY_HEALTH.key(rt.settings)
    down = {str(k): json.loads(v) for k, v in rt.redis.hgetall(health_key).items()}
    return {
        "sinks": {sink.name: sink_status(rt, sink, now) for sink in sinks},
        "sources_down": down,
        # runs waiting for the delivery worker: a few at most while one consumes the queue
        "queue": queue_state(rt),
    }


def queue_state(rt: Runtime) -> dict[str, Any]:
    """The ``notify`` queue's length, and whether its oldest message expired unconsumed."""
    pipe = rt.redis.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.lindex(QUEUE, -1)  # kombu pushes on the left and takes from the right
    pipe.time()
    length, oldest, (seconds, _micros) = pipe.execute()
    return {"name": QUEUE, "length": int(length), "expired": _expired(oldest, seconds)}


def _expired(message: Any, now: float) -> bool:
    try:
        expires = json.loads(message)["headers"]["expires"]
        return bool(expires) and datetime.fromisoformat(expires).timestamp() < now
    except (TypeError, ValueError, KeyError):
        return False


def render(section: dict[str, Any]) -> list[str]:
    sinks = section.get("sinks", {})
    lines = table(
        ["sink", "delivered", "retried", "failed", "dead", "missed", "lag", "outbox", "last"],
        [
            [
                name,
                s.get("delivered"),
                s.get("retried"),
                s.get("failed"),
                f"{s['dead_letters']['size']}/{s['dead_letters']['cap']}",
                s.get("missed"),
                s.get("lag"),
                f"{s['outbox']['size']}/{s['outbox']['cap']}"
                + (f" ({duration(s['outbox']['oldest_age_s'])})" if s["outbox"]["size"] else ""),
                _last(s.get("last_delivery")),
            ]
            for name, s in sinks.items()
        ],
    )
    for name, s in sinks.items():
        for label, d in s.get("destinations", {}).items():
            lines.append(
                f"  {name} → {label}: delivered {d['delivered']}, retried {d['retried']},"
                f" failed {d['failed']}, owed {d['owed']}"
            )
    down = section.get("sources_down") or {}
    if down:
        lines.append("  sources down: " + ", ".join(sorted(down)))
    queue = section.get("queue") or {}
    if queue.get("length", 0) > QUEUE_WARN or queue.get("expired"):
        lines.append(
            f"  {queue['length']} delivery runs wait in queue '{queue['name']}'"
            + (" past their expiry" if queue.get("expired") else "")
            + f": is a delivery worker running? (celery -A workers worker -Q {queue['name']})"
        )
    return lines


def _last(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "never"
    return f"{entry.get('outcome')} {ago(entry.get('at'))}"


SECTION = declare_section(
    StatusSection("notify", notify_status, render, declared_metrics("tasks.notify", "notify"))
)
