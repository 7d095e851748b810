"""Per-process runtime shared by tasks: settings, the Redis client, the sources, the file.

Created lazily and re-created after a fork (pool children get their own connections). Holds
connections, the parsed sources file and built sources only — never per-source or per-item
state, which lives in Redis so a worker can die or be recycled at any moment without losing
anything.

Sources come from the registry in Redis (``sources``: one ``HGET`` per source looked up), never
from this machine's file; the file gives only its other sections (notification sinks,
``[tcp]``) — and a process without one has none of them (``config_path`` None).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import redis

from workers.core.connection import get_client
from workers.core.settings import Settings
from workers.core.source_registry import SourceRegistry
from workers.core.sources_file import SourcesConfig, load_config, no_file_config, own_config


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    config_path: Path | None
    _config: SourcesConfig | None = field(default=None, repr=False)
    _config_mtime: float = field(default=-1.0, repr=False)
    _sources: SourceRegistry | None = field(default=None, repr=False)

    def config(self) -> SourcesConfig:
        """This machine's sources file, re-read when it changes on disk — for its sections
        (sinks, ``[tcp]``); its sources are read through ``sources``, where the file was
        applied. No file: every section empty."""
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
        return self._config

    @property
    def sources(self) -> SourceRegistry:
        """The source registry, read through this runtime's Redis client."""
        cached = self._sources
        if cached is None or cached.client is not self.redis or cached.settings != self.settings:
            cached = self._sources = SourceRegistry(self.redis, self.settings)
        return cached


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
