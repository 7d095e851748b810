"""OPML 2.0 import and export of feeds, as Miniflux and FreshRSS write it.

Import (``watchkeeper sources import-opml FILE``): every outline with an ``xmlUrl`` is a feed —
its ``title`` (else ``text``) its title, its ``htmlUrl`` its site, the category outline around
it its tag; outlines of another ``type`` (FreshRSS's ``HTML+XPath``) are skipped, as are
repeated URLs. Feeds are owned by ``opml``; a feed already imported (same URL) keeps its name
and is updated. Every feed is validated by the ``[[feeds]]`` reader, then all are written in
one atomic call: a bad outline is one line and nothing is imported.

The file is hostile until parsed: its size is checked before parsing
(``WATCHKEEPER_OPML_MAX_BYTES``); a DOCTYPE — and with it every entity, internal (billion
laughs) or external (XXE) — is refused; lxml runs with entities unresolved, no network and no
huge-tree mode; outlines are counted and their nesting bounded while parsing, and the tree is
discarded as it is read.

Export (``export-opml``) writes exactly what Miniflux's serializer writes — Go's
``encoding/xml`` with four-space indent, categories sorted, each feed's ``title``, ``text``,
``xmlUrl``, ``htmlUrl`` and ``type="rss"`` — so a Miniflux export imported and exported again
is the same file (feeds in each category by title).
"""

from __future__ import annotations

import io
import re
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from workers.core.redact import redact_url
from workers.core.settings import Settings
from workers.core.source_registry import Definition, SourceRegistry

OWNER = "opml"
MAX_DEPTH = 32
"""Outlines nested deeper than this are refused (real exports nest one or two levels)."""

MINIFLUX_NS = "https://miniflux.app/opml"
FEED_TYPES = ("", "rss", "atom")

_DTD_MARKS = tuple(
    mark.encode(codec)
    for mark in ("<!DOCTYPE", "<!doctype", "<!ENTITY", "<!entity")
    for codec in ("utf-8", "utf-16-le", "utf-16-be")
)


class OpmlError(Exception):
    """An OPML file that cannot be imported: one line, nothing written."""


@dataclass(frozen=True)
class Outline:
    """One feed of an OPML file."""

    title: str
    xml_url: str
    html_url: str
    category: str


@dataclass
class Parsed:
    feeds: list[Outline] = field(default_factory=list)
    skipped_types: int = 0
    duplicates: int = 0


# --- reading ---------------------------------------------------------------------------------


def read_bytes(path: str, limit: int) -> bytes:
    """The file (``-``: standard input), refused past ``limit`` bytes before it is parsed."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        raise OpmlError(f"OPML {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise OpmlError(
            f"OPML {path}: larger than WATCHKEEPER_OPML_MAX_BYTES={limit} bytes; nothing imported"
        )
    return data


def parse_opml(data: bytes, label: str, max_feeds: int) -> Parsed:
    """The feeds of an OPML document; ``OpmlError`` (one line) for anything hostile or
    malformed."""
    if any(mark in data for mark in _DTD_MARKS):
        raise OpmlError(f"OPML {label}: a DOCTYPE or entity declaration is not accepted")
    reader = _Reader(label, max_feeds)
    try:
        events = etree.iterparse(
            io.BytesIO(data),
            events=("start", "end"),
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            remove_comments=True,
            remove_pis=True,
        )
        for event, element in events:
            reader.take(event, element)
    except etree.XMLSyntaxError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OpmlError(f"OPML {label}: not valid XML: {first}") from None
    if len(reader.parsed.feeds) > max_feeds:
        raise OpmlError(
            f"OPML {label}: {len(reader.parsed.feeds)} feeds, more than "
            f"WATCHKEEPER_MAX_SOURCES={max_feeds}; nothing imported"
        )
    return reader.parsed


class _Reader:
    """Takes the parser's events one at a time: counts and bounds the outlines, keeps the
    category path, and drops every element once read (memory stays flat)."""

    def __init__(self, label: str, max_feeds: int) -> None:
        self.label, self.max_outlines = label, 2 * max_feeds
        self.parsed = Parsed()
        self.seen: set[str] = set()
        self.categories: list[str] = []
        self.outlines = self.depth = 0

    def take(self, event: str, element: etree._Element) -> None:
        if event == "start" and element.getparent() is None:
            _check_root(element, self.label)
        outline = isinstance(element.tag, str) and etree.QName(element).localname == "outline"
        if event == "start" and outline:
            self.start(element)
        elif event == "end":
            if outline:
                self.depth -= 1
                if not _attr(element, "xmlurl").strip():
                    self.categories.pop()
            if element.getparent() is not None:
                _drop(element)

    def start(self, element: etree._Element) -> None:
        self.outlines += 1
        self.depth += 1
        if self.outlines > self.max_outlines:
            raise OpmlError(
                f"OPML {self.label}: more than {self.max_outlines} outlines (twice "
                "WATCHKEEPER_MAX_SOURCES); nothing imported"
            )
        if self.depth > MAX_DEPTH:
            raise OpmlError(
                f"OPML {self.label}: outlines nested deeper than {MAX_DEPTH}; nothing imported"
            )
        _start(element, self.categories, self.parsed, self.seen)


def _drop(element: etree._Element) -> None:
    """Free what is read: the element's children and its earlier siblings."""
    element.clear()
    parent = element.getparent()
    while parent is not None and (previous := element.getprevious()) is not None:
        parent.remove(previous)


