"""Each kind's declared fields (``workers.core.source_schema``) and its reader agree: the same
names, types, required fields and defaults, and the JSON Schema the REST API publishes accepts
and refuses what the reader accepts and refuses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import workers.stages  # noqa: F401 (declares the kinds)
from workers.core.source_schema import FieldSpec, check_readers, fields_of, input_schema
from workers.core.sources_file import KIND_SECTIONS, read_sources
from workers.polling.kinds import KINDS

WRONG_TYPE: dict[str, Any] = {
    "string": 3,
    "integer": "three",
    "number": "three",
    "boolean": "yes",
    "duration": True,
    "strings": "news",
    "table": "X-A: b",
}


def kinds() -> list[str]:
    return [k.name for k in KINDS]


def reader_problems(kind: str, table: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    read_sources(KIND_SECTIONS[kind], [table], problems)
    return problems


def schema_errors(kind: str, table: dict[str, Any]) -> list[str]:
    schema = input_schema(kind, fields_of(KINDS[kind].fields))
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [e.message for e in validator.iter_errors({"kind": kind, **table})]


def full_table(kind: str) -> dict[str, Any]:
    """Every declared field at its example value."""
    return {f.name: f.example for f in fields_of(KINDS[kind].fields) if f.example is not None} | {
        "name": "probe"
    }


def minimal_table(kind: str) -> dict[str, Any]:
    """The required fields only (at their examples)."""
    full = full_table(kind)
    return {f.name: full[f.name] for f in fields_of(KINDS[kind].fields) if f.required}


@pytest.mark.parametrize("kind", kinds())
def test_every_field_a_reader_reads_is_declared_and_the_other_way_round(kind):
    k = KINDS[kind]
    assert check_readers(kind, k.read, fields_of(k.fields)) == []


def test_a_declaration_out_of_step_with_its_reader_is_named():
    feed = KINDS["feed"]
    specs = fields_of(feed.fields)
    missing = tuple(f for f in specs if f.name != "locate")
    assert check_readers("feed", feed.read, missing) == [
        "feed: locate: read by the reader, not declared"
    ]
    extra = (*specs, FieldSpec("colour", "string", "not read by anyone"))
    assert check_readers("feed", feed.read, extra) == [
        "feed: colour: declared, never read by the reader"
    ]
    retyped = tuple(replace(f, type="string") if f.name == "locate" else f for f in specs)
    assert check_readers("feed", feed.read, retyped) == [
        "feed: locate: declared string, the reader asks for <class 'bool'>"
    ]
    default = tuple(replace(f, default=False) if f.name == "locate" else f for f in specs)
    assert check_readers("feed", feed.read, default) == [
        "feed: locate: default False, the reader's True"
    ]


@pytest.mark.parametrize("kind", kinds())
def test_every_example_and_the_required_fields_alone_are_valid_for_both(kind):
    for table in (full_table(kind), minimal_table(kind)):
        assert reader_problems(kind, table) == []
        assert schema_errors(kind, table) == []


@pytest.mark.parametrize("kind", kinds())
def test_a_value_of_the_wrong_type_is_refused_by_both(kind):
    base = minimal_table(kind)
    for spec in fields_of(KINDS[kind].fields):
        table = {**base, spec.name: WRONG_TYPE[spec.type]}
        problems = reader_problems(kind, table)
        assert any(p.startswith("source '") and f": {spec.name}" in p for p in problems), (
            spec.name,
            problems,
        )
        assert schema_errors(kind, table), spec.name


@pytest.mark.parametrize("kind", kinds())
def test_values_outside_a_declared_enum_or_pattern_are_refused_by_both(kind):
    base = minimal_table(kind)
    bad: dict[str, Any] = {
        "enum": "no-such-choice",
        "pattern": "\x01 not: it",
        "minimum": -5,
        "minLength": "",
    }
    checked = 0
    for spec in fields_of(KINDS[kind].fields):
        for keyword, value in bad.items():
            if keyword not in spec.constraints or spec.type in ("table", "strings"):
                continue
            if keyword == "minimum" and spec.type not in ("integer", "number"):
                continue
            if keyword != "minimum" and spec.type != "string":
                continue
            table = {**base, spec.name: value}
            assert reader_problems(kind, table), (spec.name, keyword)
            assert schema_errors(kind, table), (spec.name, keyword)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("kind", kinds())
def test_an_unknown_key_is_refused_by_both(kind):
    table = {**minimal_table(kind), "colour": "blue"}
    assert reader_problems(kind, table) == ["source 'probe': colour: unknown key"]
    assert schema_errors(kind, table)


def test_an_inline_secret_is_refused_by_both():
    table = {**minimal_table("feed"), "auth": "Bearer abc"}
    assert schema_errors("feed", table)
    problems = reader_problems("feed", table)
    assert problems == [
        "source 'probe': auth: a credential ('Bearer TOKEN', 'Basic USER:PASSWORD') goes only "
        'through the environment: write "env:NAME" (the value is not shown)'
    ]
    assert "abc" not in problems[0]
