"""Per-process runtime shared by tasks: settings, the Redis client, the sources file.

Created lazily and re-created after a fork (pool children get their own connections). Holds
connections and the parsed sources file only — never per-source or per-item state, which lives
in Redis so a worker can die or be recycled at any moment without losing anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import redis

from workers.core.connection import get_client
from workers.core.settings import Settings
from workers.core.sources_file import SourcesConfig, find_config, load_config


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    config_path: Path
    _config: SourcesConfig | None = field(default=None, repr=False)
    _config_mtime: float = field(default=-1.0, repr=False)

    def config(self) -> SourcesConfig:
        """The sources file, re-read when it changes on disk (so a removed source stops)."""
        try:
            mtime = self.config_path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if self._config is None or mtime != self._config_mtime:
            self._config = load_config(self.config_path)
            self._config_mtime = mtime
        return self._config


_runtime: Runtime | None = None
_runtime_pid = -1


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings = Settings.from_env()
        _runtime = Runtime(
            settings, get_client(settings), find_config(None, settings.config).resolve()
        )
        _runtime_pid = os.getpid()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (the CLI's, or a test's); ``None`` resets to lazy creation."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = runtime, os.getpid()
