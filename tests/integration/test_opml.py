"""OPML import and export: Miniflux's export of 1,000 feeds goes in and comes out the same
file; FreshRSS's form imports; every hostile file is one line and imports nothing."""

from __future__ import annotations

import calendar
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.support.helpers import DATA
from tests.support.opml_data import miniflux_feeds
from workers import cli
from workers.ops.sources.opml import export_opml

MINIFLUX = DATA / "miniflux-1000.opml"


def sources(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["sources", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def created_of(text: str) -> float:
    stamp = re.search(r"<dateCreated>(.*)</dateCreated>", text)
    assert stamp is not None
    return calendar.timegm(time.strptime(stamp.group(1), "%a, %d %b %Y %H:%M:%S UTC"))


def test_a_miniflux_export_of_1000_feeds_round_trips_to_the_same_file(
    runtime: Any, capsys: Any
) -> None:
    # Given the OPML Miniflux's serializer wrote for 1,000 feeds in 20 categories
    original = MINIFLUX.read_text(encoding="utf-8")
    # When it is imported
    code, out, err = sources(capsys, "import-opml", str(MINIFLUX), "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert (report["feeds"], len(report["added"]), report["dry_run"]) == (1000, 1000, False)
    # Then every feed is in the registry, owned by opml, its category its tag
    assert runtime.sources.owners() == {"opml": 1000}
    view = runtime.sources.view()
    by_url = {s.url: s for s in view.sources()}
    for feed in miniflux_feeds():
        source = by_url[feed["feed_url"]]
        expected_title = feed["title"]
        assert (source.title, source.site_url, source.tags) == (
            expected_title,
            feed["site_url"],
            (feed["category"],),
        )
    # And exported again, it is the same file: byte for byte, but for when it was made
    code, exported, _ = sources(capsys, "export-opml", "--title", "Miniflux")
    assert code == 0
    assert exported.splitlines()[4].startswith("        <dateCreated>")
    mask = re.compile(r"<dateCreated>.*</dateCreated>")
    assert mask.sub("", exported) == mask.sub("", original)
    definitions = [d for d in runtime.sources.scan()]
    assert export_opml(definitions, "Miniflux", created_of(original)) == original
    # And importing it again changes nothing
    code, out, _ = sources(capsys, "import-opml", str(MINIFLUX))
    assert "1000 feeds: 0 to add, 0 to change, 1000 unchanged" in out
    assert runtime.sources.meta().size == 1000


def test_names_are_made_from_titles_unique_and_stable(runtime: Any, capsys: Any) -> None:
    sources(capsys, "import-opml", str(MINIFLUX))
    names = {s.url: s.name for s in runtime.sources.view().sources()}
    # Two feeds titled "Ars Technica": one name each; a title without ASCII letters is named
    # after its host
    twins = {
        names["https://site8.example.com/feed/8.xml"],
        names["https://site9.example.net/feed/9.xml"],
    }
    assert twins == {"ars-technica", "ars-technica-2"}
    japanese = runtime.sources.get(names["http://site5.example.com/feed/5.xml"])
    assert japanese is not None and japanese.name.startswith("site5.example")
    assert len(set(names.values())) == 1000


FRESHRSS = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0" xmlns:frss="https://freshrss.org/opml">
\t<head>
\t\t<title>FreshRSS</title>
\t\t<dateCreated>Sat, 05 Dec 2026 10:00:00</dateCreated>
\t</head>
\t<body>
\t\t<outline text="Uncategorized">
\t\t\t<outline text="LWN.net" type="rss" xmlUrl="https://lwn.net/headlines/rss" \
htmlUrl="https://lwn.net" description="LWN.net is a comprehensive source of news"/>
\t\t\t<outline text="A page" type="HTML+XPath" xmlUrl="https://example.org/page" \
htmlUrl="https://example.org/page" frss:xPathItem="//div"/>
\t\t</outline>
\t\t<outline text="Tech">
\t\t\t<outline text="Planet Python" type="rss" xmlUrl="https://planetpython.org/rss20.xml" \
htmlUrl="https://planetpython.org/" description=""/>
\t\t\t<outline text="LWN again" type="rss" xmlUrl="https://lwn.net/headlines/rss"/>
\t\t</outline>
\t</body>
</opml>
"""


def test_a_freshrss_export_imports_its_feeds_and_skips_the_rest(
    runtime: Any, capsys: Any, tmp_path: Path
) -> None:
    path = tmp_path / "freshrss.opml"
    path.write_text(FRESHRSS)
    code, out, _ = sources(capsys, "import-opml", str(path), "--interval", "30m")
    assert code == 0
    assert "2 feeds: 2 to add" in out and "skipped 1 outlines of another type and 1 repeated" in out
    lwn, python = runtime.sources.get("lwn.net"), runtime.sources.get("planet-python")
    assert lwn is not None and python is not None
    assert (lwn.tags, lwn.site_url, lwn.interval) == (("Uncategorized",), "https://lwn.net", 1800)
    assert python.tags == ("Tech",) and runtime.sources.get("a-page") is None


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _feeds_opml(outlines: str) -> str:
    return f'<?xml version="1.0"?>\n<opml version="2.0"><body>{outlines}</body></opml>\n'


def _good(n: int) -> str:
    return "".join(
        f'<outline text="Feed {i}" xmlUrl="https://example.org/{i}.xml"/>' for i in range(n)
    )


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<opml version="2.0"><body><outline text="&lol9;" xmlUrl="https://example.org/x"/></body></opml>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<opml version="2.0"><body><outline text="&xxe;" xmlUrl="https://example.org/x"/></body></opml>
"""


def _hostile(case: str, tmp_path: Path) -> tuple[Path, str]:
    """A hostile OPML file and the start of the one line it must give."""
    path = tmp_path / f"{case}.opml"
    if case == "billion-laughs":
        return _write(path, BILLION_LAUGHS), "a DOCTYPE or entity declaration is not accepted"
    if case == "xxe":
        return _write(path, XXE), "a DOCTYPE or entity declaration is not accepted"
    if case == "xxe-utf16":
        return _write(path, XXE.replace('"1.0"?>', '"1.0" encoding="UTF-16"?>', 1).encode(
            "utf-16"
        )), "a DOCTYPE or entity declaration is not accepted"  # fmt: skip
    if case == "100mb":
        with path.open("wb") as fh:  # sparse: 100 MB that costs no disk
            fh.write(_feeds_opml(_good(1)).encode())
            fh.truncate(100 * 1024 * 1024)
        return path, "larger than WATCHKEEPER_OPML_MAX_BYTES=16777216 bytes"
    if case == "1m-outlines":
        return _write(path, _feeds_opml("<outline/>" * 1_000_000)), "more than 200000 outlines"
    if case == "javascript-url":
        bad = '<outline text="Evil" xmlUrl="javascript:alert(document.cookie)"/>'
        return _write(path, _feeds_opml(_good(999) + bad)), (
            "source 'evil': url: 'javascript:alert(document.cookie)' is not an http(s) URL"
        )
    if case == "file-url":
        bad = '<outline text="Local" xmlUrl="file:///etc/passwd"/>'
        return _write(path, _feeds_opml(bad)), "source 'local': url: 'file:///etc/passwd' is not"
    if case == "javascript-html-url":
        bad = '<outline text="Site" xmlUrl="https://e.org/f" htmlUrl="javascript:void(0)"/>'
        return _write(path, _feeds_opml(bad)), "source 'site': site_url: 'javascript:void(0)'"
    if case == "deep-nesting":
        deep = '<outline text="c">' * 40 + _good(1) + "</outline>" * 40
        return _write(path, _feeds_opml(deep)), "outlines nested deeper than 32"
    if case == "not-xml":
        return _write(path, "<opml><body><outline"), "not valid XML"
    if case == "not-opml":
        return _write(path, "<rss><channel/></rss>"), "the root element is not <opml>"
    raise AssertionError(case)


HOSTILE = [
    "billion-laughs",
    "xxe",
    "xxe-utf16",
    "100mb",
    "1m-outlines",
    "javascript-url",
    "file-url",
    "javascript-html-url",
    "deep-nesting",
    "not-xml",
    "not-opml",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_opml_is_one_line_and_imports_nothing(
    runtime: Any, capsys: Any, tmp_path: Path, case: str
) -> None:
    # Given a registry holding one feed already
    sources(capsys, "add", "feed", "kept", "https://example.org/kept.xml")
    rev = runtime.sources.meta().rev
    path, line = _hostile(case, tmp_path)
    # When the hostile file is imported
    code, out, err = sources(capsys, "import-opml", str(path))
    # Then it is one line, exit 2, and nothing was imported — not one of its good feeds
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert line in err, err
    assert "Traceback" not in err
    assert runtime.sources.meta().rev == rev and runtime.sources.meta().size == 1
    if case == "100mb":
        assert os.path.getsize(path) == 100 * 1024 * 1024


class RoundTrips:
    """Counts Redis round trips (a command, or a pipeline, sent on any connection) and fails at
    once past ``limit`` — a naming that asks per feed is stopped early, not waited out."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def install(self, monkeypatch: Any) -> None:
        send = redis.connection.AbstractConnection.send_packed_command

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            self.count += 1
            if self.count > self.limit:
                raise AssertionError(f"more than {self.limit} Redis round trips")
            send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)


def test_20000_untitled_feeds_on_one_host_are_named_in_a_few_round_trips(
    runtime: Any, capsys: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    # Given a registry where another owner holds "feeds.example.org-3", and an OPML file of
    # 20,000 outlines without a title on one host (each is named after the host), then one
    # titled "feeds.example.org 5"
    sources(capsys, "add", "feed", "feeds.example.org-3", "https://elsewhere.example/x.xml")
    outlines = "".join(
        f'<outline xmlUrl="https://feeds.example.org/{i}.xml"/>' for i in range(20_000)
    )
    outlines += '<outline text="feeds.example.org 5" xmlUrl="https://feeds.example.org/t.xml"/>'
    path = _write(tmp_path / "untitled.opml", _feeds_opml(outlines))
    # When it is imported, counting Redis round trips
    trips = RoundTrips(limit=40)
    trips.install(monkeypatch)
    code, _, err = sources(capsys, "import-opml", str(path))
    monkeypatch.undo()
    # Then it took a bounded number of round trips (the whole command), not one per feed
    assert (code, err) == (0, ""), err
    assert trips.count <= 20, trips.count
    # And the untitled feeds have the host's name, numbered in file order, skipping the name
    # held elsewhere and the one the titled feed asked for first
    names = {s.url: s.name for s in runtime.sources.view().sources()}
    assert names["https://feeds.example.org/t.xml"] == "feeds.example.org-5"
    assert [names[f"https://feeds.example.org/{i}.xml"] for i in range(5)] == [
        "feeds.example.org",
        "feeds.example.org-2",
        "feeds.example.org-4",
        "feeds.example.org-6",
        "feeds.example.org-7",
    ]
    assert names["https://feeds.example.org/19999.xml"] == "feeds.example.org-20002"
    assert len(set(names.values())) == 20_002 and runtime.sources.owners()["opml"] == 20_001


def test_the_web_and_api_exports_mask_feed_url_secrets_and_the_cli_keeps_them(
    runtime: Any, capsys: Any
) -> None:
    from tests.support.api import ApiClient
    from tests.support.web import Sent, dashboard

    # Given feeds whose URLs carry credentials: user info and a token in the query
    rt = runtime.use_config(
        '[[feeds]]\nname = "private"\nurl = "https://reader:pa55-secret@example.org/f.rss"\n'
        'site_url = "https://u:site-secret@example.org/"\n'
        '[[feeds]]\nname = "tokened"\nurl = "https://example.org/f.rss?token=t0ken-secret&x=1"\n'
    )
    secrets = ("pa55-secret", "site-secret", "t0ken-secret")
    # When they are exported by a read-only API token, an open loopback read, and a
    # read-only dashboard
    with dashboard(rt, Sent(), api_read_tokens=("reader-token",)) as base:
        exports = [ApiClient(base, "reader-token").get("/opml").text]
    with dashboard(rt, Sent(), read_only=True) as base:
        exports.append(ApiClient(base).get("/opml").text)
        exports.append(requests.get(base + "/opml/export", timeout=10).text)
    # Then no secret is in them, and each URL is still there with its secret masked
    for text in exports:
        assert "<opml" in text
        for secret in secrets:
            assert secret not in text
        assert 'xmlUrl="https://reader:***@example.org/f.rss"' in text
        assert "https://example.org/f.rss?token=***&amp;x=1" in text
    # While the CLI's export (by whoever holds the registry anyway) keeps the URLs as they are
    code, out, _ = sources(capsys, "export-opml")
    assert code == 0 and all(secret in out for secret in secrets)
