"""Secrets (issue 12 #9): a Redis password and the credentials in a source URL never reach a
log line, a stored error, ``status``, metrics, a Redis key name, or a file others can read."""

from __future__ import annotations

import json
import logging
import stat
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from workers.core.connection import RedisUnavailable, check_reachable
from workers.core.files import write_private
from workers.ops.metrics import StatusCollector
from workers.ops.status import collect_status, render_text
from workers.ops.supervisor import Supervisor, run_file
from workers.polling.poll import poll_now

TOKEN, KEY, PASSWORD = "tok3n-planted", "k3y-planted", "pa55-planted"

FEED = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    "<item><title>One</title><link>https://example.org/1</link><guid>u1</guid></item>"
    "</channel></rss>"
)


def _everything_shown(rt) -> str:  # type: ignore[no-untyped-def]
    status = collect_status(rt)
    registry = CollectorRegistry()
    registry.register(StatusCollector(rt))
    return "\n".join(
        [
            json.dumps(status, default=str),
            render_text(status),
            generate_latest(registry).decode(),
            "\n".join(str(k) for k in rt.redis.scan_iter(count=1000)),
            json.dumps({str(k): rt.redis.hgetall(k) for k in rt.redis.scan_iter("wk:src:*")}),
        ]
    )


def test_source_credentials_never_reach_keys_errors_logs_status_or_metrics(
    runtime, http_server, caplog
):
    http_server.static("/ok.rss", FEED, headers={"Content-Type": "application/rss+xml"})
    http_server.static("/down.rss", "boom", status=500)
    base = http_server.url("/").replace("http://", f"http://reader:{TOKEN}@").rstrip("/")
    runtime.settings = replace(runtime.settings, host_delay=0.0)
    rt = runtime.use_config(
        f'[[feeds]]\nname = "ok"\nurl = "{base}/ok.rss?api_key={KEY}"\n'
        f'[[feeds]]\nname = "down"\nurl = "{base}/down.rss?token={KEY}"\n'
        f'[[feeds]]\nname = "refused"\nurl = "http://u:{TOKEN}@127.0.0.1:9/x?apikey={KEY}"\n'
    )
    caplog.set_level(logging.DEBUG)
    for source in rt.sources.view().sources():
        poll_now(rt, source)
    assert rt.redis.hget("wk:src:down", "last_error")  # the failures were recorded...
    assert rt.redis.hget("wk:src:refused", "last_error")
    shown = _everything_shown(rt) + caplog.text
    for secret in (TOKEN, KEY):  # ...without the credentials
        at = shown.find(secret)
        assert at < 0, shown[max(0, at - 300) : at + 50]


def test_redis_password_in_the_query_is_redacted_in_the_one_line_error():
    with pytest.raises(RedisUnavailable) as err:
        check_reachable(f"redis://127.0.0.1:1/0?password={PASSWORD}", timeout=1)
    assert PASSWORD not in str(err.value) and "password=***" in str(err.value)


def test_run_file_is_private_and_holds_no_password(settings, tmp_path):
    from workers.core.sources_file import validate_config

    settings = replace(settings, home=str(tmp_path))
    supervisor = Supervisor(settings, validate_config({}), concurrency=1)
    supervisor.url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    supervisor._record()
    path = run_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    assert json.loads(path.read_text())["redis_url"] == "redis://:***@127.0.0.1:6379/0"


def test_private_files_are_replaced_whole_and_stay_private(tmp_path):
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_url_without_secrets_comes_back_unchanged():
    from workers.core.redact import redact_url

    for url in ("redis+socket:///tmp/wk/redis.sock", "unix:///run/redis.sock", "redis://h:1/0"):
        assert redact_url(url) == url


