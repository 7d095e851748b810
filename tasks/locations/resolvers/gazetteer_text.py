"""How the gazetteer reads text: accent-free, case-preserving word tokens and name keys.

Shared by the index builder (names → keys) and the matcher (alert text → n-grams) so both cut
words the same way; a change here changes the index's version (see ``gazetteer_index``).
"""

from __future__ import annotations

import re
import unicodedata

#: Longest place name, in words, that the index holds and the matcher tries.
MAX_NGRAM = 5

_ABBREVIATIONS = [("U.S.A.", "USA"), ("U.S.", "US"), ("U.K.", "UK"), ("D.C.", "DC")]
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def fold(text: str) -> str:
    """``text`` without combining accents ("Zürich" → "Zurich")."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Case-preserving, accent-free ASCII word tokens; "St" is read as "Saint"."""
    text = fold(text)
    for old, new in _ABBREVIATIONS:
        text = text.replace(old, new)
    return ["Saint" if t in ("St", "Ste") else t for t in _TOKEN.findall(text)]


def name_key(name: str) -> str:
    """The index key of a place name: its lower-case tokens joined by single spaces."""
    return " ".join(t.lower() for t in tokens(name))
