"""The ``sources`` status section: per source in the registry, its state, seen-set and
politeness.

One pipeline reads every source shown (state hash, seen-set size, lock, host slots): all of
them up to ``WATCHKEEPER_STATUS_SOURCES``, past that the ones due earliest (``shown``), so
status stays quick with a million sources. A source's URL is shown with its credentials
masked, its owner (``file:<path>``, ``cli``, ``opml``, ``api``) beside it; its request profile
only by names (headers, cookies, ``env:NAME`` of its credentials), never a value.
``next_check_reason`` says why the next check is when it is (``interval``, ``backoff``,
``retry-after``, ``cache-control max-age=…``, ``ttl …``, ``skipHours``, …).
"""

from __future__ import annotations

import time
from typing import Any

from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.redact import redact_url
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.core.sources_file import Source
from workers.core.status_sections import StatusSection, declare_section
from workers.core.text import ago, duration, table
from workers.polling.dispatch import queued_key
from workers.polling.freshness import bounds
from workers.polling.kinds import KINDS
from workers.polling.politeness import host_keys
from workers.polling.state import SourceState, as_float


def shown(rt: Runtime) -> tuple[list[Source], dict[str, str]]:
    """The sources status and the dashboard show, with their owners: every source while the
    registry holds at most ``WATCHKEEPER_STATUS_SOURCES``; past that the ones due earliest —
    the most overdue first — read from beat's due set (one ``ZRANGE``, one ``HMGET``), so
    neither reads, nor builds, a million sources (``GET /api/v1/sources`` pages through all)."""
    s = rt.settings
    if rt.sources.meta().size <= s.status_sources:
        view = rt.sources.view()
        owners = {name: d.owner for name, d in view.definitions.items()}
        return view.sources(), owners
    entries = rt.redis.zrange(keys.BEAT_DUE.key(s), 0, 2 * s.status_sources)
    names = [
        name for kind, _, name in (str(e).partition(":") for e in entries) if kind in KINDS and name
    ][: s.status_sources]
    definitions = rt.sources.definitions(names)
    built = rt.sources.get_many(names)
    sources = [src for name in names if (src := built.get(name)) is not None]
    owners = {name: d.owner for name, d in definitions.items() if d is not None}
    return sources, owners


def sources_section(rt: Runtime) -> dict[str, Any]:
    s = rt.settings
    sources, owners = shown(rt)
    now = time.time()
    pipe = rt.redis.pipeline(transaction=False)
    for source in sources:
        slots, _ = host_keys(s, source.host)
        pipe.hgetall(keys.SOURCE_STATE.key(s, source.name))
        pipe.zcard(keys.SEEN.key(s, source.name))
        pipe.exists(keys.SOURCE_LOCK.key(s, source.name))
        pipe.zcount(slots, now * 1000, "+inf")
        pipe.exists(queued_key(s, source.kind, source.name))
    replies = pipe.execute()
    out: dict[str, Any] = {}
    for i, source in enumerate(sources):
        raw, seen, locked, in_flight, queued = replies[5 * i : 5 * i + 5]
        state = SourceState.from_raw(raw)
        low, high = bounds(s, source)
        out[source.name] = {
            "kind": source.kind,
            "owner": owners.get(source.name),
            "url": redact_url(source.url),
            "interval_s": source.interval,
            "interval_min_s": low,
            "interval_max_s": high,
            "honour_cache": source.honour_cache,
            "request": source.request.summary(),
            "state": raw,
            "seen": seen_size(s, source.name, int(seen), raw),
            "polling": bool(locked),
            "queued": bool(queued),
            "paused": state.paused,
            "due": state.due(now),
            "next_check_in_s": round(max(0.0, state.next_check - now), 1),
            "next_check_reason": raw.get("next_check_reason") or "",
            "host": {
                "key": host_keys(s, source.host)[0],
                "in_flight": int(in_flight),
                "cap": s.host_concurrency,
            },
        }
        kind = KINDS.get(source.kind)
        if kind is not None and kind.status is not None:
            out[source.name].update(kind.status(rt, source))
    return out


def seen_size(s: Settings, name: str, size: int, state: dict[str, str]) -> dict[str, Any]:
    """The seen-set against its cap, with a warning when the source serves more items than the
    cap: the set then keeps the source's whole window (items are not re-emitted), above cap."""
    out: dict[str, Any] = {"key": keys.SEEN.key(s, name), "size": size, "cap": s.max_seen}
    served = int(as_float(state.get("last_fetched")))
    if max(size, served) > s.max_seen:
        out["warning"] = (
            f"serves {served} items, more than WATCHKEEPER_MAX_SEEN={s.max_seen}: the seen-set "
            "holds the whole window above its cap; raise the cap"
        )
    return out


def next_cell(src: dict[str, Any]) -> str:
    """When the next check is, and why when it is not simply the interval."""
    if "next_check_in_s" not in src:
        return "-"
    reason = src.get("next_check_reason") or ""
    when = duration(src.get("next_check_in_s"))
    return f"{when} ({reason[:40]})" if reason and reason != "interval" else when


def render(section: dict[str, Any]) -> list[str]:
    rows = []
    for name, src in section.items():
        state = src.get("state", {})
        seen = src.get("seen", {})
        rows.append(
            [
                name,
                src.get("kind"),
                "paused" if src.get("paused") else state.get("last_status", "never polled"),
                ago(state.get("last_ok")),
                state.get("errors", 0),
                duration(state.get("backoff_s", 0)),
                next_cell(src),
                f"{seen.get('size', 0)}/{seen.get('cap', '?')}",
                (state.get("last_error") or state.get("last_warning") or seen.get("warning") or "")[
                    :60
                ],
            ]
        )
    return table(
        [
            "source",
            "kind",
            "status",
            "last ok",
            "errors",
            "backoff",
            "next",
            "seen",
            "last error / warning",
        ],
        rows,
    )


SECTION = declare_section(
    StatusSection(
        "sources", sources_section, render, declared_metrics("workers.polling", "sources")
    )
)
