"""Per-process runtime shared by tasks: settings, the Redis client, the sources, the file.

Created lazily and re-created after a fork (pool children get their own connections). Holds
connections, the parsed sources file and built sources only — never per-source or per-item
state, which lives in Redis so a worker can die or be recycled at any moment without losing
anything.

Sources come from the registry in Redis (``sources``: one ``HGET`` per source looked up), never
from this machine's file; the file gives only its other sections (notification sinks,
``[tcp]``) — and a process without one has none of them (``config_path`` None).

Config hooks: a stage that must act in Redis as soon as any process sees a sources file (the
notify stage creates each sink's consumer groups, so a new sink sees every item written after
its file was first loaded) declares a hook; every process that loads or reloads the file with
Redis at hand — a worker through ``Runtime.config``, beat through its runtime — runs the hooks
once per loaded version. Hooks are idempotent; one failing (Redis down) is logged and tried
again at most every ``HOOK_RETRY`` seconds, never failing the caller.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from workers.core.connection import get_client
from workers.core.registry import Registry
from workers.core.settings import Settings
from workers.core.source_registry import SourceRegistry
from workers.core.sources_file import SourcesConfig, load_config, no_file_config, own_config

log = logging.getLogger(__name__)

HOOK_RETRY = 5.0
"""Seconds between two attempts at config hooks that failed."""


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    config_path: Path | None
    _config: SourcesConfig | None = field(default=None, repr=False)
    _config_mtime: float = field(default=-1.0, repr=False)
    _sources: SourceRegistry | None = field(default=None, repr=False)
    _hooked: SourcesConfig | None = field(default=None, repr=False)
    _hook_tried: float = field(default=0.0, repr=False)

    def config(self) -> SourcesConfig:
        """This machine's sources file, re-read when it changes on disk — for its sections
        (sinks, ``[tcp]``); its sources are read through ``sources``, where the file was
        applied. No file: every section empty. The config hooks run once per version loaded."""
        if self.config_path is None:
            if self._config is None:
                self._config = no_file_config()
            return self._config
        try:
            mtime = self.config_path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if self._config is None or mtime != self._config_mtime:
            self._config = load_config(self.config_path)
            self._config_mtime = mtime
        config = self._config
        if self._hooked is not config and time.monotonic() - self._hook_tried >= HOOK_RETRY:
            self._hook_tried = 0.0 if run_config_hooks(self, config) else time.monotonic()
            if not self._hook_tried:
                self._hooked = config
        return config

    @property
    def sources(self) -> SourceRegistry:
        """The source registry, read through this runtime's Redis client."""
        cached = self._sources
        if cached is None or cached.client is not self.redis or cached.settings != self.settings:
            cached = self._sources = SourceRegistry(self.redis, self.settings)
        return cached


ConfigHook = Callable[[Runtime, SourcesConfig], None]
CONFIG_HOOKS: Registry[ConfigHook] = Registry("config hook")


def declare_config_hook(name: str, hook: ConfigHook) -> ConfigHook:
    """``hook(rt, config)`` runs when a process with Redis loads a version of the file."""
    return CONFIG_HOOKS.add(name, hook)


def run_config_hooks(rt: Runtime, config: SourcesConfig) -> bool:
    """Run every config hook; False when one failed (logged, never raised)."""
    ok = True
    for name in CONFIG_HOOKS.names():
        try:
            CONFIG_HOOKS[name](rt, config)
        except Exception as exc:  # Redis down, say: tried again later, never fails a caller
            log.warning("[config] %s after loading %s failed: %s", name, config.path, exc)
            ok = False
    return ok


_runtime: Runtime | None = None
_runtime_pid = -1


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings = Settings.from_env()
        path = own_config(None, settings.config)
        _runtime = Runtime(settings, get_client(settings), path.resolve() if path else None)
        _runtime_pid = os.getpid()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (the CLI's, or a test's); ``None`` resets to lazy creation."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = runtime, os.getpid()
