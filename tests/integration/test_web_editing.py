"""The dashboard's source editing over real HTTP: add with "test it now" (a real fetch of a
local server, nothing written), edit without ever showing a profile value, remove, bulk actions
on failing sources, OPML import and export. The browser test (add → preview → save → pause →
remove) is in tests/e2e/test_web_browser.py."""

from __future__ import annotations

import re

import requests

from tests.support.helpers import trickled_head, wait_for
from tests.support.web import Sent, csrf_of, dashboard
from workers.core import keys
from workers.polling.state import SourceState

FILE = """
[[feeds]]
name = "filed"
url = "http://127.0.0.1:9/filed.rss"
interval = "1h"
"""
HOSTILE_RSS = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>&lt;script&gt;alert(1)&lt;/script&gt; one</title>"
    "<link>javascript:alert(2)</link></item>"
    "<item><guid>2</guid><title>two</title><link>http://127.0.0.1:9/two</link></item>"
    "</channel></rss>"
)
LISTINGS = """<html><body>
<div class="l"><h2>Watch A</h2><span class="ref">a1</span></div>
<div class="l"><h2>Watch B</h2><span class="ref">b2</span></div>
<div class="l"><h2>Watch C</h2><span class="ref">c3</span></div>
</body></html>"""


def form_of(kind: str, **fields: str) -> dict[str, str]:
    return {"kind": kind, **{f"f.{k}": v for k, v in fields.items()}}


TOKEN = "dash-token-for-editing"


def browser(base: str, token: str = "") -> tuple[requests.Session, str]:
    """A browser session with its CSRF token; signed in through the login form when the
    dashboard has a token."""
    session = requests.Session()
    if token:
        form = session.get(base + "/login", timeout=10)
        signed = session.post(
            base + "/login", data={"csrf": csrf_of(form.text), "token": token}, timeout=10
        )
        assert signed.status_code == 200
    return session, csrf_of(session.get(base + "/sources", timeout=10).text)


def written(runtime, name: str) -> list[str]:
    """Every key a source's poll would have written."""
    s = runtime.settings
    found = [
        keys.SOURCE_STATE.key(s, name),
        keys.SEEN.key(s, name),
        keys.STREAM.key(s, "alerts"),
        keys.STREAM.key(s, "listings"),
    ]
    return [k for k in found if runtime.redis.exists(k)]


def test_add_a_feed_test_it_now_then_save(runtime, http_server):
    http_server.static("/feed.rss", HOSTILE_RSS, headers={"Content-Type": "application/rss+xml"})
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        page = web.get(base + "/add-source?kind=feed", timeout=10).text
        for field in ("f.name", "f.url", "f.interval", "f.locate", "f.tags", "f.headers", "f.auth"):
            assert f'name="{field}"' in page
        form = form_of("feed", name="added", url=http_server.url("/feed.rss"), interval="1h")
        # When it is tested
        tested = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "preview"})
        # Then what it would emit is shown, escaped, and nothing is written
        assert tested.status_code == 200 and 'data-status="ok"' in tested.text
        assert "2 items would be emitted" in tested.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; one" in tested.text
        assert "<script>alert" not in tested.text
        assert http_server.hits("/feed.rss") == 1
        assert written(rt, "added") == [] and rt.sources.definition("added") is None
        assert 'value="added"' in tested.text  # the form keeps what was typed
        # When it is saved, Then it is in the registry, owned by api, and its page shows it
        saved = web.post(
            base + "/add-source", data={**form, "csrf": csrf, "do": "save"}, allow_redirects=False
        )
        assert saved.status_code == 303 and saved.headers["location"] == "/sources/added"
        d = rt.sources.definition("added")
        assert d is not None and d.owner == "api" and d.table["interval"] == "1h"
        assert 'data-health="new"' in web.get(base + "/sources/added", timeout=10).text


def test_a_site_preview_shows_what_each_selector_picks(runtime, http_server):
    http_server.static("/list", LISTINGS, headers={"Content-Type": "text/html"})
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        form = form_of(
            "site",
            name="shop",
            url=http_server.url("/list"),
            item="div.l",
            id="ref",
            fields="title = h2\nref = .ref\nprice = .price",
            robots="false",
        )
        tested = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "preview"}).text
        picked = dict(re.findall(r'data-column="([^"]+)" data-found="(\d+)"', tested))
        assert picked["title"] == "3" and picked["ref"] == "3" and picked["price"] == "0"
        assert "Watch B" in tested and "3 items would be emitted" in tested
        assert written(rt, "shop") == [] and rt.sources.definition("shop") is None


