"""The key registry: names built from it, and the key tables of docs/ generated from it."""

from __future__ import annotations

import re

from tests.support.helpers import ROOT
from workers.core import doc_tables, keys
from workers.core.settings import Settings


def test_key_names_are_built_from_their_pattern_in_order() -> None:
    settings = Settings.from_env({"WATCHKEEPER_PREFIX": "x:"})
    assert keys.SEEN.key(settings, "bbc") == "x:seen:bbc"
    assert keys.HOST_SLOTS.key(settings, "a.example:8080") == "x:host:a.example:8080:slots"
    assert keys.DEAD_LETTERS.key(settings) == "x:dead"


def test_a_key_name_matches_its_most_specific_declaration() -> None:
    settings = Settings.from_env({})
    assert keys.match("wk:host:h:80:slots", settings) is keys.HOST_SLOTS
    assert keys.match("wk:loc:batch:abc", settings) is keys.LEGACY_BATCH
    assert keys.match("wk:stream:alerts:seq", settings) is keys.STREAM_SEQ
    assert keys.match("wk:loc:buffer", settings) is keys.LOC_BUFFER
    assert keys.match("wk:nothing:here", settings) is None
    assert keys.match("other:seen:x", settings) is None


def test_every_declared_key_is_in_a_docs_table_exactly_as_generated() -> None:
    """docs/keys.md lists every group; every copy of a table in docs/ (each stage's page shows
    its own) is exactly what the declarations generate."""
    tables = keys.doc_tables()
    whole = found_in((ROOT / "docs" / "keys.md").read_text(encoding="utf-8"), tables)
    assert whole == set(tables), f"docs/keys.md lacks the tables {set(tables) - whole}"
    assert doc_tables.stale(doc_tables.pages(ROOT / "docs"), tables) == [], (
        "a key table in docs/ is stale: run python3 -m workers.core.keys --docs docs"
    )


def test_the_readme_holds_no_generated_table() -> None:
    """The tables moved to docs/; a copy left in the README would go stale unseen."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- keys:" not in readme
    assert "<!-- settings:" not in readme


def found_in(text: str, tables: dict[str, str]) -> set[str]:
    return {name for name in tables if doc_tables.found(text, name)}


def test_no_module_builds_a_key_name_by_hand() -> None:
    sources = [p for d in ("workers", "tasks") for p in (ROOT / d).rglob("*.py")]
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources
        if p.name != "keys.py"
        and re.search(r"\.prefix\s*\+|settings\.key\(", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
