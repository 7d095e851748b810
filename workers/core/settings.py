"""One frozen, typed settings object read from the environment.

Every limit watchkeeper enforces is a field here; its environment variable, default, meaning
and smallest allowed value are declared in ``settings.toml`` beside this module, from which the
settings table of docs/settings.md is generated (a test checks they agree), so a setting cannot
exist without being documented. Tasks never call ``os.getenv``: they get a ``Settings``.

A bad value stops start-up with one line naming the variable and the value (``SettingsError``),
never a traceback.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from workers.core import sentinel
from workers.core.redact import redact_url

MIB = 1024 * 1024

STREAM_CAPS = {
    "alerts": "max_alerts",
    "logs": "max_logs",
    "listings": "max_listings",
    "locations": "max_alerts",
    "changes": "max_changes",
    "health": "max_health",
}
"""The setting that caps each output stream."""

STREAM_BUDGETS = {name: f"max_{name}_bytes" for name in STREAM_CAPS}
"""The setting that holds each output stream's byte budget."""
MAX_STREAM_BUDGET = 2**31
"""Largest byte budget: the ledger keeps running totals modulo 2^32 (lua/lib/stream_budget.lua)."""


class SettingsError(ValueError):
    """A setting's value is unusable; the message names the variable and the value."""


@dataclass(frozen=True)
class SettingSpec:
    """One row of ``settings.toml``."""

    name: str
    env: str
    default: Any
    meaning: str
    minimum: float | None


@cache
def specs() -> tuple[SettingSpec, ...]:
    """Every setting's declaration, in the file's (and docs/settings.md's) order."""
    text = resources.files("workers.core").joinpath("settings.toml").read_text(encoding="utf-8")
    return tuple(
        SettingSpec(name, row["env"], row["default"], row["meaning"], row.get("minimum"))
        for name, row in tomllib.loads(text).items()
    )


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+socket")

