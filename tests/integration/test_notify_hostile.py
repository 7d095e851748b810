"""Hostile receivers and hostile text (issue 19, delivery): a receiver that trickles its answer
or sends a huge one, several URLs in one variable, a sink's first items, markup and mentions in
titles — each against real peers on 127.0.0.1 (HTTP, Apprise's own plugins, SMTP)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tasks.notify.cleanup import notify_cleanup
from tasks.notify.config import notify_config
from tasks.notify.delivery_log import delivery_log
from tasks.notify.send import Message, send
from tasks.notify.status import notify_status
from tasks.notify.tasks import deliver_all
from tests.support.helpers import ROOT, wait_for
from tests.support.notify import add_alerts, alert, fast, pump
from tests.support.notify_receivers import TricklingSmtp

MESSAGE = Message("Alert", "Something happened", "alerts:1-0:ops")


def finishes(call: Callable[[], Any], within: float) -> Any:
    """``call()``'s value, failing if it has not returned within ``within`` seconds (it is then
    left running in a daemon thread: what a stuck delivery would do)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"still running after {within:g}s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def configure(rt, *sinks: tuple[str, list[str], str]) -> None:
    text = ""
    for name, urls, extra in sinks:
        quoted = ", ".join(f'"{u}"' for u in urls)
        text += f'[[notify]]\nname = "{name}"\nurls = [{quoted}]\nstreams = ["alerts"]\n{extra}\n'
    rt.use_config(text)
    deliver_all(rt)


# --- 1. a whole send has a wall-clock deadline ----------------------------------------------


@pytest.mark.parametrize("scheme", ["json", "form", "xml"])
def test_a_trickling_receiver_is_cut_at_the_deadline_of_the_whole_send(receivers, scheme):
    # headers at once, then one byte every 0.5 s of a 100 kB body: 14 hours; every read comes
    # well within the 2 s timeout, so a per-read timeout never fires
    slow = receivers("trickle")
    result = finishes(lambda: send(slow.url(scheme=scheme), MESSAGE, 2.0, 8000), within=30)
    assert not result.ok and result.retryable
    assert result.error == "timed out after 2s"
    # the request is over, not left reading in a background thread (Apprise's own timeout)
    wait_for(lambda: slow.open == 0, timeout=5, message="the receiver's connection closed")


def test_a_trickling_smtp_server_is_cut_at_the_deadline(runtime):
    smtp = TricklingSmtp(trickle_s=0.5).start()
    try:
        # Apprise's e-mail plugin waits its pacing pause first; the deadline comes after it
        result = finishes(lambda: send(smtp.url(), MESSAGE, 2.0, 8000), within=40)
        assert not result.ok and result.retryable and "timed out" in result.error
        assert smtp.connections == 1
        wait_for(lambda: smtp.open == 0, timeout=5, message="the SMTP connection closed")
    finally:
        smtp.stop()


def test_slow_receivers_never_delay_the_other_destinations_or_sinks(runtime, receivers):
    # a run waits 2 s for its destinations' sends; the slow ones' deadline is 5 s
    rt = fast(runtime, notify_timeout=5.0, notify_max_attempts=50, notify_run_wait=2.0)
    slow1, slow2 = receivers("trickle"), receivers("trickle")
    near, far = receivers(), receivers()
    configure(rt, ("a", [slow1.url(), slow2.url(), near.url()], ""), ("b", [far.url()], ""))
    add_alerts(rt, [alert(1)])
    finishes(lambda: deliver_all(rt), within=30)
    assert near.titles() == ["Alert 1"] and far.titles() == ["Alert 1"]
    # while the slow ones are still sending, the next item goes through to the others at once
    add_alerts(rt, [alert(2)])
    finishes(lambda: deliver_all(rt), within=30)
    assert near.titles() == ["Alert 1", "Alert 2"] and far.titles() == ["Alert 1", "Alert 2"]
    # each slow send ends at its deadline and is retried with backoff, like any failure
    sink = notify_config(rt.config()).sink("a")
    pump(
        lambda: deliver_all(rt),
        lambda: slow1.attempts >= 2 and slow2.attempts >= 2,
        timeout=60,
        message="a second attempt at each slow receiver",
    )
    timed_out = [e for e in delivery_log(rt, sink, 200) if e["outcome"] == "retry"]
    assert timed_out and all(e["error"] == "timed out after 5s" for e in timed_out)
    assert all(e["retry_in_s"] > 0 for e in timed_out)
    labels = {e["dest"] for e in timed_out}
    assert labels == {sink.destinations[0].label, sink.destinations[1].label}
    assert notify_status(rt)["sinks"]["a"]["retried"] >= 2
    assert near.titles() == ["Alert 1", "Alert 2"]  # never twice


