"""The offline gazetteer: its rules, and its precision/recall on 125 hand-written headlines."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from tasks.locations.model import NO_LOCATION
from tasks.locations.resolvers.gazetteer import GazetteerResolver, get_gazetteer, locate
from tests.support.helpers import DATA

HEADLINES = DATA / "headlines.json"


def _fold(name: str) -> str:
    """Accent- and case-insensitive: "Zürich" names the same city as "Zurich"."""
    return "".join(
        c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)
    ).lower()


def scores(pairs: list[tuple[str | None, str | None]]) -> tuple[float, float]:
    """Precision and recall of (expected, predicted) labels where None means "no place"."""
    predicted = sum(1 for _, p in pairs if p)
    expected = sum(1 for e, _ in pairs if e)
    right = sum(1 for e, p in pairs if e and p and _fold(e) == _fold(p))
    return right / max(1, predicted), right / max(1, expected)


def test_headline_fixture_precision_and_recall_meet_the_floor() -> None:
    # Given 125 realistic headlines labelled with their country and city (or none)
    rows: list[dict[str, Any]] = json.loads(HEADLINES.read_text())
    assert len(rows) >= 100
    countries, cities = [], []
    for row in rows:
        # When the gazetteer reads each one
        loc = locate(row["title"] + "\n" + row["summary"])
        countries.append((row["country"], loc.country_code or None))
        cities.append((row["city"], loc.name if loc.precision == "city" else None))
    cp, cr = scores(countries)
    tp, tr = scores(cities)
    print(
        f"\ngazetteer on {len(rows)} headlines: country precision {cp:.3f} recall {cr:.3f}; "
        f"city precision {tp:.3f} recall {tr:.3f}"
    )
    # Then both levels stay above the floor
    assert cp >= 0.90 and cr >= 0.85
    assert tp >= 0.90 and tr >= 0.85


def test_most_specific_match_wins_city_over_country() -> None:
    loc = locate("Spain: floods hit Valencia")
    assert (loc.name, loc.country_code, loc.precision) == ("Valencia", "ES", "city")
    assert loc.lat is not None and 39 < loc.lat < 40


def test_among_equal_matches_the_most_populous_wins() -> None:
    assert locate("Talks continue in Santiago").country_code == "CL"


def test_a_named_state_picks_its_city_among_namesakes() -> None:
    loc = locate("Police arrest man in Springfield, IL")
    assert (loc.name, loc.admin) == ("Springfield", "Illinois")


def test_lower_case_words_are_not_places() -> None:
    assert locate("a nice day to be reading by the sea") == NO_LOCATION


def test_text_without_a_place_is_the_explicit_no_location() -> None:
    loc = locate("Central bank leaves interest rates unchanged")
    assert loc == NO_LOCATION and not loc.found and loc.precision == "none"


def test_state_and_country_matches_carry_coordinates() -> None:
    state, country = locate("Drought grips Arizona"), locate("Election day in Ghana")
    assert state.precision == "state" and state.country_code == "US" and state.lat
    assert country.precision == "country" and country.country_code == "GH" and country.lon


def test_the_index_is_built_once_per_process() -> None:
    assert get_gazetteer() is get_gazetteer()


def test_the_batch_resolver_answers_for_every_id() -> None:
    result = GazetteerResolver().resolve([("a", "Fire in Lisbon"), ("b", "Nothing here")])
    assert result.located["a"].name == "Lisbon" and result.located["b"] == NO_LOCATION
    assert result.missing == [] and result.malformed == []