def _check_root(root: etree._Element, label: str) -> None:
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise OpmlError(f"OPML {label}: a DOCTYPE or entity declaration is not accepted")
    if not isinstance(root.tag, str) or etree.QName(root).localname != "opml":
        raise OpmlError(f"OPML {label}: the root element is not <opml>")


def _attr(element: etree._Element, name: str) -> str:
    """An attribute without a namespace, by its name in any case (``xmlUrl``, ``xmlurl``)."""
    for key, value in element.attrib.items():
        if not str(key).startswith("{") and str(key).lower() == name:
            return str(value)
    return ""


def _start(element: etree._Element, categories: list[str], parsed: Parsed, seen: set[str]) -> None:
    url = _attr(element, "xmlurl").strip()
    title = _attr(element, "title") or _attr(element, "text")
    if not url:
        categories.append(title.strip())
        return
    if _attr(element, "type").strip().lower() not in FEED_TYPES:
        parsed.skipped_types += 1
        return
    if url in seen:
        parsed.duplicates += 1
        return
    seen.add(url)
    category = next((c for c in reversed(categories) if c), "")
    parsed.feeds.append(Outline(title, url, _attr(element, "htmlurl").strip(), category))


# --- into the registry -----------------------------------------------------------------------


def slug(text: str) -> str:
    """A source name from a title: ASCII letters, digits, ``.``, ``_``, ``-``; at most 56."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    out = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower())
    out = re.sub(r"-{2,}", "-", out).strip("-._")
    return out[:56].rstrip("-._")


def base_name(outline: Outline) -> str:
    try:
        host = urlsplit(outline.xml_url).hostname or ""
    except ValueError:
        host = ""
    return slug(outline.title) or slug(host) or "feed"


def definitions(
    registry: SourceRegistry, parsed: Parsed, interval: str | None = None
) -> list[Definition]:
    """One ``opml``-owned feed per outline: a URL imported before keeps its name; a new one
    is named after its title, made unique against every name in the registry."""
    held = registry.definitions(sorted(registry.names_of(OWNER)))
    by_url = {str(d.table.get("url")): d.name for d in held.values() if d is not None}
    names: dict[Outline, str] = {}
    taken: set[str] = set(by_url.values())
    pending = []
    for outline in parsed.feeds:
        known = by_url.get(outline.xml_url)
        if known is not None:
            names[outline] = known
        else:
            pending.append(outline)
    _name_new(registry, pending, names, taken)
    out = []
    for outline in parsed.feeds:
        table: dict[str, object] = {"url": outline.xml_url}
        if outline.title:
            table["title"] = outline.title
        if outline.html_url:
            table["site_url"] = outline.html_url
        if outline.category:
            table["tags"] = [outline.category]
        if interval:
            table["interval"] = interval
        out.append(Definition(names[outline], "feed", OWNER, table))
    return out


def _name_new(
    registry: SourceRegistry, pending: list[Outline], names: dict[Outline, str], taken: set[str]
) -> None:
    """Unique names for new feeds: ``base``, else ``base-2``, ``base-3``… in file order, a
    lower number first whichever base asks for it (a feed titled "x 2" keeps ``x-2``).

    The feeds are grouped by base name once; each group's candidates, as many as it has feeds,
    are checked against the registry together — one ``HMGET`` for every group — and only the
    feeds left without a name (their candidates held elsewhere) try again, further on, with
    twice as many candidates as collided: a run of held names costs a round trip per
    doubling, never one per feed."""
    groups: dict[str, deque[Outline]] = {}
    for outline in pending:
        groups.setdefault(base_name(outline), deque()).append(outline)
    tried = dict.fromkeys(groups, 0)
    batch = {base: len(outlines) for base, outlines in groups.items()}
    while groups:
        candidates = _candidates(groups, tried, batch, taken)
        existing = registry.definitions(name for _, _, name in candidates)
        collided = dict.fromkeys(groups, 0)
        for _n, base, name in sorted(candidates):
            left = groups[base]
            if name in taken or existing.get(name) is not None:
                collided[base] += 1
            elif left:
                taken.add(name)
                names[left.popleft()] = name
        groups = {base: left for base, left in groups.items() if left}
        batch = {base: max(len(left), 2 * collided[base]) for base, left in groups.items()}


def _candidates(
    groups: dict[str, deque[Outline]], tried: dict[str, int], batch: dict[str, int], taken: set[str]
) -> list[tuple[int, str, str]]:
    """``(number, base, name)``: each group's next ``batch`` names not taken by this import."""
    out = []
    for base in groups:
        n, found = tried[base], 0
        while found < batch[base]:
            n += 1
            name = base if n == 1 else f"{base}-{n}"
            if name not in taken:
                out.append((n, base, name))
                found += 1
        tried[base] = n
    return out


