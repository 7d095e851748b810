"""The ``tcp`` status section: the running listener's published counters and its keys."""

from __future__ import annotations

from typing import Any

import redis

from workers.core import keys
from workers.core.prometheus import declared_metrics
from workers.core.runtime import Runtime
from workers.core.status_sections import StatusSection, declare_section
from workers.tcp.stats import parse_fields


def tcp_section(rt: Runtime) -> dict[str, Any]:
    """``status`` section ``tcp``: the listener's published counters, or that none runs."""
    s = rt.settings
    key = keys.TCP_STATS.key(s)
    client: redis.Redis = rt.redis
    raw = client.hgetall(key)
    section: dict[str, Any] = parse_fields(raw) if raw else {"state": "not running"}  # type: ignore[arg-type]
    section["running"] = section.get("state") in ("running", "stopping")
    ttl = int(client.ttl(key)) if raw else -2
    section["keys"] = {key: {"type": "hash", "fields": len(raw), "ttl_s": ttl}}
    section["keys"].update(_markers(client, keys.TCP_BATCH.glob(s)))
    try:
        configured = rt.config().tcp
    except Exception:  # a broken sources file is reported by its own section
        configured = None
    section["configured"] = f"{configured.host}:{configured.port}" if configured else None
    section["stream"] = {
        "key": keys.STREAM.key(s, "logs"),
        "size": int(client.xlen(keys.STREAM.key(s, "logs"))),
        "cap": s.max_logs,
    }
    section["limits"] = {
        "max_line": s.tcp_max_line,
        "max_buffer": s.tcp_max_buffer,
        "max_connections": s.tcp_max_connections,
        "max_connections_per_peer": s.tcp_max_connections_per_peer,
        "pack_lines": s.tcp_pack_lines,
        "pack_backlog": s.tcp_pack_backlog,
        "idle_timeout_s": s.tcp_idle_timeout,
    }
    return section


def _markers(client: redis.Redis, pattern: str) -> dict[str, dict[str, Any]]:
    """Every listener instance's batch-number set (one per listener run, each aging out)."""
    pipe = client.pipeline(transaction=False)
    names = sorted(str(k) for k in client.scan_iter(match=pattern, count=1000))
    for name in names:
        pipe.zcard(name)
        pipe.ttl(name)
    replies = pipe.execute()
    return {
        name: {"type": "zset", "size": int(replies[2 * i]), "ttl_s": int(replies[2 * i + 1])}
        for i, name in enumerate(names)
    }


def render(section: dict[str, Any]) -> list[str]:
    if not section.get("running"):
        return [f"  not running (state {section.get('state', 'never started')})"]
    d = section.get("discarded", {})
    q = section.get("queue", {})
    return [
        f"  {section.get('listening')} pid {section.get('pid')}: open {section.get('open')}"
        f", accepted {section.get('accepted')}, closed {section.get('closed')}, refused "
        f"{section.get('refused')}"
        + "".join(f" ({k} {v})" for k, v in section.get("refused_by", {}).items() if v)
        + f", idle timeouts {section.get('idle_timeouts')}",
        f"  lines {section.get('lines')} ({section.get('bytes')} bytes) in "
        f"{section.get('entries')} entries, discarded "
        + ", ".join(f"{k} {v}" for k, v in d.items())
        + f"; queue {q.get('lines')}/{q.get('cap_lines')}"
        + (
            f"; last write error: {section['last_write_error']}"
            if section.get("last_write_error")
            else ""
        ),
    ]


SECTION = declare_section(
    StatusSection("tcp", tcp_section, render, declared_metrics("workers.tcp", "tcp"))
)
