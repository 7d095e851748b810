"""``[[notify]]`` validation: every problem one line, secrets never printed; RE2 regexes;
templates; filters."""

from __future__ import annotations

import pytest

import tasks.notify  # noqa: F401 (declares the [[notify]] and [notify_filters] sections)
from tasks.notify.config import STREAMS, notify_config, read_sinks, unset_variables
from tasks.notify.filters import compile_pattern, passes
from tasks.notify.templates import context_for, render
from workers.core.sources_file import ConfigError, validate_config

SECRET = "s3cr3tt0kenvalue"


def problems_of(tables: list[dict], environ: dict[str, str] | None = None) -> list[str]:
    problems: list[str] = []
    read_sinks(tables, problems, environ=environ or {})
    return problems


def test_a_valid_sink_with_defaults():
    config = validate_config(
        {
            "notify": [{"name": "ops", "urls": ["json://127.0.0.1:8080/hook"]}],
            "notify_filters": {"exclude": ["(?i)advert"]},
        }
    )
    ncfg = notify_config(config)
    (sink,) = ncfg.sinks
    assert sink.streams == STREAMS and sink.digest is None
    assert sink.destinations[0].label == "JSON 127.0.0.1:8080"  # service and host, no path
    assert ncfg.filters.exclude == ("(?i)advert",)


def test_every_problem_is_one_line_naming_sink_and_field():
    problems = problems_of(
        [
            {
                "name": "ops",
                "urls": ["json://127.0.0.1:1/x", "nonsense://host", "env:NOPE", "env:bad-name"],
                "streams": ["alerts", "tweets"],
                "include": ["(unclosed", "(?<=look)behind"],
                "digest": "soon",
                "templates": {"alerts": {"title": "{oops", "colour": "red"}},
                "colour": "blue",
            },
            {"name": "ops", "urls": ["json://127.0.0.1:2/y"]},
            {"urls": []},
        ]
    )
    assert all("\n" not in p for p in problems)
    expected = [
        "sink 'ops': urls[1]: not a valid Apprise URL for nonsense://",
        "sink 'ops': urls[3]: 'env:bad-name': not an environment variable name",
        "sink 'ops': streams: 'tweets' is not a stream",
        "sink 'ops': include[0]: bad regex '(unclosed'",
        "sink 'ops': include[1]: bad regex '(?<=look)behind'",
        "sink 'ops': digest: 'soon' is not a duration",
        "sink 'ops': templates.alerts.title: bad template",
        "sink 'ops': templates.alerts.colour: unknown key",
        "sink 'ops': colour: unknown key",
        "sink 'ops': name: duplicate name",
        "sink 'notify[3]': name: missing",
        "sink 'notify[3]': urls: needs at least one Apprise URL",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)


def test_a_secret_is_never_printed_and_belongs_in_the_environment():
    written = f"slack://T1ABCDEFG/B2ABCDEFG/{SECRET}"
    problems = problems_of([{"name": "ops", "urls": [written, f"json://u:{SECRET}@h/x"]}])
    assert len(problems) == 2 and all("env:NAME" in p for p in problems)
    assert all(SECRET not in p for p in problems)
    bad_env = problems_of(
        [{"name": "ops", "urls": ["env:HOOK"]}], {"HOOK": f"nonsense://{SECRET}@x"}
    )
    assert bad_env == ["sink 'ops': urls[0]: env:HOOK: not a valid Apprise URL for nonsense://"]
    good: list[str] = []
    (sink,) = read_sinks(
        [{"name": "ops", "urls": ["env:HOOK"]}], good, {"HOOK": f"json://u:{SECRET}@h/x"}
    )
    assert good == [] and SECRET not in repr(sink)
    assert sink.destinations[0].label == "env:HOOK (JSON h)"
    assert sink.destinations[0].url() == f"json://u:{SECRET}@h/x"


def test_an_unset_variable_is_no_problem_where_nothing_is_sent():
    # only the delivery process needs the secret; `check` lists it (unset_variables)
    config = validate_config({"notify": [{"name": "ops", "urls": ["json://h/x", "env:NOPE"]}]})
    (sink,) = notify_config(config).sinks
    unset = sink.destinations[1]
    assert unset.unset and unset.url() == "" and unset.label == "env:NOPE (secret not set here)"
    assert unset_variables(config) == [
        "sink 'ops': urls[1]: environment variable NOPE is not set here (only the process "
        "that sends needs it)"
    ]