# --- export ----------------------------------------------------------------------------------


def go_escape(text: str) -> str:
    """What Go's ``encoding/xml`` writes for a string (Miniflux's serializer)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append("&#34;")
        elif ch == "'":
            out.append("&#39;")
        elif ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "\t":
            out.append("&#x9;")
        elif ch == "\n":
            out.append("&#xA;")
        elif ch == "\r":
            out.append("&#xD;")
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _feed_line(d: Definition, indent: str, masked: bool) -> str:
    title = str(d.table.get("title") or d.name)
    url: Callable[[str], str] = redact_url if masked else str
    attrs = [("title", title), ("text", title), ("xmlUrl", url(str(d.table.get("url", ""))))]
    if d.table.get("site_url"):
        attrs.append(("htmlUrl", url(str(d.table["site_url"]))))
    attrs.append(("type", "rss"))
    shown = " ".join(f'{k}="{go_escape(v)}"' for k, v in attrs)
    return f"{indent}<outline {shown}></outline>"


def feed_order(d: Definition) -> tuple[str, str, str]:
    return (str(d.table.get("title") or d.name).casefold(), str(d.table.get("url")), d.name)


def export_opml(
    feeds: Iterable[Definition],
    title: str = "watchkeeper",
    created: float | None = None,
    masked: bool = False,
) -> str:
    """Feeds as Miniflux writes OPML: categories (each feed's first tag) sorted, feeds by
    title, untagged feeds after them at the top level. ``masked``: URL credentials (user info,
    a ``?token=``) replaced by ``***`` — what the dashboard and the API serve, to read-only
    tokens and open loopback reads too; the CLI, run by whoever holds the registry, keeps
    them (a file to import elsewhere)."""
    stamp = time.gmtime(time.time() if created is None else created)
    groups: dict[str, list[Definition]] = {}
    for d in feeds:
        if d.kind != "feed":
            continue
        tags = d.table.get("tags") or []
        groups.setdefault(str(tags[0]) if tags else "", []).append(d)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<opml version="2.0" xmlns:miniflux="{MINIFLUX_NS}">',
        "    <head>",
        f"        <title>{go_escape(title)}</title>",
        f"        <dateCreated>{time.strftime('%a, %d %b %Y %H:%M:%S UTC', stamp)}</dateCreated>",
        "    </head>",
    ]
    body = []
    for category in sorted(c for c in groups if c):
        body.append(f'        <outline text="{go_escape(category)}">')
        body += [_feed_line(d, " " * 12, masked) for d in sorted(groups[category], key=feed_order)]
        body.append("        </outline>")
    body += [_feed_line(d, " " * 8, masked) for d in sorted(groups.get("", []), key=feed_order)]
    if body:  # Go writes no <body> without an outline in it
        lines += ["    <body>", *body, "    </body>"]
    lines.append("</opml>")
    return "\n".join(lines)


def import_file(path: str, settings: Settings) -> Parsed:
    label = "stdin" if path == "-" else str(Path(path))
    return parse_opml(read_bytes(path, settings.opml_max_bytes), label, settings.max_sources)
