"""Delivery through a real worker to real receivers on 127.0.0.1 (JSON webhook and SMTP)."""

from __future__ import annotations

from tasks.notify.tasks import deliver, deliver_all, notify_new_items
from tests.support.helpers import wait_for
from tests.support.notify import add_alerts, alert, fast, pump


def sink_config(name: str, urls: list[str], extra: str = "") -> str:
    quoted = ", ".join(f'"{u}"' for u in urls)
    return f'[[notify]]\nname = "{name}"\nurls = [{quoted}]\n{extra}\n'


def test_items_arrive_once_filtered_as_configured(runtime, worker, hook, smtp):
    rt = fast(runtime)
    rt.use_config(
        sink_config(
            "ops",
            [hook.url(), smtp.url()],
            'streams = ["alerts"]\ninclude = ["(?i)flood|quake"]\nexclude = ["(?i)drill"]',
        )
    )
    deliver_all(rt)  # first run creates the sink's group at the end of the stream
    titles = ["Flood in Lyon", "Sunny day", "Flood drill in Lima", "Quake near Osaka"]
    add_alerts(rt, [alert(i, t) for i, t in enumerate(titles)])
    assert notify_new_items(rt, "alerts")  # the writer's request: a run starts at once
    wanted = {"Flood in Lyon", "Quake near Osaka"}
    wait_for(lambda: len(hook.accepted) >= 2, message="the webhook's 2")
    # Apprise paces e-mail (5.5 s between messages to one server): beat's runs finish it
    pump(run_task, lambda: len(smtp.messages) >= 2, message="the 2 e-mails")
    for _ in range(2):  # more runs deliver nothing more
        run_task()
    assert sorted(hook.titles()) == sorted(wanted)
    assert sorted(str(m["Subject"]) for m in smtp.messages) == sorted(wanted)
    assert len(set(hook.idem_keys())) == 2
    assert all(k.startswith("alerts:") and k.endswith(":ops") for k in hook.idem_keys())
    assert all(any(k in body for k in hook.idem_keys()) for body in smtp.bodies())


def run_task() -> None:
    deliver.apply_async(ignore_result=False).get(timeout=30)


def sink_of(rt, name="ops"):
    from tasks.notify.config import notify_config

    return notify_config(rt.config()).sink(name)


def status_of(rt, name="ops"):
    from tasks.notify.status import notify_status

    return notify_status(rt)["sinks"][name]


def test_a_receiver_down_for_a_while_then_back_gets_every_item(runtime, worker, hook):
    rt = fast(runtime, notify_max_attempts=50)
    rt.use_config(sink_config("ops", [hook.url()], 'streams = ["alerts"]'))
    run_task()
    hook.stop()
    add_alerts(rt, [alert(i) for i in range(4)])
    pump(run_task, lambda: status_of(rt)["retried"] >= 8, message="retries while down")
    assert hook.accepted == []
    hook.start()
    pump(run_task, lambda: len(hook.accepted) >= 4, message="all 4 after the receiver is back")
    run_task()
    assert sorted(hook.titles()) == [f"Alert {i}" for i in range(4)]
    assert len(set(hook.idem_keys())) == 4
    status = status_of(rt)
    assert status["delivered"] == 4 and status["failed"] == 0 and status["outbox"]["size"] == 0
    stream = rt.redis.xpending(f"{rt.settings.prefix}stream:alerts", "notify:ops")
    assert stream["pending"] == 0  # every entry acknowledged


def test_a_receiver_down_forever_is_dead_lettered_while_the_other_gets_everything(
    runtime, worker, hook
):
    from tests.support.notify_receivers import free_port

    rt = fast(runtime, notify_max_attempts=3)
    dead_url = f"json://127.0.0.1:{free_port()}/never"
    rt.use_config(sink_config("ops", [hook.url(), dead_url], 'streams = ["alerts"]'))
    run_task()
    add_alerts(rt, [alert(i) for i in range(5)])
    pump(run_task, lambda: status_of(rt)["dead_letters"]["size"] >= 5, message="5 dead letters")
    run_task()
    assert sorted(hook.titles()) == [f"Alert {i}" for i in range(5)]
    status = status_of(rt)
    assert status["failed"] == 5 and status["delivered"] == 5
    dead = status["dead_letters"]
    assert dead["size"] == 5 and all(d["attempts"] == 3 for d in dead["latest"])
    assert all("127.0.0.1" in d["destination"] for d in dead["latest"])
    assert status["outbox"]["size"] == 0
    pending = rt.redis.xpending(f"{rt.settings.prefix}stream:alerts", "notify:ops")
    assert pending["pending"] == 0


