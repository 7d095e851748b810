"""The feed parser layer through the real poll loop (local HTTP server, real Redis): which parser
reads a feed, when ``auto`` falls back to feedparser and how that is recorded, JSON Feed as a
first-class format, the cases where feedparser-rs and feedparser disagree (the spec decides),
and hostile documents on every parser path — bounded by caps enforced before parsing, each a
one-line error naming the source."""

from __future__ import annotations

import json
import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from tasks.feeds.freshness import feed_freshness
from tasks.feeds.parsers import Options, parse_document
from workers.core.settings import Settings, SettingsError
from workers.core.sources_file import validate_config
from workers.ops.metrics import StatusCollector
from workers.ops.status import collect_status
from workers.polling.errors import SourceProblem
from workers.polling.poll import poll_now
from workers.store.streams import CappedStream

RSS = "application/rss+xml"


def rss(items: str, extra_ns: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {extra_ns}><channel>'
        f"<title>t</title><link>https://example.org/</link>{items}</channel></rss>"
    )


def item(i: int | str, extra: str = "") -> str:
    return (
        f"<item><title>Entry {i}</title><link>https://example.org/{i}</link>"
        f"<guid>urn:{i}</guid><pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate>{extra}</item>"
    )


@pytest.fixture
def rt(runtime):
    runtime.settings = replace(
        runtime.settings,
        http_connect_timeout=1.0,
        http_read_timeout=5.0,
        host_delay=0.0,
        host_concurrency=8,
        http_max_bytes=4 * 2**20,
    )
    return runtime


def serve(rt, server, feeds: dict[str, tuple[str, bytes | str, str]]) -> None:
    """name → (parser or "", body, content type): one [[feeds]] table each."""
    text = ""
    for name, (parser, body, ctype) in feeds.items():
        server.static(f"/{name}", body, headers={"Content-Type": ctype})
        text += (
            f'[[feeds]]\nname = "{name}"\nurl = "{server.url("/" + name)}"\nlocate = false\n'
            + (f'parser = "{parser}"\n' if parser else "")
        )
    rt.use_config(text)


def poll(rt, name: str) -> dict[str, Any]:
    return poll_now(rt, rt.config().get(name))


def alerts(rt, source: str | None = None) -> list[dict[str, Any]]:
    every = [f for _, f in CappedStream(rt.redis, "wk:stream:alerts", 10**6).latest(10**6)]
    return [a for a in every if source is None or a["source"] == source]


def state(rt, name: str) -> dict[str, str]:
    return rt.redis.hgetall(f"wk:src:{name}")


# --- choosing the parser -------------------------------------------------------------------


def test_auto_reads_a_clean_feed_fast_and_falls_back_on_a_malformed_one(rt, http_server):
    # Given a clean feed, a malformed one with entries, and the same malformed one pinned to
    # feedparser
    broken = rss("<item><title>Tom &nbsp; Jerry</title><guid>1</guid></item>")  # undefined entity
    serve(
        rt,
        http_server,
        {
            "clean": ("", rss(item(1) + item(2)), RSS),
            "broken": ("", broken, RSS),
            "pinned": ("feedparser", rss(item(1)), RSS),
            "fastonly": ("fast", rss(item(1)), RSS),
        },
    )
    # When each is polled twice
    for _ in range(2):
        for name in ("clean", "broken", "pinned", "fastonly"):
            assert poll(rt, name)["status"] == "ok"
    # Then the clean feed was read by feedparser-rs, with nothing to fall back from
    clean = state(rt, "clean")
    assert (clean["parser"], clean["parser_fallback"], clean["parser_polls"]) == ("fast", "", "2")
    assert "parser_fallbacks" not in clean
    # And the malformed one by feedparser each time, counted with its reason
    broken_state = state(rt, "broken")
    assert broken_state["parser"] == "feedparser"
    assert broken_state["parser_fallback"] == "malformed"
    assert broken_state["parser_fallbacks"] == broken_state["parser_fallbacks_malformed"] == "2"
    assert broken_state["parser_fallback_detail"]
    assert [a["key"] for a in alerts(rt, "broken")] == ["1"]
    # And a feed pinned to a parser is read by it alone
    assert state(rt, "pinned")["parser"] == "feedparser" and "parser_fallbacks" not in state(
        rt, "pinned"
    )
    assert state(rt, "fastonly")["parser"] == "fast"
    # And status shows each feed's setting and its state's counts; metrics count fallbacks
    sources = collect_status(rt)["sources"]
    assert (sources["clean"]["parser"], sources["pinned"]["parser"]) == ("auto", "feedparser")
    assert sources["broken"]["state"]["parser_fallbacks_malformed"] == "2"
    samples = {
        (s.name, s.labels.get("source"), s.labels.get("reason")): s.value
        for family in StatusCollector(rt).collect()
        for s in family.samples
    }
    assert samples[("watchkeeper_feed_parser_fallbacks_total", "broken", "malformed")] == 2
    assert samples[("watchkeeper_feed_parser_polls_total", "clean", None)] == 2
    assert ("watchkeeper_feed_parser_fallbacks_total", "clean", "malformed") not in samples