def test_site_credentials_stay_out_of_listings_warnings_and_status(runtime, http_server, caplog):
    # The faults run found them in each listing's `page` and resolved links, and in the
    # "matched nothing" warning of a later page.
    from tests.integration.test_scrape import card, html_route, listing_html, site_toml

    html_route(http_server, "/l", listing_html(card("w1"), card("w2"), next_href="/l2?x=1"))
    html_route(http_server, "/l2", "<!doctype html><html><body>nothing</body></html>")
    base = http_server.url("/").replace("http://", f"http://watch:{TOKEN}@").rstrip("/")
    runtime.settings = replace(runtime.settings, host_delay=0.0)
    rt = runtime.use_config(site_toml("shop", f"{base}/l?api_key={KEY}", max_pages=3))
    caplog.set_level(logging.DEBUG)
    result = poll_now(rt, rt.sources.get("shop"))
    entries = [f for _, f in rt.redis.xrange("wk:stream:listings")]
    assert len(entries) == 2 and "/watch/w1" in json.dumps(entries)
    shown = _everything_shown(rt) + caplog.text + json.dumps(entries) + json.dumps(result)
    shown += json.dumps(rt.redis.lrange("wk:history:shop", 0, -1))
    for secret in (TOKEN, KEY):
        at = shown.find(secret)
        assert at < 0, shown[max(0, at - 300) : at + 50]


# --- notification URLs (issue 19 #6) ---------------------------------------------------------

PATH_TOKEN = "SECRETPATHTOKEN0planted"


def test_a_webhook_path_token_never_reaches_labels_status_logs_metrics_or_keys(
    runtime, receivers, caplog, capsys
):
    import argparse

    from tasks.notify.commands import add_notify_command
    from tasks.notify.dead_letters import box_letters
    from tasks.notify.tasks import deliver_all
    from tests.support.notify import add_alerts, alert, fast, pump

    rt = fast(runtime, notify_max_attempts=2)
    hook = receivers("500")
    rt.use_config(
        f'[[notify]]\nname = "ops"\nurls = ["{hook.url("/hook/" + PATH_TOKEN)}"]\n'
        'streams = ["alerts"]\n'
    )
    caplog.set_level(logging.DEBUG)
    deliver_all(rt)
    add_alerts(rt, [alert(1)])
    pump(lambda: deliver_all(rt), lambda: rt.redis.llen("wk:notify:ops:dead") == 1)
    parser = argparse.ArgumentParser()
    add_notify_command(parser.add_subparsers(dest="command"), lambda args: rt)
    for argv in (["notify", "status"], ["notify", "status", "--json"], ["notify", "test", "ops"]):
        args = parser.parse_args(argv)
        args.func(args)
    (sink_label,) = [d for d in collect_status(rt)["notify"]["sinks"]["ops"]["destinations"]]
    assert sink_label == f"JSON 127.0.0.1:{hook.port}"
    shown = _everything_shown(rt) + caplog.text + capsys.readouterr().out
    shown += json.dumps(box_letters(rt, 10), default=str)
    shown += json.dumps(rt.redis.lrange("wk:notify:ops:log", 0, -1))
    shown += json.dumps(rt.redis.lrange("wk:notify:ops:dead", 0, -1))
    at = shown.find(PATH_TOKEN)
    assert at < 0, shown[max(0, at - 300) : at + 50]


@pytest.mark.parametrize(
    "query",
    [
        "?+Authorization=Bearer%20abcdef123456",
        "?+X-Api-Key=abcdef123456",
        "?-apikey=abcdef123456",
        "?:token=abcdef123456",
        "?-access_token=abcdef123456",
    ],
)
def test_header_and_query_secrets_written_in_the_file_are_check_errors(query):
    from tasks.notify.config import read_sinks

    problems: list[str] = []
    read_sinks([{"name": "ops", "urls": [f"json://127.0.0.1:8080/hook{query}"]}], problems, {})
    assert len(problems) == 1, problems
    assert problems[0].startswith("sink 'ops': urls[0]: ") and "env:NAME" in problems[0]
    assert "abcdef123456" not in problems[0]
    # the same URL from the environment is fine
    good: list[str] = []
    env = {"HOOK": f"json://127.0.0.1:8080/hook{query}"}
    (sink,) = read_sinks([{"name": "ops", "urls": ["env:HOOK"]}], good, env)
    assert good == [] and "abcdef123456" not in sink.destinations[0].label
