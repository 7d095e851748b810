"""The Redis topology for ``status`` and metrics: the primary, its replicas, the Sentinels.

Read from the primary's ``INFO replication`` (each replica's state, offset and the seconds
since it last acknowledged) and, with a Sentinel URL, from every Sentinel (``PING`` and
``SENTINEL MASTER``: which primary it names, how many replicas and other Sentinels it knows).
Warnings say what weakens the guarantee of docs/reliability.md: a replica missing or lagging
(acknowledged writes then wait, or a failover loses more), fewer replicas online than
``WATCHKEEPER_REPLICA_ACKS`` (writes the outside world is told about stall), Sentinels that do
not answer or disagree (no majority: no failover).
"""

from __future__ import annotations

from typing import Any

import redis

from workers.core import sentinel
from workers.core.connection import external_url
from workers.core.runtime import Runtime
from workers.store.replicas import wanted

LAG_WARN_S = 5
"""A replica that has not acknowledged for this long is lagging."""
BYTES_WARN = 16 * 2**20
"""A replica this many bytes of the replication stream behind is lagging."""
SENTINEL_TIMEOUT_S = 1.0


def replicas_of(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The replicas ``INFO replication`` lists, with how far behind each is."""
    offset = int(info.get("master_repl_offset", 0) or 0)
    out = []
    for key, value in sorted(info.items()):
        if not (key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict)):
            continue
        behind = max(0, offset - int(value.get("offset", 0) or 0))
        out.append(
            {
                "address": f"{value.get('ip')}:{value.get('port')}",
                "state": str(value.get("state", "")),
                "lag_s": int(value.get("lag", 0) or 0),
                "behind_bytes": behind,
            }
        )
    return out


def sentinels_view(rt: Runtime) -> list[dict[str, Any]]:
    """Each Sentinel of the URL: does it answer, which primary does it name."""
    target = sentinel.parse(external_url(rt.settings))
    out = []
    for address, client in sentinel.sentinel_clients(target, SENTINEL_TIMEOUT_S):
        row: dict[str, Any] = {"address": address, "reachable": False}
        try:
            state: dict[str, Any] = dict(client.sentinel_master(target.master))  # type: ignore[arg-type]
            row.update(
                reachable=True,
                primary=f"{state.get('ip')}:{state.get('port')}",
                replicas_known=int(state.get("num-slaves", 0) or 0),
                other_sentinels=int(state.get("num-other-sentinels", 0) or 0),
                quorum=int(state.get("quorum", 0) or 0),
            )
        except redis.RedisError as exc:
            row["error"] = " ".join(str(exc).split())[:200]
        finally:
            client.close()
        out.append(row)
    return out


def topology(rt: Runtime) -> dict[str, Any]:
    """Mode, primary, replicas (state, lag), Sentinels, and warnings."""
    info = rt.redis.info("replication")
    kwargs = rt.redis.connection_pool.connection_kwargs
    pool_address = getattr(rt.redis.connection_pool, "master_address", None)
    if pool_address:
        primary = f"{pool_address[0]}:{pool_address[1]}"
    else:
        primary = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")
    replicas = replicas_of(info)
    online = [r for r in replicas if r["state"] == "online"]
    out: dict[str, Any] = {
        "mode": "sentinel" if rt.settings.uses_sentinel else "single",
        "role": str(info.get("role", "")),
        "primary": primary,
        "replicas": replicas,
        "replicas_online": len(online),
        "replica_acks": wanted(rt.settings),
    }
    warnings = _replica_warnings(rt, replicas, len(online))
    if rt.settings.uses_sentinel:
        views = sentinels_view(rt)
        out["sentinels"] = views
        out["sentinels_reachable"] = sum(1 for v in views if v["reachable"])
        warnings += _sentinel_warnings(views, primary, len(online))
    out["warnings"] = warnings
    out["warning_count"] = len(warnings)
    return out


def _replica_warnings(rt: Runtime, replicas: list[dict[str, Any]], online: int) -> list[str]:
    warnings = []
    if rt.settings.uses_sentinel and not replicas:
        warnings.append("no replica connected: a failover has nothing to promote")
    for r in replicas:
        if r["state"] != "online":
            warnings.append(f"replica {r['address']} is {r['state'] or 'not online'}")
        elif r["lag_s"] >= LAG_WARN_S or r["behind_bytes"] >= BYTES_WARN:
            warnings.append(
                f"replica {r['address']} lagging: last acknowledged {r['lag_s']} s ago, "
                f"{r['behind_bytes']} bytes behind"
            )
    acks = wanted(rt.settings)
    if acks and online < acks:
        warnings.append(
            f"{online} replica(s) online but WATCHKEEPER_REPLICA_ACKS={acks}: TCP lines, "
            "notifications and other acknowledged writes wait until enough are back"
        )
    return warnings


def _sentinel_warnings(views: list[dict[str, Any]], primary: str, online: int) -> list[str]:
    warnings = []
    reachable = [v for v in views if v["reachable"]]
    for v in views:
        if not v["reachable"]:
            warnings.append(f"Sentinel {v['address']} unreachable: {v.get('error', '')}")
    if len(reachable) <= len(views) // 2:
        warnings.append(
            f"only {len(reachable)} of {len(views)} Sentinels reachable: no majority, no failover"
        )
    named = {v["primary"] for v in reachable}
    if len(named) > 1:
        warnings.append(f"Sentinels disagree on the primary: {', '.join(sorted(named))}")
    elif named and primary not in named:
        warnings.append(f"Sentinels name {named.pop()} but this client reached {primary}")
    known = max((v.get("replicas_known", 0) for v in reachable), default=0)
    if known > online:
        warnings.append(f"{online} of the {known} replicas Sentinel knows are online")
    return warnings


def render(section: dict[str, Any]) -> list[str]:
    """Terminal lines for ``status``."""
    lines = [
        f"  topology: {section.get('mode')}, primary {section.get('primary')} "
        f"({section.get('role')}), {section.get('replicas_online')} replica(s) online"
        + (
            f", writes told about wait for {section['replica_acks']}"
            if section.get("replica_acks")
            else ""
        )
    ]
    for r in section.get("replicas", []):
        lines.append(
            f"    replica {r['address']}: {r['state']}, acknowledged {r['lag_s']} s ago, "
            f"{r['behind_bytes']} bytes behind"
        )
    for v in section.get("sentinels", []):
        said = f"names {v.get('primary')}" if v.get("reachable") else "unreachable"
        lines.append(f"    Sentinel {v['address']}: {said}")
    lines += [f"  WARNING: {w}" for w in section.get("warnings", [])]
    return lines
