"""The sources file: every problem reported as `source '<name>': <field>: <problem>`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.core.sources_file import ConfigError, load_config, parse_interval

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[[feeds]]
name = "world"
url = "https://example.org/rss"
interval = "5m"

[[http_logs]]
name = "app"
url = "http://127.0.0.1:9/logs"
interval = 30
format = "lines"

[[sites]]
name = "shop"
url = "http://127.0.0.1:9/list"
interval = "1h30m"
item = "div.item"
id = "ref"
next_page = "a.next@href"
max_pages = 3
[sites.fields]
ref = ".ref"
link = "a@href"

[tcp]
port = 5141
"""


def test_a_valid_file_loads_every_kind(write_config):
    config = load_config(write_config(GOOD))
    assert [s.name for s in config.sources] == ["world", "app", "shop"]
    assert (
        config.of_kind("site")[0].interval == 5400 and config.of_kind("http_log")[0].interval == 30
    )
    assert config.tcp is not None and (config.tcp.host, config.tcp.port) == ("127.0.0.1", 5141)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (2.5, 2.5)],
)
def test_intervals_accept_seconds_and_units(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "0", 0, -5, "5d", True])
def test_bad_intervals_are_rejected(value):
    with pytest.raises(ValueError):
        parse_interval(value)


def test_every_problem_is_listed_at_once(write_config):
    path = write_config("""
[[feeds]]
name = "a"
url = "ftp://x"
interval = "sometimes"
colour = "red"

[[feeds]]
name = "a"
url = "http://x/"

[[http_logs]]
url = "http://x/"
format = "xml"

[[sites]]
name = "s"
url = "http://x/"
item = "div[["
id = "nope"
[sites.fields]
title = "h2"
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert "source 'a': url: 'ftp://x' is not an http(s) URL" in problems
    assert any(
        p.startswith("source 'a': interval: 'sometimes' is not a duration") for p in problems
    )
    assert "source 'a': colour: unknown key" in problems
    assert "source 'http_logs[1]': name: missing" in problems
    assert "source 'http_logs[1]': format: 'xml' is not one of json, ndjson, lines" in problems
    assert any(p.startswith("source 's': item: bad CSS selector") for p in problems)
    assert "source 's': id: 'nope' is not one of the fields (title)" in problems


def test_duplicate_names_across_kinds_are_an_error(write_config):
    path = write_config("""
[[feeds]]
name = "x"
url = "http://a/"
[[http_logs]]
name = "x"
url = "http://b/"
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ["source 'x': name: duplicate name"]


def _check(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WATCHKEEPER_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_exits_0_for_a_valid_file(write_config):
    proc = _check("--config", str(write_config(GOOD)))
    assert proc.returncode == 0, proc.stderr
    assert "1 feeds, 1 http_logs, 1 sites, tcp 127.0.0.1:5141" in proc.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "file not found"),
        ("[[feeds]\nname=", "invalid TOML"),
        (
            '[[feeds]]\nname = "f"\nurl = "http://x/"\ninterval = "0s"\n',
            "source 'f': interval: '0s' is shorter than 1s",
        ),
        ("[pipelines]\nx = 1\n", "pipelines: unknown section"),
    ],
)
def test_check_exits_2_with_one_line_per_problem_and_no_traceback(
    write_config, tmp_path, text, expected
):
    path = tmp_path / "missing.toml" if text is None else write_config(text)
    proc = _check("--config", str(path))
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_invalid_file_never_starts_a_worker(write_config, tmp_path):
    path = write_config('[[feeds]]\nname = "f"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "WATCHKEEPER_HOME": str(tmp_path),
            "WATCHKEEPER_CONFIG": str(path),
        },
    )
    assert proc.returncode == 2
    assert "source 'f': url: missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_bundled_example_is_valid(tmp_path):
    proc = _check(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "watchkeeper.example.toml" in proc.stdout


def test_without_a_sources_file_run_starts_and_serves_only_the_registry(tmp_path) -> None:
    # A machine without a sources file runs and polls what the registry holds; the bundled
    # example's sample sources never reach it (nothing applies them).
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    env.pop("REDIS_URL", None)
    env.update(WATCHKEEPER_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    env.update(WATCHKEEPER_WEB_PORT="0")
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "run", "--duration", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[run] no sources file: serving the 0 sources of the registry" in proc.stdout
    assert "sources file none" in proc.stdout
    beat_log = (tmp_path / "home" / "logs" / "beat.log").read_text()
    assert "example-" not in beat_log and "source registry read: 0 sources" in beat_log
    assert "Traceback" not in proc.stderr


def test_beat_refuses_the_bundled_example_as_its_sources_file(tmp_path) -> None:
    from workers.core.sources_file import bundled_example

    env = {k: v for k, v in os.environ.items() if k != "WATCHKEEPER_CONFIG"}
    env.update(
        WATCHKEEPER_HOME=str(tmp_path / "home"),
        WATCHKEEPER_CONFIG=str(bundled_example()),
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "beat"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "watchkeeper: the bundled example (" in proc.stderr
    assert "is never applied to the source registry" in proc.stderr
    assert "Traceback" not in proc.stderr
