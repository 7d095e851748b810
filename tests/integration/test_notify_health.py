"""Source-health notifications (one per change of state) and the notify cleanup step."""

from __future__ import annotations

from tasks.notify.cleanup import notify_cleanup
from tasks.notify.health import source_health_changed
from tasks.notify.tasks import deliver, deliver_all
from tests.support.notify import add_alerts, alert, fast, pump
from tests.support.notify_receivers import JsonReceiver


def run() -> None:
    deliver.apply_async(ignore_result=False).get(timeout=30)


def test_health_messages_once_per_change_of_state(runtime, worker, hook):
    rt = fast(runtime, notify_after_errors=3)
    rt.use_config(
        '[[feeds]]\nname = "world"\nurl = "http://127.0.0.1:9/feed"\n'
        f'[[notify]]\nname = "ops"\nurls = ["{hook.url()}"]\nstreams = ["health"]\n'
    )
    run()
    streak = [1, 2, 3, 4, 5, 6, 0, 0, 0, 1, 2, 3, 4]
    changes = [
        source_health_changed(rt, "world", {"errors": n, "last_error": "HTTP 503"}, kind="feed")
        for n in streak
    ]
    assert [c for c in changes if c] == ["down", "up", "down"]
    # the first change triggered a run at once; beat's runs (here: ours) deliver the rest
    pump(run, lambda: len(hook.accepted) >= 3, message="three health messages")
    for _ in range(2):
        run()
    assert hook.titles() == [
        "Source world is down",
        "Source world recovered",
        "Source world is down",
    ]
    assert "3 consecutive errors; last: HTTP 503" in hook.accepted[0]["message"]
    entries = rt.redis.xrange(f"{rt.settings.prefix}stream:health")
    assert [e[1]["state"] for e in entries] == ["down", "up", "down"]
    assert [e[1]["seq"] for e in entries] == ["1", "2", "3"]
    assert set(rt.redis.hkeys(f"{rt.settings.prefix}notify:health")) == {"world"}


def test_a_success_after_few_errors_costs_no_redis_call(runtime):
    rt = fast(runtime, notify_after_errors=3)
    assert source_health_changed(rt, "world", {"errors": 0}, previous_errors=2) == ""
    assert not rt.redis.exists(f"{rt.settings.prefix}stream:health")


def test_cleanup_removes_what_removed_sinks_destinations_and_sources_left(runtime, hook):
    rt = fast(runtime, notify_max_attempts=100)
    other = JsonReceiver().start()
    other.behaviour = lambda n, p: "500"
    try:
        rt.use_config(
            f'[[notify]]\nname = "old"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n'
            f'[[notify]]\nname = "keep"\nurls = ["{hook.url()}", "{other.url()}"]\n'
            'streams = ["alerts", "logs"]\n'
        )
        deliver_all(rt)
        add_alerts(rt, [alert(1)])
        deliver_all(rt)
        rt.redis.hset(f"{rt.settings.prefix}notify:health", "gone-source", "{}")
        prefix = rt.settings.prefix
        assert rt.redis.exists(f"{prefix}notify:old:state")
        assert rt.redis.hlen(f"{prefix}notify:keep:outbox") == 1  # `other` still owes it
        rt.use_config(f'[[notify]]\nname = "keep"\nurls = ["{hook.url()}"]\nstreams = ["alerts"]\n')
        counts = notify_cleanup(rt)
        assert counts["groups"] == 2  # old on alerts, keep on logs
        assert counts["destination_shares"] == 1 and counts["health"] == 1
        assert not rt.redis.exists(f"{prefix}notify:old:state")
        groups = {g["name"] for g in rt.redis.xinfo_groups(f"{prefix}stream:alerts")}
        assert groups == {"notify:keep"}
        assert rt.redis.hlen(f"{prefix}notify:keep:outbox") == 0
        assert rt.redis.xpending(f"{prefix}stream:alerts", "notify:keep")["pending"] == 0
    finally:
        other.stop()


def test_after_poll_with_the_real_poll_loop_state(runtime, http_server):
    from tasks.notify.hooks import after_poll
    from workers.core import keys
    from workers.polling.poll import poll_now
    from workers.polling.state import SourceState

    rt = fast(runtime, notify_after_errors=2, host_delay=0)
    http_server.static("/feed", "down for maintenance", status=500)
    rt.use_config(f'[[feeds]]\nname = "world"\nurl = "{http_server.url("/feed")}"\n')
    source = rt.sources.get("world")
    for _ in range(4):
        previous = SourceState.load(rt.redis, rt.settings, "world").errors
        outcome = poll_now(rt, source)
        saved = rt.redis.hgetall(keys.SOURCE_STATE.key(rt.settings, "world"))
        after_poll(rt, source, "alerts", saved, previous, outcome["new"])
    feed = '<rss version="2.0"><channel><title>t</title><item><guid>1</guid><title>Hi</title>'
    http_server.static("/feed", feed + "</item></channel></rss>")
    previous = SourceState.load(rt.redis, rt.settings, "world").errors
    outcome = poll_now(rt, source)
    saved = rt.redis.hgetall(keys.SOURCE_STATE.key(rt.settings, "world"))
    after_poll(rt, source, "alerts", saved, previous, outcome["new"])
    entries = rt.redis.xrange(f"{rt.settings.prefix}stream:health")
    assert [(e[1]["state"], e[1]["errors"]) for e in entries] == [("down", "2"), ("up", "0")]
    assert "500" in entries[0][1]["last_error"] and entries[0][1]["kind"] == "feed"