def test_the_global_setting_chooses_the_parser_of_feeds_without_one(rt, http_server):
    rt.settings = replace(rt.settings, feed_parser="feedparser")
    serve(rt, http_server, {"plain": ("", rss(item(1)), RSS), "own": ("fast", rss(item(1)), RSS)})
    poll(rt, "plain")
    poll(rt, "own")
    assert (state(rt, "plain")["parser"], state(rt, "own")["parser"]) == ("feedparser", "fast")
    assert collect_status(rt)["sources"]["plain"]["parser"] == "feedparser"


def test_a_bad_parser_choice_is_one_line_naming_the_source_or_the_variable():
    with pytest.raises(Exception) as caught:
        validate_config(
            {"feeds": [{"name": "news", "url": "https://example.org/f", "parser": "lxml"}]}
        )
    assert "source 'news': parser: expected one of auto, fast, feedparser, got 'lxml'" in str(
        caught.value
    )
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"WATCHKEEPER_FEED_PARSER": "rust"})
    assert str(bad.value) == (
        "WATCHKEEPER_FEED_PARSER='rust': expected one of auto, fast, feedparser"
    )


def test_a_body_that_looks_like_a_url_is_parsed_never_fetched(rt, http_server):
    # feedparser-rs fetches a str that looks like a URL: it is only ever given bytes
    http_server.static("/target", rss(item(1)))
    body = http_server.url("/target")
    serve(rt, http_server, {"url": ("fast", body, "text/plain")})
    result = poll(rt, "url")
    assert result["status"] == "error" and "no feed entries" in result["error"]
    assert http_server.hits("/target") == 0


# --- JSON Feed -----------------------------------------------------------------------------

JSON_FEED = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "Micro",
    "home_page_url": "https://example.org/",
    "authors": [{"name": "Feed Author"}],
    "items": [
        {
            "id": 1,
            "url": "/posts/1",
            "title": "Séisme à Lyon",
            "summary": "Short",
            "content_html": "<p>Long</p>",
            "date_published": "2024-01-02T03:04:05+01:00",
            "tags": ["quake", "lyon"],
            "authors": [{"name": "Item Author"}],
        },
        {"id": "b", "external_url": "https://elsewhere.org/x", "content_text": "Text only"},
        {"id": "c", "content_html": "<b>html</b>", "date_modified": "2024-03-01T00:00:00Z"},
        "not an object",
    ],
}


@pytest.mark.parametrize("ctype", ["application/feed+json", "application/json", "text/plain"])
def test_json_feed_gives_the_same_alert_fields_as_rss(rt, http_server, ctype):
    # Given a JSON Feed 1.1 served with its type, as JSON, or as text (sniffed)
    serve(rt, http_server, {"jf": ("", json.dumps(JSON_FEED), ctype)})
    # When it is polled twice
    first, second = poll(rt, "jf"), poll(rt, "jf")
    # Then its three object items are alerts (the string is counted bad), once
    assert (first["status"], first["new"], first["bad"], second["new"]) == ("ok", 3, 1, 0)
    one, two, three = alerts(rt, "jf")
    assert one["key"] == "1"  # a numeric id is coerced to a string (JSON Feed 1.1)
    assert one["link"] == http_server.url("/posts/1")
    assert (one["title"], one["summary"], one["author"]) == (
        "Séisme à Lyon",
        "Short",
        "Item Author",
    )
    assert one["published"] == "2024-01-02T02:04:05Z" and one["tags"] == ["quake", "lyon"]
    assert (two["link"], two["summary"], two["author"]) == (
        "https://elsewhere.org/x",
        "Text only",
        "Feed Author",
    )
    assert (three["summary"], three["published"]) == ("<b>html</b>", "2024-03-01T00:00:00Z")
    assert (state(rt, "jf")["parser"], state(rt, "jf")["parser_format"]) == ("json", "json11")