FEED_PARSERS = ("auto", "fast", "feedparser")
"""WATCHKEEPER_FEED_PARSER and a feed's ``parser``: see ``tasks/feeds/parsers.py``."""
HOST_PORT = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?$")
"""A Host header's value: a name or address (IPv6 in brackets) and an optional port."""
SOURCE_ENV_PATTERN = re.compile(r"^[A-Za-z0-9_*?]{1,128}$")
"""One glob pattern of WATCHKEEPER_SOURCE_ENV."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once per process with ``Settings.from_env()``; see
    ``settings.toml`` for each field's variable, default and meaning."""

    redis_url: str
    sentinel_master: str
    sentinel_password: str
    failover_wait: float
    replica_acks: int
    replica_wait_ms: int
    home: str
    config: str
    max_sources: int
    sources_changes: int
    source_max_bytes: int
    source_env: str
    opml_max_bytes: int
    prefix: str
    concurrency: int
    result_expires: int
    task_time_limit: int
    visibility_timeout: int
    dispatch_interval: float
    dispatch_chunk: int
    status_sources: int
    beat_lock_ttl: int
    queued_max_age: int
    max_queue_length: int
    poll_batch: int
    poll_batch_slow: float
    poll_batch_budget: float
    max_seen: int
    seen_max_age: int
    max_history: int
    max_alerts: int
    max_logs: int
    max_listings: int
    max_dead_letters: int
    state_ttl: int
    moonshot_max_buffer_size: int
    moonshot_max_buffer_age: int
    moonshot_cleanup_interval: int
    moonshot_max_retries: int
    moonshot_max_alert_batch_age: int
    moonshot_api_key: str
    moonshot_base_url: str
    moonshot_model: str
    moonshot_timeout: float
    location_batch: int
    location_lease: int
    location_retry_backoff: float
    location_flush_interval: int
    http_connect_timeout: float
    http_read_timeout: float
    http_deadline: float
    http_max_bytes: int
    http_max_redirects: int
    backoff_base: float
    backoff_max: float
    host_concurrency: int
    host_delay: float
    interval_max_factor: float
    robots_ttl: int
    robots_max_hosts: int
    feed_parser: str
    feed_max_entries: int
    feedparser_max_elements: int
    scrape_max_field_chars: int
    scrape_max_price: int
    memory_warn_mb: int
    memory_recycle_mb: int
    memory_hard_mb: int
    max_tasks_per_child: int
    task_events: int
    prefetch_multiplier: int
    max_worker_kills: int
    memory_guard: int
    memory_check_interval: float
    memory_series_interval: int
    memory_series_points: int
    tcp_max_line: int
    tcp_max_buffer: int
    tcp_max_connections: int
    tcp_max_connections_per_peer: int
    tcp_idle_timeout: float
    tcp_queue_lines: int
    tcp_queue_bytes: int
    tcp_batch_lines: int
    tcp_pack_lines: int
    tcp_pack_backlog: int
    tcp_shutdown_s: float
    metrics_port: int
    metrics_host: str
    web_host: str
    web_port: int
    web_token: str
    web_refresh: float
    web_allowed_hosts: str
    web_max_body: int
    web_body_timeout: float
    web_login_attempts: int
    web_login_window: int
    web_session_max_age: int
    web_max_upload: int
    api_token: str
    api_read_tokens: str
    max_changes: int
    max_health: int
    max_alerts_bytes: int
    max_logs_bytes: int
    max_listings_bytes: int
    max_locations_bytes: int
    max_changes_bytes: int
    max_health_bytes: int
    notify_after_errors: int
    notify_interval: float
    notify_batch: int
    notify_timeout: float
    notify_max_attempts: int
    notify_backoff_base: float
    notify_backoff_max: float
    notify_run_budget: float
    notify_run_wait: float
    notify_max_reply_bytes: int
    notify_concurrency: int
    notify_task_time_limit: int
    notify_max_outbox: int
    notify_max_dead_letters: int
    notify_log_size: int
    notify_max_chars: int
    notify_digest_items: int
    notify_redis_wait: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``env`` (default ``os.environ``), validating as it goes."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in specs():
            raw = source.get(spec.env)
            if raw is None or (raw.strip() == "" and spec.minimum is not None):
                values[spec.name] = spec.default
            else:
                values[spec.name] = _parse(spec.env, raw, spec.default, spec.minimum)
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def fetch_deadline(self) -> float:
        """Seconds one fetch may take: WATCHKEEPER_HTTP_DEADLINE, but never more than 80 % of
        the task time limit (a lowered limit lowers it, rather than refusing to start)."""
        return min(self.http_deadline, 0.8 * self.task_time_limit)

    def validate(self) -> None:
        """Cross-field checks that a single value cannot express."""
        self._check_redis_url()
        if self.feed_parser not in FEED_PARSERS:
            raise SettingsError(
                f"WATCHKEEPER_FEED_PARSER={self.feed_parser!r}: expected one of "
                + ", ".join(FEED_PARSERS)
            )
        if self.visibility_timeout <= self.task_time_limit:
            raise SettingsError(
                f"WATCHKEEPER_VISIBILITY_TIMEOUT={self.visibility_timeout}: must exceed "
                f"WATCHKEEPER_TASK_TIME_LIMIT={self.task_time_limit}"
            )
        if self.visibility_timeout <= self.notify_task_time_limit:
            raise SettingsError(
                f"WATCHKEEPER_VISIBILITY_TIMEOUT={self.visibility_timeout}: must exceed "
                f"WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT={self.notify_task_time_limit}"
            )
        if self.beat_lock_ttl <= 2 * self.dispatch_interval:
            raise SettingsError(
                f"WATCHKEEPER_BEAT_LOCK_TTL={self.beat_lock_ttl}: must exceed twice "
                f"WATCHKEEPER_DISPATCH_INTERVAL={self.dispatch_interval:g} (the holder refreshes "
                "it every pass)"
            )
        if self.notify_run_budget + self.notify_timeout >= self.task_time_limit:
            raise SettingsError(
                f"WATCHKEEPER_NOTIFY_RUN_BUDGET={self.notify_run_budget:g}: plus "
                f"WATCHKEEPER_NOTIFY_TIMEOUT={self.notify_timeout:g} must stay under "
                f"WATCHKEEPER_TASK_TIME_LIMIT={self.task_time_limit}"
            )
        self._check_source_env()
        for host in self.web_allowed_host_list:
            if not HOST_PORT.match(host):
                raise SettingsError(
                    f"WATCHKEEPER_WEB_ALLOWED_HOSTS={self.web_allowed_hosts!r}: {host!r} is not "
                    "a host name or address with an optional :port (IPv6 in brackets: [::1]:9809)"
                )
        if self.notify_task_time_limit <= self.notify_run_wait:
            raise SettingsError(
                f"WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT={self.notify_task_time_limit}: must exceed "
                f"WATCHKEEPER_NOTIFY_RUN_WAIT={self.notify_run_wait:g}"
            )
        for stream, name in STREAM_BUDGETS.items():
            if getattr(self, name) > MAX_STREAM_BUDGET:
                raise SettingsError(
                    f"WATCHKEEPER_{name.upper()}={getattr(self, name)}: the `{stream}` stream's "
                    f"byte budget may be at most {MAX_STREAM_BUDGET} (2 GiB)"
                )
        if not self.memory_warn_mb <= self.memory_recycle_mb <= self.memory_hard_mb:
            raise SettingsError(
                f"WATCHKEEPER_MEMORY_RECYCLE_MB={self.memory_recycle_mb}: must lie between "
                f"WATCHKEEPER_MEMORY_WARN_MB={self.memory_warn_mb} and "
                f"WATCHKEEPER_MEMORY_HARD_MB={self.memory_hard_mb}"
            )

    def _check_redis_url(self) -> None:
        scheme = self.redis_url.partition("://")[0].lower() if "://" in self.redis_url else ""
        if not self.redis_url or scheme in REDIS_SCHEMES:
            return
        shown = f"REDIS_URL={redact_url(self.redis_url)!r}"
        if scheme in sentinel.SCHEMES:
            try:
                sentinel.parse(self.redis_url, self.sentinel_master, self.sentinel_password)
            except sentinel.SentinelURLError as exc:
                raise SettingsError(f"{shown}: {exc}") from None
            return
        if "cluster" in scheme:
            why = "Redis Cluster is not supported; use one Redis server, or Sentinel"
        else:
            why = f"unsupported scheme {scheme or '(none)'!r}"
        raise SettingsError(f"{shown}: {why} (redis://, rediss://, unix://, sentinel://)")

    @property
    def uses_sentinel(self) -> bool:
        """REDIS_URL names Sentinels (a primary with replicas that fails over)."""
        return sentinel.is_sentinel(self.redis_url)

    @property
    def web_allowed_host_list(self) -> tuple[str, ...]:
        """``WATCHKEEPER_WEB_ALLOWED_HOSTS`` as its entries, lower case."""
        return tuple(h.strip().lower() for h in self.web_allowed_hosts.split(",") if h.strip())

    def _check_source_env(self) -> None:
        for pattern in self.source_env_patterns:
            if not SOURCE_ENV_PATTERN.match(pattern):
                raise SettingsError(
                    f"WATCHKEEPER_SOURCE_ENV={self.source_env!r}: {pattern!r} is not a pattern of "
                    "variable names (letters, digits, '_', '*', '?')"
                )

    @property
    def source_env_patterns(self) -> tuple[str, ...]:
        """``WATCHKEEPER_SOURCE_ENV`` as its patterns."""
        return tuple(p.strip() for p in self.source_env.split(",") if p.strip())

    @property
    def api_read_token_list(self) -> tuple[str, ...]:
        """``WATCHKEEPER_API_READ_TOKENS`` as its entries."""
        return tuple(t.strip() for t in self.api_read_tokens.split(",") if t.strip())

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    def stream_cap(self, stream: str) -> int:
        """The cap of an output stream, by its name."""
        return int(getattr(self, STREAM_CAPS[stream]))

    def stream_budget(self, stream: str) -> int:
        """The byte budget of an output stream, by its name."""
        return int(getattr(self, STREAM_BUDGETS[stream]))


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
    """(variable, default, meaning) rows, as the settings table (docs/settings.md) shows them."""
    rows = []
    for spec in specs():
        default = spec.default
        shown = (
            f'"{default}"'
            if isinstance(default, str)
            else f"{default:g}"
            if isinstance(default, float)
            else str(default)
        )
        rows.append((spec.env, shown, spec.meaning))
    return rows


