"""The fast way through a listing page: an lxml tree and CSS selectors compiled to XPath.

BeautifulSoup builds its tree by replaying the events of lxml's HTML parser (``etree.HTMLParser``,
``recover=True``, the encoding its detector picks) onto a stack: a start tag opens an element
under the innermost open one, an end tag closes up to the nearest open element of that name
(or nothing, if none is open), text and comments go where they occur. ``Builder`` replays the
same events by the same rule into an lxml tree — so the tree is BeautifulSoup's, malformed
pages included, where lxml's own tree is not (content after ``</html>``, stray end tags) —
without a Python object per node. Selectors then run once per page as XPath in C
(``cssselect``, the translator ``lxml.cssselect`` uses) instead of soupsieve in Python: about a
third of the CPU per listing (``python bench/bench_scrape.py``).

The answers are BeautifulSoup's, proven by a differential test
(``tests/unit/test_extract_engines.py``):

* a field is the first *descendant* of the listing, in document order, that the selector
  matches **in the whole document** (soupsieve's ``select_one`` from an element: ``"body h2"``
  finds the listing's ``h2``); ``:scope`` is the listing itself;
* text is every text node below the target joined by a space, whitespace collapsed — without
  comments, and without what is inside ``<script>``, ``<style>`` and ``<template>`` below it
  (BeautifulSoup's ``get_text``);
* an attribute BeautifulSoup reads as a list (``class``, ``rel`` on ``<a>``, …) is its words
  joined by one space, any other is stripped.

A selector ``cssselect`` cannot translate (soupsieve's own ``:-soup-contains``, some ``:has``)
or whose meaning differs (``:root``), a tag or attribute name lxml refuses, or any other
surprise raises ``Unsupported``: the caller takes BeautifulSoup's path for that page, so the
fast path never changes what a site yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from bs4.builder import HTMLTreeBuilder
from bs4.dammit import EncodingDetector
from lxml import etree
from lxml.cssselect import CSSSelector

SKIPPED_TEXT = frozenset({"script", "style", "template"})
"""Below the target, BeautifulSoup's ``get_text`` leaves out what these hold."""
LIST_ATTRIBUTES: dict[str, frozenset[str]] = {
    tag: frozenset(names) for tag, names in HTMLTreeBuilder.DEFAULT_CDATA_LIST_ATTRIBUTES.items()
}
"""Attributes BeautifulSoup splits into words, per tag (``*``: every tag)."""


class Unsupported(Exception):
    """This page or selector is for BeautifulSoup's path."""


@lru_cache(maxsize=512)
def compiled(css: str) -> CSSSelector:
    if ":root" in css:  # the document's element for soupsieve, our synthetic root here
        raise Unsupported(f"selector {css!r}: :root")
    try:
        return CSSSelector(css, translator="html")
    except Exception as exc:  # cssselect's SelectorError, ExpressionError, lxml's XPath errors
        raise Unsupported(f"selector {css!r}: {exc}") from None


class Builder:
    """An lxml parser target that builds BeautifulSoup's tree (see the module docstring)."""

    def __init__(self) -> None:
        self.root: Any = etree.Element("wk-document")
        self.stack: list[Any] = [self.root]
        self.open: dict[str, int] = {}
        self.pending: list[str] = []

    def _flush(self) -> None:
        if not self.pending:
            return
        text, self.pending = "".join(self.pending), []
        parent = self.stack[-1]
        if len(parent):
            last = parent[-1]
            last.tail = (last.tail or "") + text
        else:
            parent.text = (parent.text or "") + text

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._flush()
        element = etree.SubElement(self.stack[-1], tag, dict(attrib))
        self.stack.append(element)
        self.open[tag] = self.open.get(tag, 0) + 1

    def end(self, tag: str) -> None:
        self._flush()
        if not self.open.get(tag):
            return
        while len(self.stack) > 1:
            element = self.stack.pop()
            self.open[element.tag] -= 1
            if element.tag == tag:
                return

    def data(self, text: str) -> None:
        self.pending.append(text)

    def comment(self, text: str) -> None:
        self._flush()
        self.stack[-1].append(etree.Comment(text.replace("--", "- -")))

    def pi(self, target: str, data: str | None = None) -> None:
        self.comment(f"{target} {data or ''}")

    def doctype(self, *_: Any) -> None:
        self._flush()

    def close(self) -> Any:
        self._flush()
        return self.root


class LxmlPage:
    """One parsed page; ``select`` and ``field`` answer as soupsieve and ``get_text`` would."""

    def __init__(self, body: bytes, charset: str | None) -> None:
        try:
            detector = EncodingDetector(
                body, known_definite_encodings=[charset] if charset else [], is_html=True
            )
            encoding = next(iter(detector.encodings), None)
            parser = etree.HTMLParser(target=Builder(), recover=True, encoding=encoding)
            parser.feed(detector.markup)
            root = parser.close()
        except Exception as exc:  # an encoding lxml does not know, a name lxml refuses
            raise Unsupported(f"page: {type(exc).__name__}") from None
        self.root: Any = root
        self._matches: dict[str, set[Any]] = {}

    def select(self, css: str) -> list[Any]:
        """Every element ``css`` matches, in document order (never the synthetic root)."""
        return [e for e in compiled(css)(self.root) if e is not self.root]

    def first(self, css: str) -> Any | None:
        found = self.select(css)
        return found[0] if found else None

    def below(self, element: Any, css: str) -> Any | None:
        """The first descendant of ``element`` that ``css`` matches in the whole document."""
        if css == ":scope":
            return element
        matches = self._matches.get(css)
        if matches is None:
            matches = self._matches[css] = set(compiled(css)(self.root))
        if not matches:
            return None
        for node in element.iterdescendants():
            if node in matches:
                return node
        return None

    def release(self) -> None:
        self._matches.clear()
        self.root = None


def text_of(target: Any) -> Iterator[str]:
    """The text nodes below ``target`` in document order, as ``get_text`` picks them."""
    skipping: Any = None
    for event, node in etree.iterwalk(target, events=("start", "end", "comment", "pi")):
        tag = node.tag
        if event in ("comment", "pi"):  # its own text is not text; what follows it is
            if skipping is None and node is not target and node.tail:
                yield node.tail
            continue
        if event == "start":
            if skipping is not None:
                continue
            if not isinstance(tag, str):
                continue
            if node is not target and tag.lower() in SKIPPED_TEXT:
                skipping = node
                continue
            if node.text:
                yield node.text
        else:
            if node is skipping:
                skipping = None
            elif skipping is not None:
                continue
            if node is not target and node.tail:
                yield node.tail


def attribute(target: Any, name: str) -> str | None:
    """The attribute as BeautifulSoup's ``get``, list attributes joined: None when absent."""
    raw = target.get(name)
    if raw is None:
        return None
    tag = target.tag.lower() if isinstance(target.tag, str) else ""
    if name in LIST_ATTRIBUTES.get("*", ()) or name in LIST_ATTRIBUTES.get(tag, ()):
        return " ".join(str(raw).split())
    return str(raw)