def test_a_stream_trimmed_past_a_stopped_sink_shows_the_exact_missed_count(runtime, worker, hook):
    rt = fast(runtime)
    rt.use_config(sink_config("ops", [hook.url()], 'streams = ["alerts"]'))
    run_task()  # the sink exists: its group sits at the end of the stream
    add_alerts(rt, [alert(i) for i in range(3)])
    run_task()
    assert len(hook.accepted) == 3
    # the sink is stopped (no runs) while 30 more entries arrive into a stream capped at 10
    add_alerts(rt, [alert(i) for i in range(3, 33)], exact=True, cap=10)
    status = status_of(rt)
    assert status["missed"] == 20
    assert status["streams"]["alerts"]["missed_not_yet_counted"] == 20
    assert status["lag"] == 10
    pump(run_task, lambda: len(hook.accepted) >= 13, message="the 10 still held")
    status = status_of(rt)
    assert status["missed"] == 20 and status["streams"]["alerts"]["missed_not_yet_counted"] == 0
    assert status["lag"] == 0
    assert sorted(hook.titles()) == sorted(f"Alert {i}" for i in [0, 1, 2, *range(23, 33)])


def test_digest_mode_sends_one_message_per_period(runtime, worker, hook):
    rt = fast(runtime, notify_digest_items=3)
    rt.use_config(sink_config("daily", [hook.url()], 'streams = ["alerts"]\ndigest = "1s"'))
    run_task()
    add_alerts(rt, [alert(i) for i in range(5)])
    run_task()
    assert hook.accepted == []  # collecting
    pump(run_task, lambda: len(hook.accepted) >= 1, message="the digest")
    run_task()
    (digest,) = hook.accepted
    assert digest["title"] == "daily: 5 new items"
    assert digest["message"].splitlines() == [
        "• Alert 0",
        "• Alert 1",
        "• Alert 2",
        "… and 2 more",
    ]
    assert (
        digest["idempotency_key"].startswith("digest:") and status_of(rt, "daily")["digests"] == 1
    )
    add_alerts(rt, [alert(9)])
    pump(run_task, lambda: len(hook.accepted) >= 2, message="the next period's digest")
    assert hook.accepted[1]["title"] == "daily: 1 new item"


def test_a_packed_logs_entry_is_not_counted_as_missed_lines(runtime, worker, hook):
    # The TCP listener packs lines under backlog: one entry numbered seq..seq+count-1
    rt = fast(runtime)
    rt.use_config(sink_config("ops", [hook.url()], 'streams = ["logs"]'))
    run_task()
    stream, counter = "wk:stream:logs", "wk:stream:logs:seq"
    rt.redis.xadd(
        stream, {"peer": "p", "lines": "a\nb\nc", "count": "3", "seq": "1", "schema": "1"}
    )
    rt.redis.xadd(stream, {"peer": "p", "line": "d", "seq": "4", "schema": "1"})
    rt.redis.set(counter, 4)
    pump(run_task, lambda: len(hook.accepted) >= 2, message="both entries")
    status = status_of(rt)
    assert status["missed"] == 0 and status["streams"]["logs"]["missed_not_yet_counted"] == 0


def test_due_decisions_follow_redis_time_not_this_machines_clock(runtime, monkeypatch, hook):
    """accept.lua and due.lua score with Redis TIME: a delivery process whose clock is off by
    an hour must neither send early (a backoff ignored) nor stall (due messages never sent)."""
    import time as real_time
    from types import SimpleNamespace

    import tasks.notify.deliver as notify_deliver
    import tasks.notify.tasks as notify_tasks
    from workers.core import keys

    rt = fast(runtime, notify_batch=2)
    rt.use_config(sink_config("ops", [hook.url()], 'streams = ["alerts"]'))
    sink = sink_of(rt)
    (dest,) = sink.destinations
    pairs = [(sink, dest)]
    due_key = keys.NOTIFY_DUE.key(rt.settings, sink.name, dest.id)
    seconds, micros = rt.redis.time()
    redis_now = seconds + micros / 1e6

    def skewed(by: float) -> None:
        clock = SimpleNamespace(
            time=lambda: real_time.time() + by, monotonic=real_time.monotonic, sleep=real_time.sleep
        )
        monkeypatch.setattr(notify_tasks, "time", clock)
        monkeypatch.setattr(notify_deliver, "time", clock)

    # Given two messages whose backoff ends in half an hour of Redis time
    rt.redis.zadd(due_key, {"m1": redis_now + 1800, "m2": redis_now + 1800})
    # When this machine's clock runs an hour ahead
    skewed(3600)
    # Then they are not due, and the sink is not behind (it owes nothing due)
    assert notify_tasks.due_now(rt, pairs) == [False]
    assert notify_tasks.sinks_behind(rt, pairs) == set()
    # Given two messages due half an hour ago (Redis time)
    rt.redis.zadd(due_key, {"m1": redis_now - 1800, "m2": redis_now - 1800})
    # When this machine's clock runs an hour behind
    skewed(-3600)
    # Then they are due, and the sink (owing a full batch due now) is behind
    assert notify_tasks.due_now(rt, pairs) == [True]
    assert notify_tasks.sinks_behind(rt, pairs) == {"ops"}
    # And with the clock still an hour behind, a new item is delivered, not left waiting
    rt.redis.delete(due_key)
    deliver_all(rt)  # the sink's group, at the end of the stream
    add_alerts(rt, [alert(1, "Flood in Lyon")])
    pump(lambda: deliver_all(rt), lambda: hook.accepted, message="the late clock's delivery")
    assert hook.titles() == ["Flood in Lyon"]
