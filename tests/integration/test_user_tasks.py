"""A user module that writes ``from workers import app`` and ``@app.task`` runs in a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.workers import subprocess_worker


def test_from_workers_import_app_gives_the_celery_app() -> None:
    from celery import Celery

    from workers import app

    assert isinstance(app, Celery) and app.main == "watchkeeper"


def test_a_user_module_loaded_with_dash_I_runs_its_task(
    redis_url: str, redis_client: Any, celery_app: Any, tmp_path: Path
) -> None:
    # Given a worker started with -I on a module that does `from workers import app`
    with subprocess_worker(
        redis_url, redis_client, tmp_path, pool="solo", include="tests.support.user_tasks"
    ) as worker:
        # When its task is sent by name
        result = worker.send(celery_app, "tests.user.double", 21)
        # Then the worker ran it
        assert result.get(timeout=60) == 42