def test_one_variable_may_hold_several_urls_each_a_destination_with_a_stable_id():
    one, two, three = "json://127.0.0.1:1/a", "json://127.0.0.1:1/b", "form://10.0.0.2/c"

    def destinations(value: str) -> dict[str, tuple[str, str]]:
        problems: list[str] = []
        (sink,) = read_sinks([{"name": "ops", "urls": ["env:HOOKS"]}], problems, {"HOOKS": value})
        assert problems == []
        return {d.url(): (d.id, d.label) for d in sink.destinations}

    spaced = destinations(f"{one} {two}\n{three}")
    assert list(spaced) == [one, two, three]
    assert [label for _, label in spaced.values()] == [
        "env:HOOKS[1] (JSON 127.0.0.1:1)",
        "env:HOOKS[2] (JSON 127.0.0.1:1)",
        "env:HOOKS[3] (Form 10.0.0.2)",
    ]
    reordered = destinations(f"{three}, {one},{two}")  # commas, another order: same ids
    assert {url: ids[0] for url, ids in reordered.items()} == {
        url: ids[0] for url, ids in spaced.items()
    }
    assert len({i for i, _ in spaced.values()}) == 3
    # one URL: the variable's own id, as before (a secret can be rotated in place)
    (single,) = destinations(one).values()
    assert single[1] == "env:HOOKS (JSON 127.0.0.1:1)"
    problems: list[str] = []
    read_sinks([{"name": "ops", "urls": ["env:HOOKS"]}], problems, {"HOOKS": f"{one} nope://x"})
    assert problems == [
        "sink 'ops': urls[0]: env:HOOKS: URL 2 of 2: not a valid Apprise URL for nope://"
    ]


def test_labels_are_unique_within_a_sink():
    config = validate_config(
        {"notify": [{"name": "ops", "urls": ["json://h/a", "json://h/b", "json://h/c"]}]}
    )
    (sink,) = notify_config(config).sinks
    assert [d.label for d in sink.destinations] == ["JSON h", "JSON h #2", "JSON h #3"]


def test_check_fails_on_a_bad_sink():
    with pytest.raises(ConfigError) as info:
        validate_config({"notify": [{"name": "ops", "urls": ["json://h/x"], "include": ["("]}]})
    assert info.value.problems[0].startswith("sink 'ops': include[0]: bad regex '('")


def test_a_catastrophic_pattern_matches_in_linear_time():
    text = "a" * 200_000 + "!"
    assert compile_pattern("(a+)+$").search(text) is None
    assert compile_pattern("(x+x+)+y").search("x" * 200_000) is None


def test_filters_sources_tags_include_exclude():
    entry = {"source": "world", "title": "Flood in Lyon", "summary": "roads closed"}
    assert passes(entry, include=("(?i)flood",))
    assert not passes(entry, include=("(?i)flood",), exclude=("(?i)roads",))
    assert passes(entry, sources=("world",)) and not passes(entry, sources=("other",))
    assert passes(entry, tags=("news",), source_tags={"world": ("news",)})
    assert not passes(entry, tags=("news",), source_tags={"world": ("sport",)})
    listing = {"site": "watches", "fields": {"title": "Omega Seamaster"}}
    assert passes(listing, include=("Seamaster",), sources=("watches",))


def test_templates_render_nested_fields_and_count_missing_ones():
    context = context_for("changes", "1-0", {"site": "w", "change": "price_drop", "pct": "-12.04"})
    text, missing = render("{site}: {change_text} {pct:.1f}% {fields.title}{nope}", context)
    assert text == "w: price drop -12.0%"
    assert missing == ["fields.title", "nope"]


def test_a_change_renders_its_prices_without_a_percentage_between_currencies():
    from tasks.notify.templates import context_for, default_template, render

    body_of = default_template("changes").body
    drop = {"site": "s", "change": "price_drop", "old_price": "1000", "new_price": "900"}
    drop |= {"currency": "USD", "change_pct": "-10.0", "fields": {"title": "W", "link": "L"}}
    switch = {**drop, "change": "currency", "new_price": "900", "currency": "EUR"}
    switch |= {"old_currency": "USD", "change_pct": ""}
    assert "1000 → 900 USD (-10.0%)" in render(body_of, context_for("changes", "1-0", drop))[0]
    body = render(body_of, context_for("changes", "1-0", switch))[0]
    assert "1000 USD → 900 EUR" in body and "%" not in body