def check_declarations() -> list[str]:
    """Where ``settings.toml`` and the dataclass disagree (names, order, default types)."""
    problems = []
    declared = [s.name for s in specs()]
    names = [f.name for f in fields(Settings)]
    if declared != names:
        problems.append(f"settings.toml declares {declared}, the dataclass has {names}")
    kinds: dict[str, Any] = {"int": int, "float": (int, float), "str": str}
    for spec, f in zip(specs(), fields(Settings), strict=False):
        if not isinstance(spec.default, kinds[str(f.type)]) or isinstance(spec.default, bool):
            problems.append(f"{spec.name}: default {spec.default!r} is not {f.type}")
    return problems


def markdown_table() -> str:
    """The settings table of docs/settings.md (``python -m workers.core.settings`` prints it)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [
        f"| `{env}` | `{default}` | {meaning} |" for env, default, meaning in settings_table()
    ]
    return "\n".join(lines)


def doc_tables() -> dict[str, str]:
    """The generated blocks this module owns: ``settings`` (docs/settings.md)."""
    return {"settings": markdown_table()}


if __name__ == "__main__":
    if sys.argv[1:]:
        from workers.core import doc_tables as _doc_tables

        sys.exit(_doc_tables.main(sys.argv[1:], doc_tables, "workers.core.settings"))
    print(markdown_table())
