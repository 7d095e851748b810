"""The parser layer: one call from fetched bytes to entries, whichever parser reads them.

* JSON Feed (by content type, or a body starting with ``{``): ``tasks/feeds/jsonfeed.py``,
  whatever the parser setting (feedparser does not read JSON Feed).
* ``fast``: feedparser-rs only (``tasks/feeds/fast.py``).
* ``feedparser``: feedparser only (``tasks/feeds/classic.py``), the reference for odd feeds.
* ``auto`` (the default): feedparser-rs first — ~1/10 of feedparser's CPU on real feeds — and
  feedparser when feedparser-rs raises (``raised``), finds no entries (``no_entries``), reports
  a malformed document (``malformed``), or read text the document's encoding disagrees with
  (``encoding``: an HTTP charset it ignored, bytes invalid in its encoding), or the document
  holds something feedparser-rs is known to read differently (``content``: Atom 0.3, markup
  inside a text element, a self-closed RSS text element, a blanked link, a missed date —
  ``tasks/feeds/fast.py``). Each poll's choice and reason go into the source's state
  (``tasks/feeds/tasks.py``).

Before any parser: the body is refused above the byte cap, and each parser is held to the
entry cap (feedparser-rs's own limit, the document cut before feedparser, the JSON stream
stopped keeping). A document nested deeper than feedparser-rs accepts (100) is refused rather
than handed to feedparser.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.feeds import classic, fast, jsonfeed
from tasks.feeds.entries import Entry
from workers.core.settings import Settings
from workers.polling.errors import SourceProblem

REASONS = ("raised", "no_entries", "malformed", "encoding", "content")
"""Why ``auto`` fell back to feedparser; each has a count in the source's state."""


@dataclass(frozen=True)
class Options:
    """What a feed asks of its parser, and the caps it is held to."""

    choice: str = "auto"
    sanitize_html: bool = False
    resolve_relative_uris: bool = False
    max_bytes: int = 15 * 1024 * 1024
    max_entries: int = 2000
    max_elements: int = 200_000

    @classmethod
    def of(cls, settings: Settings, choice: str, sanitize: bool, resolve: bool) -> Options:
        return cls(
            choice or settings.feed_parser,
            sanitize,
            resolve,
            settings.http_max_bytes,
            settings.feed_max_entries,
            settings.feedparser_max_elements,
        )


@dataclass
class Parsed:
    entries: list[Entry]
    parser: str
    """"fast", "feedparser" or "json"."""
    format: str = ""
    fallback: str = ""
    """One of ``REASONS`` when ``auto`` fell back to feedparser."""
    detail: str = ""
    """One line: why it fell back, or what the parser said of a document without entries."""
    cut: bool = False
    bad: int = 0


def content_type(headers: dict[str, str]) -> tuple[str, str]:
    """The media type and its charset parameter, lower-cased."""
    value = headers.get("content-type", "")
    media, _, params = value.partition(";")
    charset = ""
    for param in params.split(";"):
        name, _, raw = param.partition("=")
        if name.strip().lower() == "charset":
            charset = raw.strip().strip("\"'").lower()
    return media.strip().lower(), charset


def parse_document(body: bytes, headers: dict[str, str], options: Options) -> Parsed:
    """Entries of one fetched document (possibly none: the caller says why from ``detail``);
    ``SourceProblem`` for a document refused outright."""
    if len(body) > options.max_bytes:
        raise SourceProblem(f"{len(body)} bytes, more than the cap of {options.max_bytes}")
    media, charset = content_type(headers)
    if jsonfeed.is_json_feed(body, media):
        entries, version, bad, dropped = jsonfeed.parse(body, media, options.max_entries)
        return Parsed(entries, "json", version, cut=dropped > 0, bad=bad)
    if options.choice == "feedparser":
        return _feedparser(body, headers, options)
    try:
        result = _fast(body, options)
    except Exception as exc:  # a crash inside it is the document's fault, not the poll's
        if options.choice == "fast":
            raise SourceProblem(f"feedparser-rs failed: {_line(exc)}") from None
        return _feedparser(body, headers, options, "raised", _line(exc))
    if result.too_deep:
        raise SourceProblem(f"refused: {result.malformed}")
    if options.choice == "fast":
        return Parsed(
            result.entries, "fast", result.version, detail=result.malformed, cut=result.cut
        )
    reason, detail = _doubt(result, body, charset)
    if reason:
        return _feedparser(body, headers, options, reason, detail)
    return Parsed(result.entries, "fast", result.version, cut=result.cut)


def _fast(body: bytes, options: Options) -> fast.FastResult:
    return fast.parse(
        body,
        sanitize_html=options.sanitize_html,
        resolve_relative_uris=options.resolve_relative_uris,
        max_entries=options.max_entries,
        max_bytes=options.max_bytes,
    )


def _doubt(result: fast.FastResult, body: bytes, charset: str) -> tuple[str, str]:
    """Why feedparser should read this document after all: ``("", "")`` when nothing does."""
    if not result.entries:
        return "no_entries", result.malformed or f"no entries ({result.version or 'no format'})"
    if result.malformed:
        return "malformed", result.malformed
    misread = fast.misread(result, body, charset)
    if misread:
        return "encoding", misread
    doubt = fast.content_doubt(result, body)
    if doubt:
        return "content", doubt
    return "", ""


def _feedparser(
    body: bytes, headers: dict[str, str], options: Options, reason: str = "", detail: str = ""
) -> Parsed:
    entries, verdict, cut = classic.parse(
        body,
        headers,
        sanitize_html=options.sanitize_html,
        resolve_relative_uris=options.resolve_relative_uris,
        max_entries=options.max_entries,
        max_elements=options.max_elements,
    )
    if not entries and verdict["bozo"] and verdict["bozo_exception"] is not None:
        detail = f"not a valid feed: {_line(verdict['bozo_exception'])}"
    elif not entries:
        detail = f"{verdict['version']} feed without entries" if verdict["version"] else ""
    return Parsed(entries, "feedparser", verdict["version"], reason, detail, cut)


def _line(exc: object) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return first or type(exc).__name__