def test_json_feed_1_0_author_and_errors(rt, http_server):
    v10 = {
        "version": "https://jsonfeed.org/version/1",
        "author": {"name": "Old"},
        "items": [{"id": "x", "title": "T"}],
    }
    serve(
        rt,
        http_server,
        {
            "v10": ("", json.dumps(v10), "application/feed+json"),
            "plainjson": ("", json.dumps({"items": [{"id": 1}]}), "application/json"),
            "broken": ("", '{"version": "https://jsonfeed.org/version/1.1", "items": [', RSS),
            "noitems": ("", json.dumps({"version": "https://jsonfeed.org/version/1.1"}), RSS),
        },
    )
    assert poll(rt, "v10")["new"] == 1 and alerts(rt, "v10")[0]["author"] == "Old"
    assert state(rt, "v10")["parser_format"] == "json10"
    errors = {name: poll(rt, name)["error"] for name in ("plainjson", "broken", "noitems")}
    assert errors["plainjson"].endswith("not a JSON Feed: no jsonfeed.org version")
    assert "not a JSON Feed: expected" in errors["broken"] or "Expecting" in errors["broken"]
    assert errors["noitems"].endswith("no feed entries (json11 feed without items)")
    assert all("\n" not in e for e in errors.values())


# --- where feedparser-rs and feedparser disagree (the spec decides) --------------------------


def test_raw_markup_in_an_rss_description_keeps_the_text_after_it(rt, http_server):
    # RSS 2.0 defines description as text (entity-encoded HTML); a child element is not valid
    # RSS but well-formed XML, and nothing justifies losing the text after it: feedparser keeps
    # "a <b>b</b> c", feedparser-rs gives "a b". auto sends such a document to feedparser.
    serve(
        rt, http_server, {"m": ("", rss(item(1, "<description>a <b>b</b> c</description>")), RSS)}
    )
    poll(rt, "m")
    assert alerts(rt, "m")[0]["summary"] == "a <b>b</b> c"
    assert (state(rt, "m")["parser"], state(rt, "m")["parser_fallback"]) == (
        "feedparser",
        "content",
    )


def test_a_self_closed_category_does_not_lose_the_next_element(rt, http_server):
    # <category/> is the same XML as <category></category>; feedparser-rs loses the element
    # after it (the pubDate). The layer writes it out first and stays on the fast path.
    body = rss(
        "<item><title>A</title><category/><pubDate>Tue, 14 Aug 2012 05:31:45 GMT</pubDate>"
        "<guid>g</guid></item>"
    )
    serve(rt, http_server, {"c": ("", body, RSS)})
    poll(rt, "c")
    assert alerts(rt, "c")[0]["published"] == "2012-08-14T05:31:45Z"
    assert state(rt, "c")["parser"] == "fast"


def test_a_link_to_a_private_address_is_kept(rt, http_server):
    # feedparser-rs blanks links to loopback and private addresses; an alert's link is data,
    # not a request: feedparser keeps it, and the layer masks such hosts as names before
    # feedparser-rs parses (and unmasks them after), staying on the fast path.
    serve(
        rt,
        http_server,
        {"p": ("", rss(item(1).replace("https://example.org/1", "http://10.1.2.3/x")), RSS)},
    )
    poll(rt, "p")
    assert alerts(rt, "p")[0]["link"] == "http://10.1.2.3/x"
    assert (state(rt, "p")["parser"], state(rt, "p")["parser_fallback"]) == ("fast", "")


