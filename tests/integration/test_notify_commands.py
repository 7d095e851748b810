"""``watchkeeper notify test|status|retry|drop`` against real receivers and a real Redis."""

from __future__ import annotations

import argparse
import json

from tasks.notify.commands import add_notify_command
from tasks.notify.tasks import deliver_all
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