# --- 2. a reply is read up to a few KB ------------------------------------------------------

MEASURE = """
import json, resource, sys
from tasks.notify.send import Message, send
import tasks.notify.deliver  # everything a delivery child has loaded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = send(sys.argv[1], Message("t", "b", "k"), 60.0, 8000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ok": result.ok, "error": result.error, "before": before, "after": after}))
"""


@pytest.mark.parametrize("scheme", ["json", "form"])
def test_a_huge_reply_is_not_read_and_memory_stays_flat(receivers, scheme):
    huge = receivers("huge")  # Content-Length: 300 MB, streamed as fast as it is read
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, huge.url(scheme=scheme)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.splitlines()[-1])
    assert measured["ok"], measured  # the status was 200: delivered
    grown_mb = (measured["after"] - measured["before"]) / 1024
    assert grown_mb < 32, measured  # the reply was 300 MB
    assert huge.sent_bytes < 64 * 2**20  # reading stopped early (socket buffers aside)


# --- 3. several URLs in one variable ---------------------------------------------------------


def test_several_urls_in_one_variable_are_several_destinations(runtime, receivers, monkeypatch):
    rt = fast(runtime)
    a, b, c = receivers(), receivers(), receivers()
    monkeypatch.setenv(
        "WK_TEST_HOOKS", f"{a.url('/one/SECRETONE')} {b.url('/two')},\n {c.url('/three')}"
    )
    configure(rt, ("ops", ["env:WK_TEST_HOOKS"], ""))
    (sink,) = notify_config(rt.config()).sinks
    assert len(sink.destinations) == 3
    assert len({d.id for d in sink.destinations}) == 3
    labels = [d.label for d in sink.destinations]
    assert len(set(labels)) == 3 and all("127.0.0.1" in label for label in labels)
    assert not any("SECRETONE" in label or "/two" in label for label in labels)
    add_alerts(rt, [alert(1)])
    pump(lambda: deliver_all(rt), lambda: all(r.titles() for r in (a, b, c)))
    assert [r.titles() for r in (a, b, c)] == [["Alert 1"]] * 3
    # where the variable is not set (status on another machine), each is still shown, by the
    # label the delivery process recorded, and cleanup there keeps what it cannot judge
    monkeypatch.delenv("WK_TEST_HOOKS")
    rt.use_config(rt.config_path.read_text())
    shown = notify_status(rt)["sinks"]["ops"]["destinations"]
    assert sorted(shown) == sorted(f"{label} (secret not set here)" for label in labels)
    assert all(d["delivered"] == 1 for d in shown.values())
    assert notify_cleanup(rt)["destination_shares"] == 0
    assert len(notify_status(rt)["sinks"]["ops"]["destinations"]) == 3


# --- 4. a new sink sees every item written after its file was first loaded -------------------