def test_the_preview_fetches_with_the_sources_profile(runtime, http_server, monkeypatch):
    http_server.static("/feed.rss", HOSTILE_RSS, headers={"Content-Type": "application/rss+xml"})
    monkeypatch.setenv("WK_SOURCE_PREVIEW_KEY", "k-preview-secret")
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), token=TOKEN) as base:
        web, csrf = browser(base, TOKEN)
        form = form_of(
            "feed",
            name="profiled",
            url=http_server.url("/feed.rss"),
            headers="X-Api-Key = env:WK_SOURCE_PREVIEW_KEY\nX-Tenant = acme",
        )
        tested = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "preview"}).text
        assert 'data-status="ok"' in tested and "k-preview-secret" not in tested
        _, _, headers = http_server.requests[-1]
        assert headers["X-Api-Key"] == "k-preview-secret" and headers["X-Tenant"] == "acme"
        # A variable this process lacks is the poll's own one line
        form["f.auth"] = "env:WK_SOURCE_PREVIEW_MISSING"
        missing = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "preview"}).text
        assert 'data-status="error"' in missing
        assert "auth: environment variable WK_SOURCE_PREVIEW_MISSING is not set" in missing


def test_the_preview_never_reads_the_web_processs_own_secrets(runtime, http_server, monkeypatch):
    """The preview fetches in the web process: naming its token on a URL of one's own would
    send it there."""
    http_server.static("/feed.rss", HOSTILE_RSS, headers={"Content-Type": "application/rss+xml"})
    monkeypatch.setenv("WATCHKEEPER_WEB_TOKEN", TOKEN)
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), token=TOKEN) as base:
        web, csrf = browser(base, TOKEN)
        url = http_server.url("/feed.rss")
        for field, value in (
            ("auth", "env:WATCHKEEPER_WEB_TOKEN"),
            ("headers", "X-Key = env:WATCHKEEPER_WEB_TOKEN"),
        ):
            form = form_of("feed", name="grab", url=url, **{field: value})
            for do in ("preview", "save"):
                refused = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": do})
                assert refused.status_code == 400
                where = "headers.X-Key" if field == "headers" else field
                assert (
                    f"source &#39;grab&#39;: {where}: environment variable WATCHKEEPER_WEB_TOKEN "
                    "cannot be read by a source"
                ) in refused.text
        assert rt.sources.definition("grab") is None
        assert not http_server.requests


def test_without_a_token_the_dashboard_cannot_name_environment_credentials(
    runtime, http_server, monkeypatch
):
    """Any local user reaches a loopback dashboard without a token: naming a worker's secret on
    a URL of their choosing (saved, or only previewed) would send it to them."""
    http_server.static("/feed.rss", HOSTILE_RSS, headers={"Content-Type": "application/rss+xml"})
    monkeypatch.setenv("WK_SOURCE_STOLEN", "the-workers-secret")
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        url = http_server.url("/feed.rss")
        for field, value in (
            ("auth", "env:WK_SOURCE_STOLEN"),
            ("headers", "X-Key = env:WK_SOURCE_STOLEN"),
        ):
            form = form_of("feed", name="grab", url=url, **{field: value})
            for do in ("preview", "save"):
                refused = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": do})
                assert refused.status_code == 403
                assert "only when the dashboard has a token" in refused.text
        assert rt.sources.definition("grab") is None
        assert all("the-workers-secret" not in str(h) for _, _, h in http_server.requests)
        # A source without credentials is still added from the dashboard
        plain = form_of("feed", name="plain", url=url)
        assert web.post(base + "/add-source", data={**plain, "csrf": csrf}).status_code == 200
        assert rt.sources.definition("plain") is not None