def test_dates_feedparser_rs_cannot_parse_are_read_as_feedparser_reads_them(rt, http_server):
    # RFC 822 wants "Aug"; feeds write "August" and "EST": feedparser's date parser reads them
    body = rss(item(1).replace("Mon, 01 Jan 2024 00:00:00 GMT", "Sun, 12 August 2012 10:00:00 EST"))
    serve(rt, http_server, {"d": ("", body, RSS)})
    poll(rt, "d")
    assert alerts(rt, "d")[0]["published"] == "2012-08-12T15:00:00Z"
    assert state(rt, "d")["parser"] == "fast"


def test_of_several_alternate_links_the_html_one_is_the_link(rt, http_server):
    # RFC 4287 allows several alternates with different types and names no primary one;
    # feedparser takes the last of an HTML type, and so does the layer (keys stay stable)
    body = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>A</title>'
        '<id>urn:a</id><link href="http://example.org/a"/><link rel="alternate" '
        'type="text/html" href="http://example.org/a.html"/><updated>2024-01-01T00:00:00Z'
        "</updated></entry></feed>"
    )
    serve(rt, http_server, {"l": ("", body, "application/atom+xml")})
    poll(rt, "l")
    assert alerts(rt, "l")[0]["link"] == "http://example.org/a.html"
    assert state(rt, "l")["parser"] == "fast"


def test_an_atom_id_is_never_resolved_against_xml_base(rt, http_server):
    # RFC 4287 §4.2.6: atom:id is compared character by character, never resolved. feedparser
    # resolves a relative one against an xml:base left over from a sibling element (Reddit's
    # feeds: "t3_42tizy" becomes "/t3_42tizy"); feedparser-rs keeps it, and so does auto.
    body = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>A</title>'
        '<content type="xhtml" xml:base="/r/x"><div xmlns="http://www.w3.org/1999/xhtml">x'
        '</div></content><id>t3_42tizy</id><link href="https://example.org/a"/>'
        "<updated>2024-01-01T00:00:00Z</updated></entry></feed>"
    )
    serve(rt, http_server, {"i": ("", body, "application/atom+xml")})
    poll(rt, "i")
    assert alerts(rt, "i")[0]["key"] == "t3_42tizy"
    fp = parse_document(body.encode(), {}, Options(choice="feedparser")).entries[0]
    assert fp["id"] == "/r/t3_42tizy"  # feedparser's reading, documented; fix when it changes


def test_atom_0_3_goes_to_feedparser(rt, http_server):
    # Atom 0.3 (obsolete since 2005) has mode="xml" and mode="base64" content that only
    # feedparser reads: <title mode="base64"> is the decoded text
    body = (
        '<feed version="0.3" xmlns="http://purl.org/atom/ns#"><entry><id>x</id>'
        '<title type="text/html" mode="base64">RXhhbXBsZSA8Yj5BdG9tPC9iPg==</title></entry></feed>'
    )
    serve(rt, http_server, {"a": ("", body, "application/atom+xml")})
    poll(rt, "a")
    assert alerts(rt, "a")[0]["title"] == "Example <b>Atom</b>"
    assert state(rt, "a")["parser"] == "feedparser"


# --- hostile documents, on every parser path -----------------------------------------------

LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">'
    + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    + ']><rss version="2.0"><channel><item><title>&l9;</title><guid>x</guid></item>'
    "</channel></rss>"
)
PATHS = ["auto", "fast", "feedparser"]


def one_line_error(rt, name: str, result: dict[str, Any]) -> str:
    assert result["status"] == "error", result
    error = result["error"]
    assert "\n" not in error and state(rt, name)["last_error"] == error
    assert collect_status(rt)["sources"][name]["state"]["last_error"] == error
    return str(error)


@pytest.mark.parametrize("path", PATHS)
def test_billion_laughs_is_never_expanded(rt, http_server, path):
    serve(rt, http_server, {"laughs": (path, LAUGHS, RSS)})
    result = poll(rt, "laughs")
    # each parser refuses the expansion (feedparser-rs: unresolvable entity; feedparser:
    # expat's amplification limit) and what it kept of the entry is the short text
    if result["status"] == "ok":
        assert all(len(a["title"]) < 100 for a in alerts(rt, "laughs"))
    else:
        one_line_error(rt, "laughs", result)


