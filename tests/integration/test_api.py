"""The REST API over real HTTP (uvicorn on 127.0.0.1) against the test Redis. Every answer —
success and error — is validated against the API's own OpenAPI document
(``tests/support/api.py``), and the document against OpenAPI 3.1."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate as validate_spec

from tests.support.api import ApiClient, Document
from tests.support.helpers import ROOT
from tests.support.web import Sent, dashboard
from workers.core import keys
from workers.guard.stats import MemoryStore
from workers.ops.sources.apply import apply_file
from workers.ops.web.api.openapi import document
from workers.polling.kinds import KINDS
from workers.store.streams import CappedStream

TOKEN = "api-write-token-for-tests"
READ = "api-read-token-for-tests"
WEB = "dashboard-token-for-tests"
FILE = """
[[feeds]]
name = "filed"
url = "http://127.0.0.1:9/filed.rss"
interval = "1h"
tags = ["news"]
"""
FEED = {"kind": "feed", "name": "world", "url": "http://127.0.0.1:9/world.rss", "interval": "1h"}
SITE = {
    "kind": "site",
    "name": "shop",
    "url": "http://127.0.0.1:9/list",
    "item": "div.l",
    "id": "ref",
    "fields": {"ref": ".ref", "title": "h2"},
}
OPML = (
    '<?xml version="1.0"?><opml version="2.0"><body><outline text="Tech">'
    '<outline title="Imported One" xmlUrl="http://127.0.0.1:9/one.rss"/></outline>'
    "</body></opml>"
)


def test_the_document_is_openapi_3_1_with_a_schema_per_kind():
    doc = document()
    validate_spec(doc)  # raises on any violation of OpenAPI 3.1
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for kind in KINDS:
        title = "".join(p.capitalize() for p in kind.name.split("_"))
        new = schemas[f"{title}SourceNew"]
        declared = {f.name for f in kind.fields}
        assert declared <= set(new["properties"]), kind.name
        assert new["additionalProperties"] is False


def test_every_endpoint_answers_as_its_document_says(runtime):
    rt = runtime.use_config(FILE)
    s = rt.settings
    store = MemoryStore(rt.redis, s)
    call = {"args": ["filed"], "kwargs": {"force": True}}
    store.dead_letter("t-1", "tasks.feeds.poll_feed", "('filed',)", {"count": "3"}, "n", call)
    store.dead_letter("t-2", "tasks.feeds.poll_feed", "(<object>,)", {"count": "3"}, "n", None)
    stream = CappedStream(
        rt.redis, keys.STREAM.key(s, "alerts"), 100, keys.STREAM_SEQ.key(s, "alerts")
    )
    stream.add_many({"source": "filed", "title": f"news {i}"} for i in range(5))
    sent = Sent()
    with dashboard(rt, sent, api_token=TOKEN, api_read_tokens=(READ,)) as base:
        api = ApiClient(base, TOKEN)
        anonymous, reader = api.with_token(""), api.with_token(READ)
        assert api.get("/openapi.json").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200

        # sources: create
        created = api.post("/sources", FEED, check_request=True)
        assert created.status_code == 201 and created.headers["location"].endswith("/world")
        assert created.json()["owner"] == "api" and created.json()["health"] == "new"
        assert api.post("/sources", SITE, check_request=True).status_code == 201
        bad = api.post("/sources", {**FEED, "name": "bad", "interval": "soon"})
        assert bad.status_code == 400
        assert bad.json()["error"] == (
            "source 'bad': interval: 'soon' is not a duration (seconds, or e.g. '30s', '5m', '1h')"
        )
        assert api.post("/sources", FEED).status_code == 409
        assert api.post("/sources", {**FEED, "kind": "radio"}).status_code == 400
        assert api.post("/sources", raw=b"{not json").status_code == 400
        assert api.post("/sources", raw=b"[" * 20 + b"]" * 20).status_code == 400
        assert reader.post("/sources", {**FEED, "name": "r"}).status_code == 403
        assert anonymous.post("/sources", {**FEED, "name": "r"}).status_code == 401

        # list, get
        listed = api.get("/sources").json()
        assert {x["name"] for x in listed["sources"]} == {"filed", "world", "shop"}
        assert listed["next"] is None
        assert (
            reader.get("/sources", params={"kind": "site"}).json()["sources"][0]["name"] == "shop"
        )
        assert api.get("/sources", params={"cursor": "nope"}).status_code == 400
        assert api.get("/sources", params={"state": "sleepy"}).status_code == 400
        assert anonymous.get("/sources").status_code == 401
        assert api.get("/sources/world").json()["fields"]["interval"] == "1h"
        assert api.get("/sources/nobody").status_code == 404

        # patch
        patched = api.patch("/sources/world", {"interval": "2h", "tags": ["x"]}, check_request=True)
        assert patched.status_code == 200 and patched.json()["fields"]["tags"] == ["x"]
        removed_key = api.patch("/sources/world", {"tags": None}, check_request=True)
        assert "tags" not in removed_key.json()["fields"]
        assert api.patch("/sources/world", {"interval": 0}).status_code == 400
        assert api.patch("/sources/world", {"kind": "site"}).status_code == 400
        assert api.patch("/sources/nobody", {"interval": "2h"}).status_code == 404
        filed = api.patch("/sources/filed", {"interval": "2h"})
        assert filed.status_code == 409
        assert filed.json()["error"].startswith("source 'filed': owner: file:")

        # pause, resume, check now
        assert api.post("/sources/world/pause").json()["paused"] is True
        assert (
            api.get("/sources", params={"state": "paused"}).json()["sources"][0]["name"] == "world"
        )
        assert api.post("/sources/world/resume").json()["paused"] is False
        assert api.post("/sources/nobody/pause").status_code == 404
        assert api.post("/sources/nobody/resume").status_code == 404
        checked = api.post("/sources/world/check")
        assert checked.status_code == 202 and checked.json()["outcome"] == "sent"
        again = api.post("/sources/world/check")
        assert again.json()["outcome"] == "skipped_queued"
        assert sent.calls == [("tasks.feeds.poll_feed", ["world"], {"force": True})]
        assert api.post("/sources/nobody/check").status_code == 404

        # items
        items = api.get("/items/alerts", params={"limit": 2}).json()
        assert [i["text"] for i in items["items"]] == ["news 4", "news 3"]
        older = api.get("/items/alerts", params={"cursor": items["next"], "source": "filed"})
        assert [i["text"] for i in older.json()["items"]] == ["news 2", "news 1", "news 0"]
        assert api.get("/items/alerts", params={"tag": "news", "q": "NEWS 1"}).json()["items"]
        assert api.get("/items/alerts", params={"tag": "other"}).json()["items"] == []
        assert api.get("/items/alerts", params={"cursor": "x"}).status_code == 400
        assert api.get("/items/nowhere").status_code == 404

        # dead letters
        boxes = api.get("/dead-letters").json()["boxes"]
        tasks = next(b for b in boxes if b["name"] == "tasks")
        assert {x["ref"] for x in tasks["letters"]} == {"t-1", "t-2"}
        assert api.get("/dead-letters", params={"box": "nope"}).status_code == 404
        assert api.post("/dead-letters/tasks/retry", {"ref": "t-2"}).status_code == 409
        assert api.post("/dead-letters/tasks/retry", {"ref": "t-1"}).status_code == 200
        assert api.post("/dead-letters/tasks/retry", {}).status_code == 400
        assert api.post("/dead-letters/tasks/drop", {"ref": "t-2"}).status_code == 200
        assert api.post("/dead-letters/tasks/drop", {"ref": "t-2"}).status_code == 404
        assert api.post("/dead-letters/nope/drop", {"ref": "x"}).status_code == 404

        # status
        status = api.get("/status", params={"section": ["registry", "sources"]}).json()
        assert status["sections"]["registry"]["size"] == 3
        assert "world" in status["sections"]["sources"]
        assert "registry" in api.get("/status").json()["sections"]
        assert api.get("/status", params={"section": "nope"}).status_code == 400

        # OPML
        assert api.post("/opml", raw=OPML.encode(), params={"dry_run": "true"}).status_code == 200
        imported = api.post("/opml", raw=OPML.encode(), content_type="text/x-opml")
        assert imported.status_code == 201 and imported.json()["added"] == ["imported-one"]
        hostile = '<!DOCTYPE x [<!ENTITY a "b">]><opml version="2.0"/>'
        assert api.post("/opml", raw=hostile.encode()).json()["error"] == (
            "OPML upload: a DOCTYPE or entity declaration is not accepted"
        )
        exported = api.get("/opml", params={"tag": "Tech"})
        assert 'xmlUrl="http://127.0.0.1:9/one.rss"' in exported.text
        assert api.get("/opml", params={"title": "x" * 300}).status_code == 400

        # delete
        assert api.delete("/sources/shop").json()["removed"] == "shop"
        assert api.delete("/sources/shop").status_code == 404
        assert api.delete("/sources/filed").status_code == 409
        assert reader.delete("/sources/world").status_code == 403
        assert anonymous.delete("/sources/world").status_code == 401

        # every operation was called, and answered a success and an error, as documented
        for operation in sorted(api.document.operations()):
            codes = api.seen.get(operation, set())
            assert any(c < 300 for c in codes), (operation, codes)
            if operation != ("GET", "/openapi.json"):
                assert any(c >= 400 for c in codes), (operation, codes)


def test_tokens_read_write_and_separate_from_the_dashboards(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), token=WEB, api_token=TOKEN, api_read_tokens=("r1", READ)) as base:
        api = ApiClient(base, TOKEN)
        # the dashboard's token is no API token, and the API's is no dashboard token
        assert api.with_token(WEB).get("/sources").status_code == 401
        page = requests.get(
            base + "/sources", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert page.status_code == 401
        # every read token reads, and none writes
        for token in ("r1", READ):
            assert api.with_token(token).get("/sources").status_code == 200
            refused = api.with_token(token).post("/sources/filed/pause")
            assert (
                refused.status_code == 403 and refused.json()["error"] == "this token may only read"
            )
        wrong = api.with_token("r").get("/sources")
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        # the API sets no session cookie and needs no CSRF token
        done = api.post("/sources/filed/pause")
        assert done.status_code == 200 and "set-cookie" not in done.headers


def test_without_api_tokens_reads_are_open_on_a_loopback_dashboard_and_writes_are_refused(
    runtime,
):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        api = ApiClient(base)
        assert api.get("/sources").status_code == 200
        refused = api.post("/sources/filed/pause")
        assert refused.status_code == 401
        assert "WATCHKEEPER_API_TOKEN" in refused.json()["error"]
    # a dashboard with a login does not open the API to reads either
    with dashboard(rt, Sent(), token=WEB) as base:
        assert ApiClient(base).get("/sources").status_code == 401
    # and a read-only dashboard's API does not write
    with dashboard(rt, Sent(), read_only=True, api_token=TOKEN) as base:
        refused = ApiClient(base, TOKEN).post("/sources/filed/pause")
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]


def test_host_origin_and_body_caps_answer_json_under_the_api(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        rebound = api.get("/sources", headers={"Host": "rebind.attacker.example"})
        assert rebound.status_code == 400 and "does not answer to Host" in rebound.json()["error"]
        foreign = api.post("/sources/filed/pause", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "another origin" in foreign.json()["error"]
        big = {**FEED, "title": "x" * (rt.settings.web_max_body + 10)}
        assert api.post("/sources", big).status_code == 413
        # an OPML upload has its own, larger cap
        outlines = "".join(
            f'<outline title="F{i}" xmlUrl="http://127.0.0.1:9/f{i}.rss"/>' for i in range(800)
        )
        opml = f'<opml version="2.0"><body>{outlines}</body></opml>'.encode()
        assert rt.settings.web_max_body < len(opml) < rt.settings.web_max_upload
        assert api.post("/opml", raw=opml, params={"dry_run": "1"}).json()["feeds"] == 800
        huge = b"<opml>" + b" " * rt.settings.web_max_upload
        assert api.post("/opml", raw=huge).status_code == 413
        # unknown API paths and methods are JSON too
        assert requests.get(base + "/api/v1/nowhere", timeout=10).json()["error"] == "Not Found"


def test_list_pages_with_a_cursor_and_filters_never_search_profile_values(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        for i in range(40):
            body = {
                "kind": "feed" if i % 4 else "http_log",
                "name": f"src-{i:02d}",
                "url": f"http://127.0.0.1:9/{i}",
                "interval": "1h",
                "headers": {"X-Tenant": f"tenant-{i:02d}"},
            }
            if i % 4:
                body["tags"] = ["odd"] if i % 2 else ["even"]
            assert api.post("/sources", body).status_code == 201
        names, cursor, pages = [], None, 0
        while True:
            page = api.get(
                "/sources", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
            )
            got = page.json()
            assert len(got["sources"]) <= 7
            names += [x["name"] for x in got["sources"]]
            pages += 1
            cursor = got["next"]
            if cursor is None:
                break
        assert sorted(names) == sorted([*(f"src-{i:02d}" for i in range(40)), "filed"])
        assert pages == 6

        def listed(**params: str) -> list[str]:
            return sorted(x["name"] for x in api.get("/sources", params=params).json()["sources"])

        assert listed(kind="http_log", limit="200") == [f"src-{i:02d}" for i in range(0, 40, 4)]
        assert listed(tag="odd", limit="200") == [f"src-{i:02d}" for i in range(1, 40, 2)]
        assert listed(owner="api", q="SRC-3", limit="200") == [f"src-{i}" for i in range(30, 40)]
        assert listed(owner=f"file:{rt.config_path}") == ["filed"]
        assert listed(state="new", tag="news") == ["filed"]
        # a header's value is never shown, nor found by a search
        assert listed(q="tenant-07") == []
        shown = api.get("/sources/src-07").json()
        assert shown["request"] == {"headers": ["X-Tenant"]} and "tenant-07" not in str(shown)


def test_apply_of_the_file_never_removes_an_api_source(runtime, tmp_path: Path):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        assert api.post("/sources", FEED).status_code == 201
    # the file no longer lists its feed: apply removes it, and only it
    assert rt.config_path is not None
    rt.config_path.write_text(FILE.replace('"filed"', '"renamed"'))
    applied = apply_file(rt.redis, rt.settings, rt.config_path)
    assert applied.diff is not None
    assert [d.name for d in applied.diff.removed] == ["filed"]
    assert rt.sources.definition("world") is not None


SECRETS = {
    "WK_SOURCE_T_KEY": "key-Vx81-secret",
    "WK_SOURCE_T_AUTH": "Bearer tok-Q93-secret",
    "WK_SOURCE_T_PROXY": "http://user:pw-Zz7-secret@127.0.0.1:3128",
    "WK_SOURCE_T_SID": "sid-Lm2-secret",
}


def test_a_profiled_source_shows_no_secret_and_an_inline_one_is_checks_line(
    runtime, monkeypatch, tmp_path: Path
):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    rt = runtime.use_config(FILE)
    body = {
        **FEED,
        "headers": {"X-Tenant": "tenant-literal-value", "X-Api-Key": "env:WK_SOURCE_T_KEY"},
        "cookies": {"sid": "env:WK_SOURCE_T_SID"},
        "auth": "env:WK_SOURCE_T_AUTH",
        "proxy": "env:WK_SOURCE_T_PROXY",
    }
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        created = api.post("/sources", body, check_request=True)
        assert created.status_code == 201
        assert created.json()["request"] == {
            "headers": ["X-Api-Key", "X-Tenant"],
            "cookies": ["sid"],
            "auth": "env:WK_SOURCE_T_AUTH",
            "proxy": "env:WK_SOURCE_T_PROXY",
        }
        answers = [
            created.text,
            api.get("/sources").text,
            api.get("/sources/world").text,
            api.get("/status").text,
            api.patch("/sources/world", {"headers": {"X-Tenant": "tenant-2-value"}}).text,
            requests.get(base + "/sources", timeout=10).text,
            requests.get(base + "/sources/world", timeout=10).text,
            requests.get(base + "/sources/world/edit", timeout=10).text,
        ]
        for text in answers:
            for secret in [*SECRETS.values(), "tenant-literal-value", "tenant-2-value"]:
                assert secret not in text
        # an inline secret: the same line `watchkeeper check` prints, and never the value
        inline = api.post("/sources", {**FEED, "name": "inline", "auth": "Bearer abc-123-value"})
        assert inline.status_code == 400 and "abc-123-value" not in inline.text
    file = tmp_path / "inline.toml"
    file.write_text(
        '[[feeds]]\nname = "inline"\nurl = "http://127.0.0.1:9/world.rss"\ninterval = "1h"\n'
        'auth = "Bearer abc-123-value"\n'
    )
    check = subprocess.run(
        [sys.executable, "-m", "workers.cli", "check", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "WATCHKEEPER_HOME": str(tmp_path)},
    )
    assert check.returncode == 2
    assert inline.json()["problems"] == check.stderr.strip().splitlines()


def test_the_document_served_is_the_one_generated(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        served = requests.get(base + "/api/v1/openapi.json", timeout=10).json()
    assert served == document()
    Document(served)  # its $refs resolve


@pytest.mark.parametrize("value", ["x", "0", "201"])
def test_a_bad_limit_is_one_line(runtime, value):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        bad = ApiClient(base, TOKEN).get("/sources", params={"limit": value})
        assert bad.status_code == 400 and bad.json()["error"].startswith("limit: ")


@pytest.mark.parametrize(
    ("fields", "where", "var"),
    [
        ({"auth": "env:REDIS_URL"}, "auth", "REDIS_URL"),
        ({"headers": {"X-Api-Key": "env:WATCHKEEPER_WEB_TOKEN"}}, "headers.X-Api-Key", ""),
        ({"headers": {"X-Api-Key": "env:WATCHKEEPER_API_TOKEN"}}, "headers.X-Api-Key", ""),
        ({"cookies": {"s": "env:WK_SOURCE_HOOK"}}, "cookies.s", "WK_SOURCE_HOOK"),
        ({"auth": "env:HOME"}, "auth", "HOME"),
    ],
)
def test_an_api_writer_cannot_name_the_workers_own_secrets(runtime, fields, where, var):
    # Given a sources file with a sink whose URL is in WK_SOURCE_HOOK, and an API writer
    rt = runtime.use_config(FILE + '[[notify]]\nname = "ops"\nurls = ["env:WK_SOURCE_HOOK"]\n')
    var = var or fields["headers"]["X-Api-Key"][4:]  # type: ignore[index]
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        # When it adds a source (on a URL of its own) that reads one of them, or changes one
        created = api.post("/sources", {**FEED, **fields}, check_request=True)
        assert api.post("/sources", FEED).status_code == 201
        changed = api.patch("/sources/world", fields)
        # Then both are refused with one line naming the source, the field and the variable
        for refused in (created, changed):
            assert refused.status_code == 400, refused.text
            (line,) = refused.json()["problems"]
            assert line.startswith(
                f"source 'world': {where}: environment variable {var} cannot be read by a source"
            )
        assert "auth" not in rt.sources.definition("world").table


def test_edits_from_two_clients_never_overwrite_each_other_unseen(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), api_token=TOKEN) as base:
        api = ApiClient(base, TOKEN)
        assert api.post("/sources", FEED).status_code == 201
        # Given two clients that read the same version of a source
        first = api.get("/sources/world")
        tag = first.headers["ETag"]
        assert tag.startswith('"') and len(tag) == 42
        # (keyed: not a hash a reader could test guesses at the URL's secrets against)
        raw = rt.redis.hget("wk:sources", "world")
        assert tag.strip('"') != hashlib.sha1(raw.encode()).hexdigest()
        # When one changes it with that version
        changed = api.patch("/sources/world", {"interval": "2h"}, headers={"If-Match": tag})
        assert changed.status_code == 200 and changed.headers["ETag"] != tag
        # Then the other's change of the version it read is refused, nothing written
        stale = api.patch("/sources/world", {"interval": "3h"}, headers={"If-Match": tag})
        assert stale.status_code == 412
        assert stale.json()["error"].startswith("source 'world': changed since you read it")
        assert rt.sources.definition("world").table["interval"] == "2h"
        assert api.delete("/sources/world", headers={"If-Match": tag}).status_code == 412
        # And with the version it reads again, it goes through
        fresh = api.get("/sources/world").headers["ETag"]
        assert fresh == changed.headers["ETag"]
        again = api.patch("/sources/world", {"interval": "3h"}, headers={"If-Match": fresh})
        assert again.status_code == 200
        assert (
            api.delete(
                "/sources/world", headers={"If-Match": '"nope", ' + again.headers["ETag"]}
            ).status_code
            == 200
        )


def test_an_edit_is_written_only_over_the_version_it_read(runtime):
    from workers.core.source_registry import Definition
    from workers.ops.sources import manage
    from workers.store.source_writes import RegistryError, write

    rt = runtime.use_config(FILE)
    write(rt.redis, rt.settings, "api", [Definition("w", "feed", "api", {"url": "http://a/"})])
    read = rt.sources.definition("w")
    assert read is not None
    # Given another edit lands between this one's read and its write
    write(
        rt.redis,
        rt.settings,
        "api",
        [Definition("w", "feed", "api", {"url": "http://a/", "tags": ["x"]})],
        mode="owned",
    )
    # Then this edit (a merge of what it read) is refused, not written over the other
    with pytest.raises(manage.Refused) as refused:
        manage.change(rt, "w", {"url": "http://b/"}, read=read)
    assert refused.value.status == 409
    assert "changed by another edit since it was read" in refused.value.problems[0]
    with pytest.raises(RegistryError):
        write(
            rt.redis,
            rt.settings,
            "api",
            removes=["w"],
            mode="owned",
            expect=rt.sources.version(read),
        )
    assert rt.sources.definition("w").table == {"url": "http://a/", "tags": ["x"]}