def test_problems_are_checks_lines_and_nothing_is_saved(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        form = form_of("feed", name="bad", url="ftp://x", interval="soon", auth="Bearer abc-9")
        refused = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "save"})
        assert refused.status_code == 400
        lines = re.findall(r"<li>(.*?)</li>", refused.text)
        assert "source &#39;bad&#39;: url: &#39;ftp://x&#39; is not an http(s) URL" in lines
        assert any("interval: &#39;soon&#39; is not a duration" in line for line in lines)
        assert "abc-9" not in refused.text.replace('value="Bearer abc-9"', "")
        bad_lines = form_of("feed", name="bad", url="http://x/", headers="no equals sign")
        refused = web.post(base + "/add-source", data={**bad_lines, "csrf": csrf, "do": "save"})
        assert "source &#39;bad&#39;: headers: line 1 is not key = value" in refused.text
        taken = form_of("feed", name="filed", url="http://x/")
        assert web.post(base + "/add-source", data={**taken, "csrf": csrf}).status_code == 409
        assert rt.sources.definition("bad") is None


def test_editing_never_shows_a_profile_value_and_keeps_it(runtime, monkeypatch):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), token=TOKEN) as base:
        web, csrf = browser(base, TOKEN)
        form = form_of(
            "feed",
            name="members",
            url="http://127.0.0.1:9/m.rss",
            headers="X-Tenant = tenant-literal\nX-Api-Key = env:WK_SOURCE_KEY",
            user_agent="Agent-Literal/1.0",
            cookies="sid = env:WK_SOURCE_SID",
        )
        web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "save"})
        page = web.get(base + "/sources/members/edit", timeout=10).text
        assert "tenant-literal" not in page and "Agent-Literal" not in page
        assert "X-Tenant = (unchanged)" in page and "X-Api-Key = env:WK_SOURCE_KEY" in page
        detail = web.get(base + "/sources/members", timeout=10).text
        assert "tenant-literal" not in detail and "X-Api-Key, X-Tenant" in detail
        # When the form is saved as shown, with only the interval changed
        fields = dict(re.findall(r'name="(f\.[a-z_]+)" id="[^"]+" value="([^"]*)"', page))
        areas = dict(re.findall(r'<textarea name="(f\.[a-z_]+)"[^>]*>([^<]*)</textarea>', page))
        edit = {**fields, **{k: v.replace("&#39;", "'") for k, v in areas.items()}}
        edit.update({"f.interval": "2h", "csrf": csrf, "do": "save"})
        saved = web.post(base + "/sources/members/edit", data=edit, allow_redirects=False)
        assert saved.status_code == 303
        # Then the hidden values are kept, the interval changed
        table = rt.sources.definition("members").table
        assert table["headers"] == {"X-Tenant": "tenant-literal", "X-Api-Key": "env:WK_SOURCE_KEY"}
        assert table["user_agent"] == "Agent-Literal/1.0" and table["interval"] == "2h"


def test_two_tabs_editing_one_source_never_overwrite_each_other_unseen(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), token=TOKEN) as base:
        web, csrf = browser(base, TOKEN)
        form = form_of("feed", name="shared", url="http://127.0.0.1:9/s.rss", interval="1h")
        web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "save"})
        # Given two tabs showing the edit form of the same version
        pages = [web.get(base + "/sources/shared/edit", timeout=10).text for _ in range(2)]
        forms = []
        for page in pages:
            fields = dict(re.findall(r'name="(f\.[a-z_]+)" id="[^"]+" value="([^"]*)"', page))
            version = re.search(r'name="version" value="([0-9a-f]{40})"', page)
            assert version is not None
            forms.append({**fields, "version": version.group(1), "csrf": csrf, "do": "save"})
        # When the first saves an interval of 2h and the second one of 3h
        first = web.post(
            base + "/sources/shared/edit",
            data={**forms[0], "f.interval": "2h"},
            allow_redirects=False,
        )
        assert first.status_code == 303
        second = web.post(base + "/sources/shared/edit", data={**forms[1], "f.interval": "3h"})
        # Then the second is refused with the reason, and the first's change stands
        assert second.status_code == 412
        assert "source &#39;shared&#39;: changed since you read it" in second.text
        assert rt.sources.definition("shared").table["interval"] == "2h"