def endless_body(req) -> None:
    """A 100 MB body, sent in 1 MB pieces (never held whole)."""
    req.send_response(200)
    req.send_header("Content-Type", RSS)
    req.send_header("Content-Length", str(100 * 2**20))
    req.end_headers()
    chunk = b"<item><title>x</title></item>" * (2**20 // 29)
    try:
        req.wfile.write(b'<rss version="2.0"><channel>')
        for _ in range(100):
            req.wfile.write(chunk)
    except OSError:
        pass


@pytest.mark.parametrize("path", PATHS)
def test_a_100_mb_body_is_cut_at_the_byte_cap_before_parsing(rt, http_server, path):
    http_server.route("/huge", endless_body)
    rt.use_config(
        f'[[feeds]]\nname = "huge"\nurl = "{http_server.url("/huge")}"\nparser = "{path}"\n'
    )
    error = one_line_error(rt, "huge", poll(rt, "huge"))
    assert "exceeds the cap of 4194304 bytes" in error
    # and the layer refuses a body over the cap on its own, whoever hands it over
    with pytest.raises(SourceProblem, match="more than the cap of 1000"):
        parse_document(b"<rss>" + b" " * 1000, {}, Options(choice=path, max_bytes=1000))
    with pytest.raises(SourceProblem, match="more than the cap of 1000"):
        parse_document(b"{" + b" " * 1000, {}, Options(choice=path, max_bytes=1000))


@pytest.mark.parametrize("path", [*PATHS, "json"])
def test_deep_nesting_is_refused_before_it_costs(rt, http_server, path):
    depth = 250_000
    if path == "json":
        body = '{"version": "https://jsonfeed.org/version/1.1", "items": [' + "[" * depth
        body += "]" * depth + "]}"
        ctype, parser = "application/feed+json", ""
    else:
        body = rss("<item><title>x</title>" + "<d>" * depth + "</d>" * depth + "</item>")
        ctype, parser = RSS, path
    serve(rt, http_server, {"deep": (parser, body, ctype)})
    error = one_line_error(rt, "deep", poll(rt, "deep"))
    expected = {
        "auto": "nesting depth exceeds maximum of 100",  # feedparser-rs's limit, no fallback
        "fast": "nesting depth exceeds maximum of 100",
        "feedparser": "250006 elements, more than feedparser is given (200000)",
        "json": "not a JSON Feed: nested too deep",
    }[path]
    assert expected in error, error


@pytest.mark.parametrize("path", [*PATHS, "json"])
def test_invalid_utf8_is_read_or_refused_in_one_line(rt, http_server, path):
    if path == "json":
        body: bytes = (
            b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "caf\xe9"}]}'
        )
        serve(rt, http_server, {"bad": ("", body, "application/feed+json")})
        assert "invalid UTF-8 at byte" in one_line_error(rt, "bad", poll(rt, "bad"))
        return
    body = rss(item(1)).encode().replace(b"Entry 1", b"caf\xe9 \xff\xfe")
    serve(rt, http_server, {"bad": (path, body, RSS)})
    result = poll(rt, "bad")
    assert result["status"] == "ok" and result["new"] == 1
    title = alerts(rt, "bad")[0]["title"]
    if path == "fast":
        assert title.startswith("caf\ufffd")  # replaced: what fast alone can do
    else:  # feedparser retries encodings (auto falls back to it)
        assert title == "café ÿþ"
    if path == "auto":
        assert state(rt, "bad")["parser_fallback"] == "encoding"


