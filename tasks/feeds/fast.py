"""feedparser-rs: the fast parser (Rust, quick-xml), with feedparser's field names.

It is always given bytes: given a ``str`` that looks like a URL it would fetch it itself,
unbounded and unthrottled. Its own limits cap the entries it builds and the nesting depth it
accepts (100). Its verdict on the document — a bozo message, or bytes that do not decode in
the encoding it chose — is what sends ``auto`` to feedparser (``tasks/feeds/parsers.py``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import feedparser_rs

from tasks.feeds.entries import Entry, from_fast

ENTRY_LIMIT = "Entry limit exceeded"
"""feedparser-rs's bozo message when it stopped at ``max_entries``: the entries are kept."""
DATE_FORMAT = re.compile(r"Invalid \w*(?:[Dd]ate|published|updated|modified)\w* format")
"""Its bozo message for a date it could not parse: not a malformed document."""
TOO_DEEP = "nesting depth exceeds"
"""Its bozo message for a document nested deeper than 100 elements: hostile, refused."""


@dataclass
class FastResult:
    entries: list[Entry]
    version: str = ""
    encoding: str = ""
    malformed: str = ""
    """feedparser-rs's bozo message (empty: well-formed), the entry cap's excepted."""
    cut: bool = False
    too_deep: bool = False


def parse(
    body: bytes,
    *,
    sanitize_html: bool,
    resolve_relative_uris: bool,
    max_entries: int,
    max_bytes: int,
) -> FastResult:
    limits = feedparser_rs.ParserLimits(max_entries=max_entries, max_feed_size_bytes=max_bytes)
    if SELF_CLOSED.search(body):
        body = SELF_CLOSED.sub(_written_out, body)
    masked = PRIVATE.search(body) is not None
    if masked:
        body = PRIVATE.sub(rb"://wk-private-\1.invalid", body)
    parsed = feedparser_rs.parse_with_limits(
        bytes(body),
        limits=limits,
        sanitize_html=sanitize_html,
        resolve_relative_uris=resolve_relative_uris,
    )
    message = ""
    if parsed.bozo:
        message = " ".join(str(parsed.get("bozo_exception") or "malformed").split())
    entries = [from_fast(entry) for entry in parsed.entries]
    if masked:
        _unmask(entries)
    result = FastResult(
        entries,
        version=str(parsed.version or ""),
        encoding=str(parsed.encoding or ""),
    )
    if message.startswith(ENTRY_LIMIT):
        result.cut = True
    elif DATE_FORMAT.match(message):
        pass  # a date it could not parse: feedparser's date parser reads it (entries.py)
    elif TOO_DEEP in message:
        result.too_deep = True
        result.malformed = message
    elif message:
        result.malformed = message
    return result


def same_codec(a: str, b: str) -> bool:
    try:
        return codecs.lookup(a).name == codecs.lookup(b).name
    except LookupError:
        return False


# Every run inside a tag below is ``[^<>]*`` (an XML attribute value holds no ``<``): it ends
# at the next tag, so the scans from two tags never overlap and a document costs time linear in
# its length. ``[^>]*`` ran on past ``<`` to the next ``>``, and ``[^<>]*?\s*`` rescanned its
# whitespace: both quadratic (8 MB of ``<title `` in a CDATA section was hours of CPU).
INLINE = re.compile(
    rb"<(?:(?:[A-Za-z_][\w.-]*:)?(?:title|description|summary|subtitle)|category)"
    rb"(\s[^<>]*)?(?<!/)>"
    rb"[^<]*<[A-Za-z_]"
)
"""A text element holding a child element — raw markup in an RSS description, an ``<image>``
inside a category — which feedparser-rs reads as text, losing what follows the child
(``a <b>b</b> c`` → ``a b``) or taking the child's link as the entry's; feedparser keeps the
markup. Atom's ``type="xhtml"`` is read right by both."""