def test_a_file_owned_source_is_changed_in_its_file(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        page = web.get(base + "/sources/filed", timeout=10).text
        assert 'data-action="remove"' not in page and 'data-action="edit"' not in page
        edit = form_of("feed", url="http://127.0.0.1:9/filed.rss", interval="2h")
        refused = web.post(base + "/sources/filed/edit", data={**edit, "csrf": csrf, "do": "save"})
        assert refused.status_code == 409 and "owner: file:" in refused.text
        gone = web.post(base + "/sources/filed/remove", data={"csrf": csrf, "confirm": "yes"})
        assert gone.status_code == 409
        assert rt.sources.definition("filed").table["interval"] == "1h"


def test_remove_needs_the_box_ticked(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        form = form_of("feed", name="temp", url="http://127.0.0.1:9/t.rss")
        web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "save"})
        unconfirmed = web.post(base + "/sources/temp/remove", data={"csrf": csrf})
        assert unconfirmed.status_code == 400 and rt.sources.definition("temp") is not None
        done = web.post(
            base + "/sources/temp/remove",
            data={"csrf": csrf, "confirm": "yes"},
            allow_redirects=False,
        )
        assert done.status_code == 303 and rt.sources.definition("temp") is None
        missing = web.post(base + "/sources/temp/remove", data={"csrf": csrf, "confirm": "yes"})
        assert missing.status_code == 404


def test_bulk_actions_on_failing_sources(runtime):
    rt = runtime.use_config(FILE)
    s = rt.settings
    sent = Sent()
    with dashboard(rt, sent) as base:
        web, csrf = browser(base)
        for name in ("down-1", "down-2"):
            form = form_of("feed", name=name, url=f"http://127.0.0.1:9/{name}")
            web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "save"})
        for name in ("down-1", "down-2", "filed"):
            rt.redis.hset(
                keys.SOURCE_STATE.key(s, name),
                mapping={"last_poll": "1", "errors": str(s.notify_after_errors)},
            )
        page = web.get(base + "/sources", timeout=10).text
        panel = page[page.index('id="bulk"') :]
        assert re.findall(r'name="names" value="([^"]+)"', panel) == ["down-1", "down-2", "filed"]
        names = ["down-1", "down-2", "filed"]

        def bulk(action: str, **extra: str) -> requests.Response:
            return web.post(
                base + "/bulk", data={"csrf": csrf, "action": action, "names": names, **extra}
            )

        retried = bulk("retry")
        assert retried.status_code == 200
        assert sorted(args[0] for _, args, _ in sent.calls) == sorted(names)
        assert bulk("pause").status_code == 200
        assert all(SourceState.load(rt.redis, s, n).paused for n in names)
        assert bulk("remove").status_code == 400  # not confirmed
        removed = bulk("remove", confirm="yes").text
        assert "down-1: removed" in removed and "source &#39;filed&#39;: owner: file:" in removed
        assert rt.sources.definition("down-1") is None and rt.sources.definition("filed")


def test_opml_import_and_export(runtime):
    rt = runtime.use_config(FILE)
    outlines = "".join(
        f'<outline title="Feed {i}" xmlUrl="http://127.0.0.1:9/f{i}.rss"/>' for i in range(600)
    )
    opml = f'<opml version="2.0"><body><outline text="Tech">{outlines}</outline></body></opml>'
    assert len(opml) > rt.settings.web_max_body
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)

        def upload(data: bytes, token: str = csrf, **extra: str) -> requests.Response:
            return web.post(
                base + "/opml/import",
                data={"csrf": token, **extra},
                files={"file": ("feeds.opml", data, "text/x-opml")},
                timeout=60,
            )

        assert upload(opml.encode(), token="0" * 64).status_code == 403
        dry = upload(opml.encode(), dry_run="yes")
        assert "600 feeds: 600 to add" in dry.text and rt.sources.definition("feed-0") is None
        done = upload(opml.encode())
        assert done.status_code == 200 and "(owner opml)" in done.text
        assert rt.sources.definition("feed-0").owner == "opml"
        hostile = upload(b'<!DOCTYPE x [<!ENTITY a "b">]><opml/>')
        assert hostile.status_code == 400 and "DOCTYPE" in hostile.text
        huge = upload(b"<opml>" + b" " * rt.settings.web_max_upload)
        assert huge.status_code == 413
        exported = web.get(base + "/opml/export", timeout=30)
        assert exported.headers["content-disposition"].startswith("attachment")
        assert exported.text.count("<outline title=") == 601  # the file's feed too


