"""The beat schedule and the maintenance task, run by a real worker."""

from __future__ import annotations

from beat_schedule import build_schedule
from tests.support.helpers import wait_for
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
    schedule = build_schedule(settings, config)
    assert schedule["feed:f"]["task"] == "tasks.feeds.poll_feed"
    assert schedule["feed:f"]["args"] == ("f",) and schedule["feed:f"]["schedule"] == 120
    assert schedule["http_log:l"]["task"] == "tasks.http_logs.poll_http_log"
    assert schedule["site:s"]["task"] == "tasks.scrape.scrape_site"
    assert schedule["maintenance:cleanup"]["schedule"] == settings.moonshot_cleanup_interval
    # A message never outlives its entry's "queued" marker (no second dispatch while it waits),
    # so each entry has at most one live message in the queue.
    for entry in schedule.values():
        assert entry["options"]["expires"] == settings.queued_max_age > 0


def test_cleanup_on_a_worker_forgets_sources_removed_from_the_file(runtime, worker):
    # Given state for a configured source and for one no longer in the file
    runtime.use_config('[[feeds]]\nname = "kept"\nurl = "http://127.0.0.1:9/"\n')
    for name in ("kept", "gone"):
        runtime.redis.hset(f"wk:src:{name}", "errors", 0)
        runtime.redis.zadd(f"wk:seen:{name}", {"abc": 1})
    # When the cleanup task runs on a real worker
    from tasks.cleanup import cleanup

    cleanup.delay()
    # Then only the removed source's keys are gone
    wait_for(
        lambda: not runtime.redis.exists("wk:src:gone", "wk:seen:gone"),
        timeout=30,
        message="removed source's keys deleted",
    )
    assert runtime.redis.exists("wk:src:kept", "wk:seen:kept") == 2
