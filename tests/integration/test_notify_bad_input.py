"""Bad input for delivery: failing, slow and rude receivers, odd templates, huge messages, a
catastrophic regex and a Redis restart mid-delivery — each with the other destinations and
sinks unaffected, nothing lost, nothing sent twice within the retry window."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tasks.notify.config import notify_config
from tasks.notify.delivery_log import delivery_log
from tasks.notify.status import notify_status
from tasks.notify.tasks import deliver_all
from tests.support.notify import add_alerts, alert, fast, pump


def configure(rt, *sinks: tuple[str, list[str], str]) -> None:
    text = ""
    for name, urls, extra in sinks:
        quoted = ", ".join(f'"{u}"' for u in urls)
        text += f'[[notify]]\nname = "{name}"\nurls = [{quoted}]\nstreams = ["alerts"]\n{extra}\n'
    rt.use_config(text)
    deliver_all(rt)  # creates the groups: later entries are the sinks'


def status(rt, name: str = "ops") -> dict:
    return notify_status(rt)["sinks"][name]


def first_fails(action: str):
    return lambda n, payload: action if n == 1 else "ok"


@pytest.mark.parametrize("action", ["500", "close", "slow"])
def test_a_failed_first_attempt_is_retried_and_the_item_arrives(runtime, hook, action):
    rt = fast(runtime)
    hook.behaviour = first_fails(action)
    hook.slow_s = 2.5  # past the 1 s send timeout
    configure(rt, ("ops", [hook.url()], ""))
    add_alerts(rt, [alert(1)])
    pump(lambda: deliver_all(rt), lambda: status(rt)["delivered"] == 1, message="delivered")
    entries = delivery_log(rt, notify_config(rt.config()).sink("ops"))
    assert [e["outcome"] for e in entries] == ["delivered", "retry"]
    expected = {"500": "HTTP 500", "close": "connection closed", "slow": "timed out after 1s"}
    assert entries[1]["error"] == expected[action]
    # a slow receiver may still have processed the timed-out request: same idempotency key
    assert set(hook.idem_keys()) == {entries[0]["key"]}
    assert status(rt)["retried"] == 1 and status(rt)["outbox"]["size"] == 0


@pytest.mark.parametrize("code", ["429", "503"])
def test_retry_after_is_honoured(runtime, hook, code):
    rt = fast(runtime, notify_backoff_max=30.0)
    hook.behaviour = first_fails(code)
    hook.retry_after = "3"
    configure(rt, ("ops", [hook.url()], ""))
    add_alerts(rt, [alert(1)])
    deliver_all(rt)
    sink = notify_config(rt.config()).sink("ops")
    due_key = f"{rt.settings.prefix}notify:ops:due:{sink.destinations[0].id}"
    ((_, due_at),) = rt.redis.zrange(due_key, 0, -1, withscores=True)
    seconds, micros = rt.redis.time()
    assert due_at - (seconds + micros / 1e6) > 2.0  # not the 0.05 s backoff: Retry-After
    deliver_all(rt)
    assert hook.accepted == [] and hook.attempts == 1  # not due yet: not tried again
    assert delivery_log(rt, sink)[0]["retry_in_s"] == 3.0


def test_a_missing_template_field_renders_empty_and_is_counted(runtime, hook):
    rt = fast(runtime)
    templates = '[notify.templates.alerts]\ntitle = "{title}{nope}"\nbody = "[{fields.x}]"'
    configure(rt, ("ops", [hook.url()], templates))
    add_alerts(rt, [alert(1), alert(2)])
    deliver_all(rt)
    assert sorted(hook.titles()) == ["Alert 1", "Alert 2"]
    assert {p["message"] for p in hook.accepted} == {"[]"}
    assert status(rt)["template_missing"] == 4


def test_an_oversized_message_is_truncated_and_counted(runtime, hook):
    rt = fast(runtime, notify_max_chars=1000)
    configure(rt, ("ops", [hook.url()], ""))
    add_alerts(rt, [alert(1, summary="x" * 50_000), alert(2)])
    deliver_all(rt)
    messages = sorted(hook.accepted, key=lambda p: p["title"])
    assert len(messages[0]["message"]) <= 1000 and messages[0]["message"].endswith("[truncated]")
    assert "[truncated]" not in messages[1]["message"]
    assert status(rt)["truncated"] == 1


def test_a_service_size_limit_truncates_too(runtime, hook):
    rt = fast(runtime, notify_max_chars=100_000)  # above Apprise's JSON limit (32768)
    configure(rt, ("ops", [hook.url()], ""))
    add_alerts(rt, [alert(1, summary="y" * 40_000)])
    deliver_all(rt)
    (message,) = hook.accepted
    assert len(message["message"]) <= 32768 and message["message"].endswith("[truncated]")
    assert status(rt)["truncated"] == 1


def test_a_catastrophic_regex_is_bounded_and_other_sinks_unaffected(runtime, hook, other):
    rt = fast(runtime)
    configure(
        rt,
        ("evil", [hook.url()], 'include = ["(a+)+$", "(x+x+)+y"]'),
        ("plain", [other.url()], ""),
    )
    add_alerts(rt, [alert(1, title="a" * 30_000 + "!", summary="x" * 30_000)])
    deliver_all(rt)  # with a backtracking engine this would not return in our lifetime
    assert hook.accepted == [] and len(other.accepted) == 1
    assert status(rt, "evil")["filtered"] == 1


def test_a_failing_sink_does_not_hold_up_another(runtime, hook, other):
    rt = fast(runtime, notify_max_attempts=100)
    hook.behaviour = lambda n, payload: "500"
    configure(rt, ("bad", [hook.url()], ""), ("good", [other.url()], ""))
    add_alerts(rt, [alert(i) for i in range(5)])
    deliver_all(rt)
    assert len(other.accepted) == 5
    assert status(rt, "bad")["outbox"]["size"] == 5 and status(rt, "good")["outbox"]["size"] == 0


def test_redis_restarted_mid_delivery_loses_nothing_and_sends_nothing_twice(
    settings, tmp_path: Path, hook
):
    from workers.core.connection import EmbeddedRedis, connect
    from workers.core.runtime import Runtime

    server = EmbeddedRedis(tmp_path / "own-redis")
    client = connect(server.acquire(), socket_timeout=5)
    config = tmp_path / "sources.toml"
    config.write_text(f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
    rt = fast(Runtime(settings, client, config), notify_timeout=30.0)
    try:
        deliver_all(rt)
        add_alerts(rt, [alert(1), alert(2)])
        restarted = threading.Event()

        def slow_first(n: int, payload: dict) -> str:
            if n == 1:  # Redis goes down and comes back while this request is in flight
                server.release()
                time.sleep(0.5)
                server.acquire()
                restarted.set()
            return "ok"

        hook.behaviour = slow_first
        # The restart can outlast one run's budget; the rest is sent by the next runs.
        pump(lambda: deliver_all(rt), lambda: len(hook.accepted) == 2, message="both alerts")
        assert restarted.is_set()
        for _ in range(3):
            deliver_all(rt)
        assert sorted(hook.titles()) == ["Alert 1", "Alert 2"]
        assert len(set(hook.idem_keys())) == 2 and hook.attempts == 2
        after = notify_status(rt)["sinks"]["ops"]
        assert after["delivered"] == 2 and after["outbox"]["size"] == 0
    finally:
        client.close()
        server.release()
