"""Settings: defaults, seed-compatible names, one-line errors for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import ROOT
from workers.core import doc_tables
from workers.core import settings as settings_mod
from workers.core.settings import Settings, SettingsError, settings_table


def test_seed_compatible_defaults():
    s = Settings.from_env({})
    assert (
        s.moonshot_max_buffer_size,
        s.moonshot_max_buffer_age,
        s.moonshot_cleanup_interval,
        s.moonshot_max_retries,
        s.moonshot_max_alert_batch_age,
    ) == (1000, 3600, 900, 3, 7200)
    assert s.max_seen == 10000 and s.max_history == 1000


def test_environment_overrides_a_default():
    assert Settings.from_env({"MOONSHOT_MAX_BUFFER_SIZE": "50"}).moonshot_max_buffer_size == 50
    assert Settings.from_env({"WATCHKEEPER_HOST_DELAY": "0"}).host_delay == 0


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("WATCHKEEPER_MAX_SEEN", "lots", "not an integer"),
        ("MOONSHOT_MAX_BUFFER_SIZE", "-5", "must be at least 1"),
        ("MOONSHOT_CLEANUP_INTERVAL", "0", "must be at least 1"),
        ("WATCHKEEPER_HTTP_READ_TIMEOUT", "nan", "not a number"),
        ("MOONSHOT_MAX_RETRIES", "-1", "must be zero or more"),
        ("WATCHKEEPER_WEB_ALLOWED_HOSTS", "dash.example.org, http://x/", "is not a host name"),
        ("WATCHKEEPER_WEB_MAX_BODY", "100", "must be at least 1024"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable_and_value(name, value, problem):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}={value!r}")
    assert problem in message


@pytest.mark.parametrize(
    ("env", "start"),
    [
        (
            {"WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT": "4000"},
            "WATCHKEEPER_VISIBILITY_TIMEOUT=3600: must exceed WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT",
        ),
        (
            {"WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT": "10", "WATCHKEEPER_NOTIFY_RUN_WAIT": "20"},
            "WATCHKEEPER_NOTIFY_TASK_TIME_LIMIT=10: must exceed WATCHKEEPER_NOTIFY_RUN_WAIT=20",
        ),
    ],
)
def test_the_delivery_runs_time_limit_is_checked_against_the_others(env, start):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(start)


def test_a_fetch_deadline_never_outlasts_the_task_time_limit():
    # A lowered task time limit lowers the fetch deadline rather than refusing to start
    lowered = Settings.from_env({"WATCHKEEPER_TASK_TIME_LIMIT": "30"})
    assert lowered.http_deadline == 120.0 and lowered.fetch_deadline == 24.0
    assert Settings.from_env({}).fetch_deadline == 120.0


def test_bad_value_stops_the_cli_with_one_line_and_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "status"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "WATCHKEEPER_MAX_SEEN": "x",
            "WATCHKEEPER_HOME": str(tmp_path),
        },
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "watchkeeper: WATCHKEEPER_MAX_SEEN='x': not an integer"


def test_bad_value_stops_a_celery_worker_before_it_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "WATCHKEEPER_HOME": str(tmp_path),
            "WATCHKEEPER_MEMORY_WARN_MB": "0",
        },
    )
    assert proc.returncode == 2
    assert "WATCHKEEPER_MEMORY_WARN_MB='0': must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_setting_has_a_row_in_the_docs_table_exactly_as_generated():
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [env for env, _, _ in settings_table() if f"`{env}`" not in page]
    assert not missing, f"settings missing from the table of docs/settings.md: {missing}"
    assert doc_tables.stale(doc_tables.pages(ROOT / "docs"), settings_mod.doc_tables()) == [], (
        "the settings table in docs/ is stale: run python3 -m workers.core.settings --docs docs"
    )


def _unreachable(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=90,
        env={
            "PATH": "/usr/bin:/bin",
            "WATCHKEEPER_HOME": str(home),
            "REDIS_URL": "redis://:secret@127.0.0.1:1/0",
        },
    )


def test_unreachable_external_redis_is_one_line_and_exit_2_for_the_cli(tmp_path):
    for command in (["workers.cli", "status"], ["workers.cli", "run", "--duration", "1"]):
        proc = _unreachable(tmp_path, *command)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith(
            "watchkeeper: Redis at redis://:***@127.0.0.1:1/0: unreachable"
        )
        assert proc.stderr.count("\n") == 1 and "secret" not in proc.stderr


def test_unreachable_external_redis_stops_a_celery_worker_with_one_line(tmp_path):
    proc = _unreachable(tmp_path, "celery", "-A", "workers", "worker")
    assert proc.returncode == 2
    assert "watchkeeper: Redis at redis://:***@127.0.0.1:1/0: unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_toml_declares_every_field_in_order_with_a_default_of_its_type():
    from workers.core.settings import check_declarations

    assert check_declarations() == []