TYPED = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?(?:title|summary|subtitle|rights)\s[^<>]*type=[\"']"
    rb"(?!text/plain|text/html|application/xhtml\+xml)[\w.+-]+/"
)
"""An Atom text construct typed with another MIME type: not valid Atom 1.0 (text, html or
xhtml), but feedparser decodes it as base64, as Atom 0.3's ``mode="base64"``; feedparser-rs
keeps the base64."""

SELF_CLOSED = re.compile(
    rb"<((?:category|source|comments|author|description|title|guid)|"
    rb"dc:(?!date\b)[\w.-]+|content:encoded|itunes:(?:explicit|duration|summary|subtitle|"
    rb"author|episode|season|episodeType|title))(\s[^<>]*)?/>"
)
"""A self-closed text element (``<category/>``, ``<dc:creator />``), after which feedparser-rs
loses the next element (a ``<pubDate>``); written out as ``<category></category>`` — the same
XML — before it parses. (Self-closed ``enclosure``, ``media:*``, ``itunes:image``, ``dc:date``
and ``atom:link`` are read right.)"""

LINK_HREF = re.compile(rb"<link\s[^<>]*\bhref\s*=")
"""In RSS, an Atom-style ``<link href=".."/>`` without its namespace: feedparser takes the
href, feedparser-rs the (empty) text."""


PRIVATE = re.compile(
    rb"://(localhost|127\.[\d.]+|10\.[\d.]+|192\.168\.[\d.]+|172\.(?:1[6-9]|2\d|3[01])\.[\d.]+"
    rb"|169\.254\.[\d.]+|0\.0\.0\.0)(?=[:/\"'<\s?#]|$)"
)
"""A URL to a loopback or private IPv4 host (or localhost), whose links feedparser-rs blanks.
An alert's link is data, not a request: such hosts are masked as a name before it parses
(``wk-private-<host>.invalid``) and unmasked in the entries after."""
MASKED = re.compile(r"wk-private-([\w.]+?)\.invalid")


def _unmask(entries: list[Entry]) -> None:
    for entry in entries:
        for name in ("link", "id", "title", "summary"):
            value = entry.get(name)
            if isinstance(value, str) and "wk-private-" in value:
                entry[name] = MASKED.sub(r"\1", value)


def _written_out(found: re.Match[bytes]) -> bytes:
    return b"<" + found.group(1) + (found.group(2) or b"") + b"></" + found.group(1) + b">"


DATES = (b"dcterms", b"dc:date")
"""Date elements feedparser-rs misses in some documents (``dcterms:issued``/``modified``, a
``dc:date`` next to them)."""


def content_doubt(result: FastResult, body: bytes) -> str:
    """What in this document feedparser-rs is known to read differently from feedparser
    (each case is in ``tests/integration/test_feed_parsers.py``); empty: nothing."""
    if result.version == "atom03":
        return "Atom 0.3 (modes and inline XML only feedparser reads)"
    if result.version.startswith("rss") and LINK_HREF.search(body):
        return "an RSS link with an href"
    for found in INLINE.finditer(body):
        if b"xhtml" not in (found.group(1) or b""):
            return "markup inside a text element"
    if TYPED.search(body):
        return "a text construct typed as another MIME type (base64)"
    for entry in result.entries:
        if entry.get("link_blanked"):
            return "a link feedparser-rs blanked (a private or loopback address)"
        if "published" not in entry and "updated" not in entry and any(d in body for d in DATES):
            return "a date feedparser-rs did not read"
    return ""


def misread(result: FastResult, body: bytes, http_charset: str) -> str:
    """Why the text feedparser-rs produced may not be the document's: an HTTP charset it did
    not use (feedparser follows it, RFC 3023), or bytes invalid in the encoding it chose (it
    replaces them with U+FFFD; feedparser retries other encodings). Empty: neither."""
    if body.isascii():
        return ""
    if http_charset and result.encoding and not same_codec(http_charset, result.encoding):
        return f"HTTP charset {http_charset} but read as {result.encoding}"
    if not result.encoding or same_codec(result.encoding, "utf-8"):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 at byte {exc.start}"
    return ""