def test_a_new_sink_sees_the_items_written_before_its_first_delivery_run(runtime, receivers):
    from workers.core.runtime import Runtime

    rt = fast(runtime)
    hook = receivers()
    rt.use_config(f'[[notify]]\nname = "new"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
    # another process (a poll worker, beat, the CLI) loads the file...
    poller = Runtime(rt.settings, rt.redis, rt.config_path)
    poller.config()
    # ...and its first poll writes items before any delivery run has happened
    add_alerts(rt, [alert(1), alert(2)])
    deliver_all(rt)
    pump(lambda: deliver_all(rt), lambda: len(hook.accepted) >= 2, timeout=10, message="both")
    assert sorted(hook.titles()) == ["Alert 1", "Alert 2"]
    status = notify_status(rt)["sinks"]["new"]
    assert status["missed"] == 0 and status["lag"] == 0


# --- 5. hostile text is text -----------------------------------------------------------------

HOSTILE_TITLE = '<script>alert(1)</script> <a href="http://evil.example/">click</a> @everyone'
HOSTILE_SUMMARY = "<img src=x onerror=alert(2)> <b>bold</b> @here <!channel> @channel @all"


def test_markup_in_a_title_reaches_email_as_text_never_as_live_html(runtime, smtp):
    rt = fast(runtime)
    configure(rt, ("mail", [smtp.url()], ""))
    add_alerts(rt, [alert(1, title=HOSTILE_TITLE, summary=HOSTILE_SUMMARY)])
    pump(lambda: deliver_all(rt), lambda: smtp.messages, timeout=30, message="the e-mail")
    (message,) = smtp.messages
    parts = [p for p in message.walk() if not p.is_multipart()]
    for part in parts:
        text = part.get_payload(decode=True).decode("utf-8", "replace")
        if part.get_content_type() == "text/html":
            for live in ("<script", "<a ", "<img", "<b>"):
                assert live not in text, (live, text)
    assert any(p.get_content_type() == "text/plain" for p in parts)
    plain = "".join(
        p.get_payload(decode=True).decode("utf-8", "replace")
        for p in parts
        if p.get_content_type() == "text/plain"
    )
    assert "<img src=x onerror=alert(2)>" in plain  # shown as what it is: text


def test_mass_mentions_are_neutralised_for_a_chat_service(runtime, receivers, monkeypatch):
    # Mattermost's webhook plugin (Apprise's own) against a local receiver
    rt = fast(runtime)
    chat = receivers()
    monkeypatch.setenv("WK_TEST_CHAT", f"mmost://127.0.0.1:{chat.port}/tokenvalue123")
    configure(rt, ("chat", ["env:WK_TEST_CHAT"], ""))
    add_alerts(rt, [alert(1, title=HOSTILE_TITLE, summary=HOSTILE_SUMMARY)])
    pump(lambda: deliver_all(rt), lambda: chat.accepted, timeout=30, message="the chat message")
    text = json.dumps(chat.accepted[0], ensure_ascii=False)
    for mention in ("@everyone", "@here", "@channel", "@all", "<!channel>"):
        assert mention not in text, (mention, text)
    assert "@\u200beveryone" in text and "@\u200bchannel" in text  # still readable


def test_a_webhook_gets_the_text_unchanged(runtime, receivers):
    # a JSON receiver is a program: it gets exactly what the item said
    rt = fast(runtime)
    hook = receivers()
    configure(rt, ("hook", [hook.url()], ""))
    add_alerts(rt, [alert(1, title=HOSTILE_TITLE)])
    pump(lambda: deliver_all(rt), lambda: hook.accepted, message="the webhook")
    assert hook.titles() == [HOSTILE_TITLE]


# --- 7. the delivery process names every unset variable once ---------------------------------


def test_the_delivery_logs_one_line_per_destination_whose_variable_is_unset(
    runtime, receivers, caplog
):
    rt = fast(runtime)
    hook = receivers()
    os.environ.pop("WK_TEST_UNSET", None)
    configure(rt, ("ops", ["env:WK_TEST_UNSET", hook.url()], ""))
    caplog.set_level(logging.INFO)
    add_alerts(rt, [alert(1)])
    for _ in range(3):
        deliver_all(rt)
        time.sleep(0.1)
    assert hook.titles() == ["Alert 1"]  # the other destination is not held up
    lines = [r.getMessage() for r in caplog.records if "WK_TEST_UNSET" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "is not set" in lines[0] and "sink 'ops'" in lines[0]


def test_a_backlog_is_read_as_fast_as_it_is_sent_never_past_the_outbox_cap(runtime, receivers):
    # runs that return at once (their destinations sending in the background) must not move a
    # stream's backlog into the outbox faster than it is sent: past its cap, messages would be
    # dead-lettered ("outbox full") though the receiver is fine
    rt = fast(runtime, notify_batch=50, notify_max_outbox=150, notify_run_wait=0.0)
    hook = receivers()
    configure(rt, ("ops", [hook.url()], ""))
    add_alerts(rt, [alert(i) for i in range(600)])
    pump(lambda: deliver_all(rt), lambda: len(hook.accepted) >= 600, timeout=120, pause=0.0)
    status = notify_status(rt)["sinks"]["ops"]
    assert status["evicted"] == 0 and status["dead_letters"]["size"] == 0, status
    assert len(set(hook.idem_keys())) == 600