def test_a_json_feed_of_a_million_items_keeps_the_cap_in_memory(rt, http_server):
    # Given a 16 MB JSON Feed of 1,000,000 items and an entry cap of 1,000
    items = ",".join(f'{{"id":"{i}","title":"t{i}"}}' for i in range(1_000_000))
    body = ('{"version":"https://jsonfeed.org/version/1.1","items":[' + items + "]}").encode()
    rt.settings = replace(rt.settings, http_max_bytes=64 * 2**20, feed_max_entries=1000)
    serve(rt, http_server, {"million": ("", body, "application/feed+json")})
    # When polled
    result = poll(rt, "million")
    # Then the first 1,000 items were kept, with a warning naming the cap
    assert (result["status"], result["fetched"]) == ("ok", 1000)
    assert "kept the first 1000 entries" in state(rt, "million")["last_warning"]
    # And parsing holds the decoded text plus the kept items, never a million objects
    tracemalloc.start()
    parsed = parse_document(body, {}, Options(max_bytes=64 * 2**20, max_entries=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(parsed.entries) == 1000 and parsed.cut
    assert peak < len(body) * 2 + 8 * 2**20, peak  # a million dicts would be ~250 MB


@pytest.mark.parametrize("path", PATHS)
def test_an_xml_feed_of_a_million_items_is_cut_to_the_cap_before_parsing(path):
    body = rss("".join(f"<item><title>t{i}</title></item>" for i in range(1_000_000))).encode()
    tracemalloc.start()
    parsed = parse_document(body, {}, Options(choice=path, max_bytes=64 * 2**20, max_entries=500))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(parsed.entries) == 500 and parsed.cut
    assert [e["title"] for e in parsed.entries[:2]] == ["t0", "t1"]
    assert peak < len(body) * 2 + 16 * 2**20, peak  # feedparser on all of it: ~800 MB


def test_an_entry_cap_warning_reaches_the_state(rt, http_server):
    rt.settings = replace(rt.settings, feed_max_entries=3)
    serve(rt, http_server, {"many": ("feedparser", rss("".join(item(i) for i in range(10))), RSS)})
    result = poll(rt, "many")
    assert (result["status"], result["fetched"]) == ("ok", 3)
    assert [a["title"] for a in alerts(rt, "many")] == ["Entry 0", "Entry 1", "Entry 2"]
    assert state(rt, "many")["last_warning"].startswith("kept the first 3 entries")


# A document crafted against the pattern scans the layer runs before any parser (markup inside a
# text element, self-closed elements, typed text, RSS links with an href, the channel's ttl and
# skip elements): each must cost time linear in the document, never quadratic — 8 MB (about half
# the default byte cap), a valid one-item RSS document around each.
HOSTILE_MB = 8


def in_cdata(filler: str) -> bytes:
    """A valid one-item RSS document whose description is ``filler`` repeated to 8 MB."""
    text = (filler * (HOSTILE_MB * 2**20 // len(filler) + 1))[: HOSTILE_MB * 2**20]
    return rss(item(1, f"<description><![CDATA[{text}]]></description>")).encode()


def channel_of(filler: str) -> bytes:
    """``filler`` repeated to 8 MB in the channel's description (where ttl and skipHours are
    read, as raw bytes), then one item."""
    text = filler * (HOSTILE_MB * 2**20 // len(filler))
    return rss(f"<description><![CDATA[{text}]]></description>" + item(1)).encode()


HOSTILE = {
    "open text tags": lambda: in_cdata("<title "),  # markup inside a text element
    "open summaries": lambda: in_cdata("<summary "),
    "open typed titles": lambda: in_cdata('<title type="a'),  # a text construct's type
    "open links": lambda: in_cdata("<link "),  # an RSS link with an href
    "open categories": lambda: in_cdata("<category "),  # self-closed elements
    "a tag of spaces": lambda: in_cdata("<title" + " " * (HOSTILE_MB * 2**20) + ">"),
    "open skipHours": lambda: channel_of("<skipHours>"),
    "open ttls": lambda: channel_of("<ttl "),
}


@contextmanager
def cpu_bound(seconds: float) -> Iterator[None]:
    """Fails the block when it uses more than ``seconds`` of CPU (``time.process_time``): a
    bound, not a benchmark. A quadratic scan is interrupted at the bound (a CPU timer; the
    regex engine checks signals) rather than waited out for an hour."""

    def stop(*_: object) -> None:
        raise AssertionError(f"still running after {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    start = time.process_time()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    spent = time.process_time() - start
    assert spent < seconds, f"{spent:.1f} s of CPU"


@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("path", PATHS)
def test_a_document_crafted_against_the_scans_costs_linear_time(case, path):
    body = HOSTILE[case]()
    options = Options(choice=path, max_bytes=16 * 2**20)
    with cpu_bound(5.0):  # linear: well under a second each here; quadratic: hours
        parsed = parse_document(body, {}, options)
        feed_freshness(body)
    assert [e["title"] for e in parsed.entries] == ["Entry 1"]
