"""The offline gazetteer: its rules, its precision/recall on 125 hand-written headlines, and its
compact on-disk index (built once, memory-mapped, rebuilt when damaged)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tasks.locations.model import NO_LOCATION
from tasks.locations.resolvers.gazetteer import (
    Gazetteer,
    GazetteerResolver,
    get_gazetteer,
    locate,
)
from tasks.locations.resolvers.gazetteer_cache import load, version
from tasks.locations.resolvers.gazetteer_index import NAMES_FILE, PLACES_FILE
from tests.support.helpers import DATA

ROOT = Path(__file__).resolve().parents[2]

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


# --- the compact index (issue 15): files built once, mapped by every process -----------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding one freshly built index."""
    cache = tmp_path_factory.mktemp("gazetteer-cache")
    load(cache)
    return cache


def _index_dir(cache: Path) -> Path:
    return cache / f"gazetteer-{version()}"


def test_the_index_is_built_once_into_files_and_reused(built: Path) -> None:
    # Given an index built into a cache directory
    names, places = _index_dir(built) / NAMES_FILE, _index_dir(built) / PLACES_FILE
    before = (names.stat().st_ino, places.stat().st_mtime_ns)
    # When another process-wide open happens
    index = load(built)
    # Then the same files are mapped, not rebuilt, and they answer like the process's gazetteer
    assert (names.stat().st_ino, places.stat().st_mtime_ns) == before
    assert Gazetteer(index).locate("Fire in Lisbon") == locate("Fire in Lisbon")
    assert names.stat().st_size + places.stat().st_size < 8 * 2**20


def test_a_damaged_index_is_rebuilt_and_other_versions_removed(built: Path, tmp_path: Path) -> None:
    # Given a copy of the index with a truncated places file, and an index of an older version
    cache = tmp_path / "cache"
    shutil.copytree(built, cache)
    places = _index_dir(cache) / PLACES_FILE
    places.write_bytes(places.read_bytes()[:1000])
    (cache / "gazetteer-000000000000").mkdir()
    # When it is loaded
    index = load(cache)
    # Then it was built again, whole, and the old version is gone
    assert places.stat().st_size > 1000
    assert Gazetteer(index).locate("Storm hits New York City").name == "New York City"
    assert not (cache / "gazetteer-000000000000").exists()


def test_a_name_keeps_its_places_in_rank_order(built: Path) -> None:
    index = load(built)
    springfields = index.get("springfield")
    assert len(springfields) > 1 and all(p.kind == "city" for p in springfields)
    assert springfields[0].population == max(p.population for p in springfields)
    assert {p.kind for p in index.get("georgia")} == {"state", "country"}
    # the longest name at the start of the query wins, and only on a word boundary
    hit = index.longest("new york city hall")
    assert hit is not None and hit[0] == 3 and hit[1][0].location.name == "New York City"
    assert index.longest("new yorkers") is None and index.longest("parisian fashion") is None
    assert index.get("narnia") == [] and len(index) > 40_000


_MEASURE_CHILD = """
import json, sys, psutil
from tasks.locations.resolvers.gazetteer import locate
rows = json.loads(open(sys.argv[1]).read())
before = psutil.Process().memory_full_info().uss
for row in rows:
    locate(row["title"] + "\\n" + row["summary"])
print(psutil.Process().memory_full_info().uss - before)
"""


def test_locating_alerts_costs_a_process_a_few_mb_not_the_whole_index() -> None:
    # Given the index already built (this process's gazetteer built it under WATCHKEEPER_HOME)
    get_gazetteer()
    # When a fresh process opens it and locates 125 headlines
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_CHILD, str(HEADLINES)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # Then its private memory grew by a few MB (the dict index cost ~80 MB per process)
    grown_mb = int(out.stdout.strip()) / 2**20
    assert grown_mb < 10, f"{grown_mb:.1f} MB"
