"""``watchkeeper notify test|status|retry|drop`` against real receivers and a real Redis."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import requests

from tasks.notify.commands import add_notify_command
from tasks.notify.tasks import deliver_all
from tests.support.helpers import ROOT, wait_for
from tests.support.notify import add_alerts, alert, fast, pump
from tests.support.notify_receivers import free_port


def cli(rt, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="watchkeeper")
    add_notify_command(parser.add_subparsers(dest="command"), lambda args: rt)
    args = parser.parse_args(["notify", *argv])
    return int(args.func(args))


def test_notify_test_sends_now_and_reports_each_destination(runtime, hook, capsys):
    rt = fast(runtime)
    dead = f"json://127.0.0.1:{free_port()}/x"
    rt.use_config(f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}", "{dead}"]\n')
    assert cli(rt, "test", "ops") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": ok") and out[1].endswith(": failed: connection failed")
    assert hook.titles() == ["watchkeeper: test message for sink 'ops'"]
    assert cli(rt, "test", "nope") == 2
    assert capsys.readouterr().err.startswith("watchkeeper: sink 'nope' is not in ")


def test_dead_letters_are_shown_retried_and_dropped(runtime, hook, capsys):
    rt = fast(runtime, notify_max_attempts=2)
    hook.behaviour = lambda n, p: "500"
    rt.use_config(f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
    deliver_all(rt)
    add_alerts(rt, [alert(1), alert(2), alert(3)])
    status = lambda: json.loads(_json_status(rt, capsys))["ops"]  # noqa: E731
    pump(lambda: deliver_all(rt), lambda: status()["dead_letters"]["size"] == 3)
    report = status()
    refs = [d["ref"] for d in report["dead"]]
    assert len(refs) == 3 and report["failed"] == 3
    assert report["log"][0]["outcome"] == "dead_letter"
    assert report["log"][0]["error"].endswith("HTTP 500")
    hook.behaviour = lambda n, p: "ok"
    assert cli(rt, "retry", "ops", refs[0]) == 0
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    deliver_all(rt)
    assert len(hook.accepted) == 1 and status()["dead_letters"]["size"] == 2
    assert cli(rt, "drop", "ops", refs[1]) == 0
    assert cli(rt, "drop", "ops", refs[1]) == 2  # gone already: one line, status 2
    assert cli(rt, "retry", "ops", "--all") == 0
    deliver_all(rt)
    assert len(hook.accepted) == 2 and status()["dead_letters"]["size"] == 0
    assert cli(rt, "status") == 0
    assert "ops: delivered 2" in capsys.readouterr().out


def _json_status(rt, capsys) -> str:
    capsys.readouterr()
    assert cli(rt, "status", "--json") == 0
    return capsys.readouterr().out


# --- read-only commands need no notification secret (issue 19 #7) ----------------------------


def _watchkeeper(config, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WATCHKEEPER_CONFIG=str(config))
    env.pop("WK_TEST_SECRET_HOOK", None)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def _serves(config, argv: list[str], path: str) -> str:
    """Start a serving command, fetch ``path`` once, stop it."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), WATCHKEEPER_CONFIG=str(config))
    env.pop("WK_TEST_SECRET_HOOK", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *argv, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def fetched() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stdout.read()}")
            try:
                return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
            except requests.ConnectionError:
                return None

        return str(wait_for(fetched, timeout=90, interval=0.5, message=f"{argv} serving"))
    finally:
        proc.terminate()
        proc.wait(30)


def test_read_only_commands_work_without_the_notification_secrets(runtime, tmp_path):
    config = tmp_path / "sources.toml"
    config.write_text(
        '[[notify]]\nname = "ops"\nurls = ["env:WK_TEST_SECRET_HOOK", "json://127.0.0.1:9/x"]\n'
    )
    unset = "env:WK_TEST_SECRET_HOOK (secret not set here)"
    status = _watchkeeper(config, "status")
    assert status.returncode == 0, status.stderr
    assert unset in status.stdout
    as_json = _watchkeeper(config, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    destinations = json.loads(as_json.stdout)["notify"]["sinks"]["ops"]["destinations"]
    assert unset in destinations and "JSON 127.0.0.1:9" in destinations
    tail = _watchkeeper(config, "tail", "alerts", "-n", "1")
    assert tail.returncode == 0, tail.stderr
    notify = _watchkeeper(config, "notify", "status")
    assert notify.returncode == 0 and unset in notify.stdout, notify.stderr
    assert "watchkeeper_notify_destination_owed_messages" in _serves(
        config, ["metrics"], "/metrics"
    )
    assert "<html" in _serves(config, ["web"], "/").lower()
    # `check` says so (a warning: only the process that sends needs the secret)...
    check = _watchkeeper(config, "check")
    line = "warning: sink 'ops': urls[0]: environment variable WK_TEST_SECRET_HOOK is not set here"
    assert check.returncode == 0 and line in check.stderr, check.stderr
    # ...and with --strict (run it where the delivery worker runs) it is an error
    strict = _watchkeeper(config, "check", "--strict")
    assert strict.returncode == 2 and line.replace("warning: ", "") in strict.stderr
