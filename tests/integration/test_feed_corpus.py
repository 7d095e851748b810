"""feedparser's own test corpus through the real poll loop with ``auto``: every entry feedparser
finds reaches ``alerts`` with the title and link feedparser gives it.

The corpus is every ``tests/**/*.xml`` of feedparser's sdist, shipped in ``tests/data``
(feedparser-6.0.14.tar.gz, BSD-2-Clause, its LICENSE inside): 2,242 small, odd, often broken
documents. Each is served by a local HTTP server with the headers its ``Header:`` lines ask
for (as feedparser's own test runner serves them) and polled once.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import warnings
from dataclasses import replace
from urllib.parse import urljoin

import feedparser

from tests.support.helpers import DATA, respond
from workers.polling.poll import poll_now
from workers.store.streams import CappedStream

SDIST = DATA / "feedparser-6.0.14.tar.gz"
HEADER = re.compile(rb"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.M)

KNOWN = {
    "wellformed/node_precedence/atom10_id.xml": (
        "feedparser takes the <id> inside the second entry's <image> as its link; its own test "
        "says the entry's id wins, and feedparser-rs gives that"
    ),
}
"""Documents where ``auto`` keeps feedparser-rs's answer and feedparser is wrong."""


def corpus() -> dict[str, bytes]:
    with tarfile.open(SDIST) as tar:
        return {
            m.name.split("/tests/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if "/tests/" in m.name and m.name.endswith(".xml") and m.isfile()
        }


def headers_of(body: bytes) -> dict[str, str]:
    head = body[:2048]
    if not head.lstrip().startswith(b"<!--"):
        return {}
    found = HEADER.findall(head.split(b"-->")[0])
    return {k.decode(): v.decode("latin-1") for k, v in found}


def expected(body: bytes, headers: dict[str, str], url: str) -> list[tuple[str, str, str]]:
    """(title, link, key) of feedparser's entries as watchkeeper wrote them before the layer."""
    from tasks.feeds.parse import entry_key

    parsed = feedparser.parse(
        io.BytesIO(body),
        response_headers={k.lower(): v for k, v in headers.items()},
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    out = []
    for raw in parsed.entries:
        entry = dict(raw)
        link = str(entry.get("link", ""))
        if link and not link.startswith(("https://", "http://")):
            with contextlib.suppress(ValueError):
                link = urljoin(url, link)
        out.append((str(entry.get("title", "")), link, entry_key(entry)))
    return out


def test_every_entry_feedparser_finds_reaches_alerts_with_its_title_and_link(runtime, http_server):
    warnings.filterwarnings("ignore")
    rt = runtime
    rt.settings = replace(
        rt.settings, host_delay=0.0, host_concurrency=8, max_alerts=50_000, feed_parser="auto"
    )
    docs = corpus()
    assert len(docs) == 2242
    config = []
    for n, (_, body) in enumerate(sorted(docs.items())):
        headers = {"Content-Type": "application/xml", **headers_of(body)}
        headers.pop("Content-Length", None)
        http_server.route(f"/{n}", lambda req, b=body, h=headers: respond(req, 200, b, h))
        config.append(f'[[feeds]]\nname = "c{n}"\nurl = "{http_server.url(f"/{n}")}"\n')
        config.append("locate = false\n")
    rt.use_config("".join(config))
    mismatched, compared, fell_back = [], 0, 0
    for n, (name, body) in enumerate(sorted(docs.items())):
        url = http_server.url(f"/{n}")
        headers = {"content-type": "application/xml"} | {
            k.lower(): v for k, v in headers_of(body).items()
        }
        want = expected(body, headers, url)
        result = poll_now(rt, rt.config().get(f"c{n}"))
        fell_back += bool(rt.redis.hget(f"wk:src:c{n}", "parser_fallback"))
        if not want:
            continue
        got = [
            (a["title"], a["link"], a["key"])
            for _, a in CappedStream(rt.redis, "wk:stream:alerts", 10**6).latest(10**6)
            if a["source"] == f"c{n}"
        ]
        seen: set[str] = set()
        unique = [w for w in want if not (w[2] in seen or seen.add(w[2]))]  # dedup by key
        compared += len(unique)
        if [(t, li) for t, li, _ in got] != [(t, li) for t, li, _ in unique] and name not in KNOWN:
            mismatched.append((name, result.get("error"), got[:2], unique[:2]))
        rt.redis.delete("wk:stream:alerts")
    assert compared > 1100
    assert mismatched == [], mismatched[:5]
    assert 0 < fell_back < len(docs)
