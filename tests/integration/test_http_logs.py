"""HTTP log-endpoint polling against real local servers and a real Redis: each format, dedup
on the key field or the whole entry, broken lines counted while good ones are kept."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from tasks.http_logs.tasks import poll_http_log
from tests.support.helpers import respond, wait_for
from workers.polling.poll import poll_now
from workers.store.streams import CappedStream


@pytest.fixture
def rt(runtime):
    runtime.settings = replace(
        runtime.settings,
        http_connect_timeout=1.0,
        http_read_timeout=0.6,
        host_delay=0.0,
        backoff_base=10.0,
        backoff_max=300.0,
    )
    return runtime


def use_log(rt, server, path: str, fmt: str, key: str | None = None, name: str = "app"):
    key_line = f'key = "{key}"\n' if key else ""
    rt.use_config(
        f'[[http_logs]]\nname = "{name}"\nurl = "{server.url(path)}"\n'
        f'format = "{fmt}"\n{key_line}interval = "30s"\n'
    )
    return rt.sources.get(name)


def logs(rt) -> list[dict[str, Any]]:
    return [f for _, f in CappedStream(rt.redis, "wk:stream:logs", 10**6).latest(10**6)]


def test_ndjson_mixing_good_and_broken_lines_keeps_the_good_and_counts_the_bad(rt, http_server):
    # Given an ndjson endpoint with three good lines, two broken ones and a blank line
    body = (
        '{"id": 1, "level": "INFO", "msg": "start"}\n'
        '{"id": 2, "level": "WARN"\n'
        "\n"
        '{"id": 3, "level": "ERROR", "msg": "disk full"}\n'
        "not json at all\n"
        '{"id": 4, "msg": "done"}\r\n'
    )
    http_server.static("/log", body, headers={"Content-Type": "application/x-ndjson"})
    source = use_log(rt, http_server, "/log", "ndjson", key="id")
    # When polled
    result = poll_now(rt, source)
    # Then the good lines are written with their raw text and parsed fields, the bad counted
    assert {k: result[k] for k in ("status", "fetched", "new", "bad", "error")} == {
        "status": "ok",
        "fetched": 3,
        "new": 3,
        "bad": 2,
        "error": None,
    }
    written = logs(rt)
    assert [e["line"] for e in written] == [
        '{"id": 1, "level": "INFO", "msg": "start"}',
        '{"id": 3, "level": "ERROR", "msg": "disk full"}',
        '{"id": 4, "msg": "done"}',
    ]
    assert written[1]["data"] == {"id": 3, "level": "ERROR", "msg": "disk full"}
    assert written[1]["source"] == "app" and written[1]["fetched_at"]
    assert rt.redis.hget("wk:src:app", "last_bad") == "2"


def test_a_body_of_only_broken_json_lines_is_an_error(rt, http_server):
    http_server.static("/html", "<html>\n<body>maintenance</body>\n</html>\n")
    source = use_log(rt, http_server, "/html", "ndjson")
    result = poll_now(rt, source)
    assert result["status"] == "error"
    assert result["error"].endswith('none of 3 lines is valid JSON (format = "ndjson")')
    assert logs(rt) == []


def test_entries_dedup_on_the_key_field_across_polls(rt, http_server):
    # Given an endpoint re-serving the last entries, one of them edited under the same key
    page = {"n": 0}
    pages = [
        [{"seq": 1, "msg": "a"}, {"seq": 2, "msg": "b"}],
        [{"seq": 2, "msg": "b (edited)"}, {"seq": 3, "msg": "c"}],
    ]

    def handler(req):
        respond(req, 200, json.dumps(pages[min(page["n"], 1)]))
        page["n"] += 1

    http_server.route("/arr", handler)
    source = use_log(rt, http_server, "/arr", "json", key="seq")
    # When polled three times
    news = [poll_now(rt, source)["new"] for _ in range(3)]
    # Then each key was emitted once
    assert news == [2, 1, 0]
    assert [e["data"]["seq"] for e in logs(rt)] == [1, 2, 3]
    assert [e["key"] for e in logs(rt)] == ["seq=1", "seq=2", "seq=3"]


def test_entries_without_the_key_field_dedup_on_the_whole_entry(rt, http_server):
    # Given a json array where some entries lack the key field, with key order varying
    http_server.static(
        "/mixed", json.dumps([{"seq": 1}, {"msg": "x", "n": 1}, {"n": 1, "msg": "x"}, {"msg": "y"}])
    )
    source = use_log(rt, http_server, "/mixed", "json", key="seq")
    # When polled twice
    first, second = poll_now(rt, source), poll_now(rt, source)
    # Then an entry equal to another (whatever its key order) is the same entry
    assert (first["fetched"], first["new"], second["new"]) == (4, 3, 0)


def test_nested_key_fields_are_found_by_a_dotted_path(rt, http_server):
    http_server.static(
        "/nested",
        '{"event": {"id": "e1"}, "m": 1}\n{"event": {"id": "e1"}, '
        '"m": 2}\n{"event": {"id": "e2"}}\n',
    )
    source = use_log(rt, http_server, "/nested", "ndjson", key="event.id")
    assert poll_now(rt, source)["new"] == 2


def test_plain_lines_dedup_on_their_text(rt, http_server):
    # Given a plain-text log re-serving its tail
    http_server.static("/tail", "2024-01-01 boot\n2024-01-01 ready\n\n")
    source = use_log(rt, http_server, "/tail", "lines")
    assert poll_now(rt, source)["new"] == 2
    http_server.static("/tail", "2024-01-01 ready\n2024-01-02 request\n")
    # When polled again, Then only the new line is written, as raw text without data
    assert poll_now(rt, source)["new"] == 1
    written = logs(rt)
    assert [e["line"] for e in written] == [
        "2024-01-01 boot",
        "2024-01-01 ready",
        "2024-01-02 request",
    ]
    assert all("data" not in e for e in written)


@pytest.mark.parametrize(
    "body,message",
    [
        ('{"not": "an array"}', r'expected a JSON array \(format = "json"\), got dict'),
        ("[1, 2", r'not JSON \(format = "json"\)'),
        ("", r'not JSON \(format = "json"\)'),
    ],
)
def test_a_json_endpoint_not_serving_an_array_is_an_error(rt, http_server, body, message):
    http_server.static("/j", body)
    source = use_log(rt, http_server, "/j", "json")
    result = poll_now(rt, source)
    assert result["status"] == "error" and re.search(message, result["error"]), result
    assert rt.redis.hget("wk:src:app", "errors") == "1"


def test_an_empty_ndjson_body_is_a_success_with_nothing_new(rt, http_server):
    http_server.static("/quiet", b"")
    source = use_log(rt, http_server, "/quiet", "ndjson")
    result = poll_now(rt, source)
    assert (result["status"], result["fetched"], result["new"]) == ("ok", 0, 0)


def test_a_failing_log_endpoint_backs_off(rt, http_server):
    http_server.static("/down", b"", 503, {"Retry-After": "45"})
    source = use_log(rt, http_server, "/down", "ndjson")
    result = poll_now(rt, source)
    assert result["status"] == "error" and "HTTP 503" in result["error"]
    assert rt.redis.hget("wk:src:app", "backoff_s") == "45.0"
    assert poll_http_log("app")["reason"] == "not due"


def test_the_real_worker_task_writes_log_entries(rt, http_server, worker):
    # Given an ndjson endpoint and a running worker
    http_server.static("/w", "".join(json.dumps({"i": i}) + "\n" for i in range(7)))
    use_log(rt, http_server, "/w", "ndjson", key="i", name="worked")
    # When the task is sent through the broker
    poll_http_log.delay("worked")
    # Then the entries reach the logs stream
    wait_for(lambda: len(logs(rt)) == 7, timeout=30, message="7 log entries from the worker")
    assert sorted(e["data"]["i"] for e in logs(rt)) == list(range(7))
    assert poll_http_log("nope")["status"] == "skipped"
