"""Adding a source kind is one module plus its import: the sources file, the poll loop, the
schedule, ``watchkeeper poll`` and ``status`` all pick it up from its declaration."""

from __future__ import annotations

import json
from typing import Any

import tests.support.json_feed_kind  # noqa: F401 (the new kind's one declaration)
from beat_schedule import build_schedule
from tests.support.helpers import HTTPFixtureServer
from workers.ops.status import collect_status
from workers.polling.kinds import kind_of
from workers.polling.poll import poll_source


def test_a_new_kind_is_read_scheduled_polled_and_reported(
    runtime: Any, http_server: HTTPFixtureServer
) -> None:
    # Given a JSON Feed served locally and a sources file naming it in its own section
    http_server.static(
        "/feed.json",
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "items": [{"id": "1", "title": "One"}, {"id": "2", "title": "Two"}],
            }
        ),
        headers={"Content-Type": "application/feed+json"},
    )
    rt = runtime.use_config(
        f'[[json_feeds]]\nname = "jf"\nurl = "{http_server.url("/feed.json")}"\ninterval = "1m"\n'
    )
    source = rt.sources.get("jf")
    # When it is scheduled, polled twice and reported
    schedule = build_schedule(rt.settings, rt.sources.view().sources())
    first = poll_source(rt, source, kind_of(source), scheduled=False)
    second = poll_source(rt, source, kind_of(source), scheduled=False)
    status = collect_status(rt)
    # Then beat polls it with its task, items were new once, and status shows it
    assert schedule["json_feed:jf"]["task"] == "tasks.json_feed.poll"
    assert (first["new"], second["new"], second["duplicate"]) == (2, 0, 2)
    assert status["sources"]["jf"]["kind"] == "json_feed"
    assert status["sources"]["jf"]["seen"]["size"] == 2
