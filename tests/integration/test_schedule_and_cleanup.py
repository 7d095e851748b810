"""The beat schedule and the maintenance task, run by a real worker."""

from __future__ import annotations

from beat_schedule import build_schedule
from workers.core.sources_file import validate_config


def test_one_entry_per_source_and_every_message_expires_with_its_queued_marker(settings):
    config = validate_config(
        {
            "feeds": [{"name": "f", "url": "http://127.0.0.1:9/f", "interval": "2m"}],
            "http_logs": [{"name": "l", "url": "http://127.0.0.1:9/l", "interval": 30}],
            "sites": [
                {
                    "name": "s",
                    "url": "http://127.0.0.1:9/s",
                    "item": "div",
                    "id": "ref",
                    "fields": {"ref": ".ref"},
                }
            ],
        }
    )
    schedule = build_schedule(settings, config.sources)
    assert schedule["feed:f"]["task"] == "tasks.feeds.poll_feed"
    assert schedule["feed:f"]["args"] == ("f",) and schedule["feed:f"]["schedule"] == 120
    assert schedule["http_log:l"]["task"] == "tasks.http_logs.poll_http_log"
    assert schedule["site:s"]["task"] == "tasks.scrape.scrape_site"
    assert schedule["maintenance:cleanup"]["schedule"] == settings.moonshot_cleanup_interval
    # A message never outlives its entry's "queued" marker (no second dispatch while it waits),
    # so each entry has at most one live message in the queue; both last two periods, so a
    # message held by a worker that died before starting it delays its source only that long.
    assert schedule["feed:f"]["options"]["expires"] == 240
    assert schedule["http_log:l"]["options"]["expires"] == 60
    for entry in schedule.values():
        assert 5 <= entry["options"]["expires"] <= settings.queued_max_age


def test_cleanup_never_deletes_a_source_missing_from_its_own_file_it_ages_out(runtime):
    # Given a source polled by another machine whose sources file this worker does not share
    runtime.use_config('[[feeds]]\nname = "kept"\nurl = "http://127.0.0.1:9/"\n')
    for name in ("kept", "elsewhere"):
        runtime.redis.hset(f"wk:src:{name}", "errors", 0)
        runtime.redis.expire(f"wk:src:{name}", 3600)
        runtime.redis.zadd(f"wk:seen:{name}", {"abc": 1})
        runtime.redis.expire(f"wk:seen:{name}", 3600)
    # When every cleanup step runs (the task's body) with this process's view of the file
    from tasks.cleanup import run_cleanup

    results = run_cleanup(runtime)
    assert results and not any("error" in r for r in results.values())
    # Then every key is still there, each with the TTL its polls refresh
    names = ("wk:src:elsewhere", "wk:seen:elsewhere", "wk:src:kept", "wk:seen:kept")
    assert runtime.redis.exists(*names) == 4
    assert all(0 < runtime.redis.ttl(k) <= 3600 for k in names)


def test_a_site_history_carries_the_seen_age_as_its_ttl(runtime):
    from tasks.scrape.history import history

    history(runtime, "somewhere").push({"run": 1})
    ttl = runtime.redis.ttl("wk:history:somewhere")
    assert 0 < ttl <= runtime.settings.seen_max_age