def test_actions_from_another_origin_are_refused(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        form = form_of("feed", name="x", url="http://127.0.0.1:9/x.rss")
        for path, data in (("/add-source", form), ("/bulk", {"action": "pause", "names": "filed"})):
            refused = web.post(
                base + path, data={**data, "csrf": csrf}, headers={"Origin": "http://evil.example"}
            )
            assert refused.status_code == 403, path
        assert rt.sources.definition("x") is None


def test_read_only_offers_no_editing(runtime):
    rt = runtime.use_config(FILE)
    with dashboard(rt, Sent(), read_only=True) as base:
        web, csrf = browser(base)
        page = web.get(base + "/sources", timeout=10).text
        assert "Add a source" not in page and "Import OPML" not in page
        assert 'data-action="save"' not in web.get(base + "/add-source", timeout=10).text
        form = form_of("feed", name="x", url="http://127.0.0.1:9/x.rss")
        assert web.post(base + "/add-source", data={**form, "csrf": csrf}).status_code == 403


def test_the_preview_is_bounded_by_the_fetch_caps(runtime, http_server):
    from dataclasses import replace

    from workers.core.runtime import Runtime

    http_server.static("/big.rss", "x" * 200_000, headers={"Content-Type": "application/rss+xml"})
    runtime.use_config(FILE)
    small = replace(runtime.settings, http_max_bytes=4096)
    rt = Runtime(small, runtime.redis, runtime.config_path)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        form = form_of("feed", name="big", url=http_server.url("/big.rss"))
        tested = web.post(base + "/add-source", data={**form, "csrf": csrf, "do": "preview"}).text
        assert 'data-status="error"' in tested and "4096" in tested
        assert written(rt, "big") == []


def test_a_preview_that_outlasts_a_polls_time_limit_answers_and_holds_its_slot(
    runtime, http_server, monkeypatch
):
    from dataclasses import replace

    from workers.core.runtime import Runtime
    from workers.core.settings import Settings

    # A fetch's own deadline is capped below the poll's time limit; work that outlasts it
    # anyway (a kind that does more than fetch, a parser that hangs) is what the preview's
    # limit is for: lift the cap to make such a preview
    monkeypatch.setattr(Settings, "fetch_deadline", property(lambda s: s.http_deadline))

    # Given a feed whose server trickles its headers a byte a second (its fetch ends at the
    # request deadline, 5 s), and a dashboard whose poll time limit is 2 s
    http_server.route("/head.rss", trickled_head)
    http_server.static("/ok.rss", HOSTILE_RSS, headers={"Content-Type": "application/rss+xml"})
    runtime.use_config(FILE)
    limits = replace(
        runtime.settings,
        task_time_limit=2,
        http_connect_timeout=1.0,
        http_read_timeout=2.0,
        http_deadline=60.0,
    )
    rt = Runtime(limits, runtime.redis, runtime.config_path)
    with dashboard(rt, Sent()) as base:
        web, csrf = browser(base)
        slow = {**form_of("feed", name="slow", url=http_server.url("/head.rss")), "csrf": csrf}
        # When it is previewed twice (the previews run at once: 2)
        answers = [
            web.post(base + "/add-source", data={**slow, "do": "preview"}, timeout=30).text
            for _ in range(2)
        ]
        # Then each answers at the poll's time limit, in one line
        for answer in answers:
            assert 'data-status="error"' in answer
            assert "not finished within 2s (WATCHKEEPER_TASK_TIME_LIMIT, as a poll)" in answer
        # And while both still run, another preview is refused, not started
        busy = web.post(base + "/add-source", data={**slow, "do": "preview"}, timeout=30).text
        assert 'data-status="busy"' in busy
        # And once they ended (at their fetch deadline), previews run again
        ok = {**form_of("feed", name="ok", url=http_server.url("/ok.rss")), "csrf": csrf}
        wait_for(
            lambda: (
                'data-status="ok"'
                in web.post(base + "/add-source", data={**ok, "do": "preview"}, timeout=30).text
            ),
            timeout=30,
            interval=0.5,
            message="a preview after the slow ones ended",
        )
        assert written(rt, "slow") == []
