"""The source registry: files own their sources and only those, writes are whole or nothing,
the cap holds, processes follow changes by reading only what changed, and the
``watchkeeper sources`` commands manage it with ``check``'s one-line problems."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import ROOT
from workers import cli
from workers.core.source_registry import ChangeTracker, Definition, SourceRegistry
from workers.core.sources_file import ConfigError, load_config
from workers.ops.sources.apply import apply_file
from workers.store.source_writes import RegistryError, write


def feed(name: str, url: str = "http://127.0.0.1:9/f", **extra: Any) -> str:
    lines = [f'[[feeds]]\nname = "{name}"\nurl = "{url}"']
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def sources(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``watchkeeper sources …`` in this process (the test's Redis, its settings)."""
    code = cli.main(["sources", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_add(rt: Any, name: str, url: str = "http://127.0.0.1:9/c") -> None:
    write(rt.redis, rt.settings, "cli", [Definition(name, "feed", "cli", {"url": url})])


# --- apply -----------------------------------------------------------------------------------


def test_apply_never_touches_another_owners_source_and_removes_only_its_own(
    runtime: Any, tmp_path: Path
) -> None:
    # Given a file with two feeds applied, and a feed added from the CLI
    rt = runtime.use_config(feed("a") + feed("b", interval="1m"))
    cli_add(rt, "mine")
    # When the file drops one feed and changes the other, and is applied again
    applied = apply_file(rt.redis, rt.settings, rt.config_path)
    assert applied.diff is not None and applied.diff.empty
    rt.config_path.write_text(feed("b", interval="2m"))
    applied = apply_file(rt.redis, rt.settings, rt.config_path)
    # Then the dropped feed leaves the registry, the changed one is rewritten, and the CLI's
    # feed is still there, still owned by the CLI
    assert applied.diff is not None
    assert [d.name for d in applied.diff.removed] == ["a"]
    assert [new.name for _, new in applied.diff.changed] == ["b"]
    assert rt.sources.get("a") is None
    assert rt.sources.get("b").interval == 120
    assert rt.sources.definition("mine").owner == "cli"
    assert '~ feed b: interval "1m" → "2m"' in "\n".join(applied.report())


def test_a_file_naming_another_owners_source_is_one_line_and_writes_nothing(
    runtime: Any,
) -> None:
    rt = runtime.use_config(feed("a"))
    cli_add(rt, "taken")
    rev = rt.sources.meta().rev
    rt.config_path.write_text(feed("a", interval="1h") + feed("taken"))
    with pytest.raises(RegistryError) as caught:
        apply_file(rt.redis, rt.settings, rt.config_path)
    assert caught.value.problems == [
        "source 'taken': name: already in the registry, owned by cli (remove it there first, "
        "or choose another name)"
    ]
    assert rt.sources.meta().rev == rev and rt.sources.get("a").interval == 300


def test_dry_run_shows_the_diff_and_writes_nothing(runtime: Any, capsys: Any) -> None:
    rt = runtime.use_config(feed("a"))
    rt.config_path.write_text(feed("a") + feed("new"))
    code, out, _ = sources(capsys, "apply", str(rt.config_path), "--dry-run")
    assert code == 0
    assert "1 to add, 0 to change, 0 to remove, 1 unchanged — dry run" in out
    assert "+ feed new" in out
    assert rt.sources.get("new") is None


def test_the_cap_refuses_a_write_whole(runtime: Any) -> None:
    # Given a registry capped at three sources holding one from the CLI
    runtime.settings = replace(runtime.settings, max_sources=3)
    cli_add(runtime, "c1")
    # When a file with three feeds is applied
    path = runtime.config_path.parent / "cap.toml"
    path.write_text(feed("f1") + feed("f2") + feed("f3"))
    with pytest.raises(RegistryError) as caught:
        apply_file(runtime.redis, runtime.settings, path)
    # Then it is one line and not one of them was written
    assert caught.value.problems == [
        "registry: 4 sources would pass WATCHKEEPER_MAX_SOURCES=3 (it holds 1); nothing was written"
    ]
    assert runtime.sources.meta().size == 1


def test_an_invalid_definition_is_refused_with_checks_wording(runtime: Any) -> None:
    bad = [
        Definition("ok", "feed", "cli", {"url": "https://example.org/f"}),
        Definition("js", "feed", "cli", {"url": "javascript:alert(1)"}),
        Definition("slow", "feed", "cli", {"url": "https://example.org/", "interval": "0s"}),
        Definition("odd", "feed", "cli", {"url": "https://example.org/", "colour": "red"}),
    ]
    with pytest.raises(RegistryError) as caught:
        write(runtime.redis, runtime.settings, "cli", bad)
    assert caught.value.problems == [
        "source 'js': url: 'javascript:alert(1)' is not an http(s) URL",
        "source 'slow': interval: '0s' is shorter than 1s",
        "source 'odd': colour: unknown key",
    ]
    assert runtime.sources.meta().size == 0


def test_the_bundled_example_is_never_applied(runtime: Any) -> None:
    from workers.core.sources_file import bundled_example

    with pytest.raises(ConfigError) as caught:
        apply_file(runtime.redis, runtime.settings, bundled_example())
    assert "is never applied to the source registry" in caught.value.problems[0]
    assert runtime.sources.meta().size == 0


def test_a_beat_leaves_alone_a_newer_copy_another_host_applied(runtime: Any) -> None:
    # Given a copy of the file applied from another machine, newer than this one's copy
    rt = runtime.use_config(feed("a") + feed("b"))
    key = "wk:sources:files"
    owner = f"file:{rt.config_path}"
    record = json.loads(rt.redis.hget(key, owner))
    rt.redis.hset(key, owner, json.dumps({**record, "host": "elsewhere", "mtime": 4e9}))
    rt.config_path.write_text(feed("a"))  # this machine's older copy lacks b
    # When this machine's beat applies its copy automatically
    applied = apply_file(rt.redis, rt.settings, rt.config_path, automatic=True)
    # Then the registry keeps the newer copy's sources, and one line says why
    assert applied.state == "stale" and "applied from elsewhere" in applied.report()[0]
    assert rt.sources.get("b") is not None
    # But an explicit apply applies this copy
    assert apply_file(rt.redis, rt.settings, rt.config_path).state == "applied"
    assert rt.sources.get("b") is None


# --- following the registry ------------------------------------------------------------------


def test_a_tracker_reads_only_what_changed_and_reloads_when_the_log_was_trimmed(
    runtime: Any,
) -> None:
    rt = runtime
    rt.settings = replace(rt.settings, sources_changes=3)
    write(
        rt.redis,
        rt.settings,
        "cli",
        [Definition(f"s{i}", "feed", "cli", {"url": "http://a/"}) for i in range(5)],
    )
    tracker = ChangeTracker(SourceRegistry(rt.redis, rt.settings))
    first = tracker.poll()
    assert first.full and sorted(first.changed) == [f"s{i}" for i in range(5)]
    # Nothing changed: nothing read but the revision
    assert not tracker.poll().full and tracker.poll().changed == {}
    # One source changed, one removed: exactly those two
    write(rt.redis, rt.settings, "cli", [Definition("s1", "feed", "cli", {"url": "http://b/"})])
    write(rt.redis, rt.settings, "cli", removes=["s2"])
    update = tracker.poll()
    assert not update.full and set(update.changed) == {"s1", "s2"}
    assert update.changed["s2"] is None and update.changed["s1"].table["url"] == "http://b/"
    # More changes than the log keeps: the tracker, now behind its floor, reloads everything
    for i in range(5):
        write(
            rt.redis, rt.settings, "cli", [Definition(f"n{i}", "feed", "cli", {"url": "http://c/"})]
        )
    assert rt.redis.zcard("wk:sources:log") == 3
    assert tracker.poll().full
    # And a registry Redis lost (a new epoch) is reloaded too
    rt.redis.delete("wk:sources", "wk:sources:meta", "wk:sources:log")
    write(
        rt.redis,
        rt.settings,
        "cli",
        [Definition("z", "feed", "cli", {"url": "http://d/"})],
        mode="",
    )
    reloaded = tracker.poll()
    assert reloaded.full and list(reloaded.changed) == ["z"]


def test_a_corrupt_definition_is_skipped_by_whoever_follows_the_registry(
    runtime: Any, caplog: Any
) -> None:
    rt = runtime
    write(rt.redis, rt.settings, "cli", [Definition("good", "feed", "cli", {"url": "http://a/"})])
    view = SourceRegistry(rt.redis, rt.settings).view()
    assert [s.name for s in view.sources()] == ["good"]
    # Given a change whose stored text is not a definition (written by hand, a bad restore)
    write(rt.redis, rt.settings, "cli", [Definition("bad", "feed", "cli", {"url": "http://b/"})])
    write(rt.redis, rt.settings, "cli", [Definition("odd", "feed", "cli", {"url": "http://c/"})])
    rt.redis.hset("wk:sources", "bad", "{not json")
    rt.redis.hset("wk:sources", "odd", '["a", "list"]')
    # When a process that follows the registry (beat, status) reads the changes
    update = view.tracker.registry.view()
    # Then the corrupt ones are skipped with a line each; the others are untouched
    assert [s.name for s in update.sources()] == ["good"]
    assert "'bad': unreadable definition in the registry" in caplog.text
    assert "'odd': unreadable definition in the registry" in caplog.text
    assert rt.sources.definition("bad") is None
    # And a whole reload skips them the same way
    assert [d.name for d in SourceRegistry(rt.redis, rt.settings).scan()] == ["good"]


# --- the CLI ---------------------------------------------------------------------------------


def test_add_list_show_edit_pause_remove(runtime: Any, capsys: Any) -> None:
    code, out, err = sources(
        capsys, "add", "feed", "world", "https://example.org/w.rss?token=s3cret", "--interval",
        "5m", "--tag", "news", "--set", "locate=false",
    )  # fmt: skip
    assert (code, err) == (0, "") and "added feed 'world' (owner cli)" in out
    source = runtime.sources.get("world")
    assert (source.interval, source.tags, source.locate) == (300.0, ("news",), False)
    code, out, _ = sources(capsys, "list", "--json")
    rows = json.loads(out)
    assert [(r["name"], r["owner"], r["tags"]) for r in rows] == [("world", "cli", ["news"])]
    assert "s3cret" not in out and "token=***" in out  # credentials never shown
    code, out, _ = sources(capsys, "show", "world")
    assert "owner cli" in out and "s3cret" not in out
    code, out, _ = sources(capsys, "edit", "world", "--interval", "10m", "--unset", "locate")
    assert code == 0 and 'interval "5m" → "10m"' in out
    assert runtime.sources.get("world").interval == 600 and runtime.sources.get("world").locate
    assert sources(capsys, "pause", "world")[0] == 0
    assert runtime.redis.hget("wk:src:world", "paused") == "1"
    assert json.loads(sources(capsys, "show", "world", "--json")[1])["paused"] is True
    assert sources(capsys, "resume", "world")[0] == 0
    assert runtime.redis.hget("wk:src:world", "paused") is None
    code, out, _ = sources(capsys, "remove", "world", "--json")
    assert code == 0 and json.loads(out)["removed"] == ["world"]
    assert runtime.sources.get("world") is None


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["add", "feed", "f", "ftp://e.org/"], "source 'f': url: 'ftp://e.org/' is not an http"),
        (["add", "feed", "f", "https://e.org/", "--interval", "soon"], "source 'f': interval:"),
        (["add", "feed", "bad name", "https://e.org/"], "source 'bad name': name: 'bad name'"),
        (["add", "gopher", "f", "https://e.org/"], "kind 'gopher': expected one of"),
        (["add", "site", "s", "https://e.org/"], "source 's': item: missing"),
        (["edit", "nope", "--interval", "1m"], "source 'nope': name: not in the registry"),
        (["pause", "nope"], "source 'nope': name: not in the registry"),
        (["remove", "nope"], "source 'nope': name: not in the registry"),
        (["apply", "/nonexistent.toml"], "config /nonexistent.toml: file not found"),
    ],
    ids=["url", "interval", "name", "kind", "site-fields", "edit", "pause", "remove", "apply"],
)  # fmt: skip
def test_each_mistake_is_one_line_exit_2_and_writes_nothing(
    runtime: Any, capsys: Any, argv: list[str], line: str
) -> None:
    code, out, err = sources(capsys, *argv)
    assert code == 2 and out == ""
    assert line in err.splitlines()[0], err
    assert runtime.sources.meta().size == 0


def test_a_file_owned_source_is_changed_in_its_file_not_from_the_cli(
    runtime: Any, capsys: Any
) -> None:
    rt = runtime.use_config(feed("a"))
    for argv in (["edit", "a", "--interval", "1m"], ["remove", "a"]):
        code, _, err = sources(capsys, *argv)
        assert code == 2 and f"owner: file:{rt.config_path}" in err
    assert sources(capsys, "add", "feed", "a", "https://e.org/")[2].startswith(
        f"source 'a': name: already in the registry, owned by file:{rt.config_path}"
    )
    # Pausing is state, not definition: any owner's source can be paused
    assert sources(capsys, "pause", "a")[0] == 0
    # And a file that is gone releases its sources with remove --owner
    code, out, _ = sources(capsys, "remove", "--owner", f"file:{rt.config_path}")
    assert code == 0 and "removed 1 sources: a" in out and rt.sources.get("a") is None


def test_export_prints_toml_the_file_takes_back(runtime: Any, capsys: Any, tmp_path: Path) -> None:
    # Given sources of every kind, with values TOML must escape, from a file and the CLI
    rt = runtime.use_config(
        feed("a", tags=["x", 'q"uote'], title="Café\tß 🔥", locate=False)
        + '[[http_logs]]\nname = "l"\nurl = "http://127.0.0.1:9/l"\nformat = "lines"\n'
        + '[[sites]]\nname = "s"\nurl = "http://127.0.0.1:9/s"\nitem = "div"\nid = "ref"\n'
        + 'max_pages = 2\n[sites.fields]\nref = ".ref"\n"odd key" = "a@href"\n'
    )
    cli_add(rt, "c")
    code, out, _ = sources(capsys, "export")
    assert code == 0
    # When the export is read as a sources file
    exported = tmp_path / "exported.toml"
    exported.write_text(out)
    config = load_config(exported)
    # Then it holds the same sources, field for field
    assert sorted(s.name for s in config.sources) == ["a", "c", "l", "s"]
    for source in config.sources:
        assert source == rt.sources.get(source.name)
    assert tomllib.loads(out)["sites"][0]["fields"] == {"ref": ".ref", "odd key": "a@href"}


def test_the_sources_command_exits_2_with_one_line_as_a_process(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": redis_url,
        "WATCHKEEPER_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "sources", "add", "feed", "f", "javascript:x"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == "source 'f': url: 'javascript:x' is not an http(s) URL\n"


def test_status_and_metrics_report_the_registry_against_its_cap(runtime: Any) -> None:
    from workers.core.prometheus import Families, translate
    from workers.ops.sources.status import SECTION
    from workers.ops.status import collect_status

    rt = runtime.use_config(feed("a") + feed("b"))
    cli_add(rt, "c")
    section = collect_status(rt)["registry"]
    assert (section["size"], section["cap"], section["owners_count"]) == (3, 100000, 2)
    assert section["owners"] == {"cli": 1, f"file:{rt.config_path}": 2}
    assert section["revision"] == rt.sources.meta().rev == 2
    assert section["change_log"] == {"size": 3, "cap": 10000, "floor": 0}
    assert collect_status(rt)["sources"]["c"]["owner"] == "cli"
    families = Families()
    translate(families, section, SECTION.metrics)
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in families.families.values()
        for s in family.samples
    }
    assert samples[("watchkeeper_registry_sources", ())] == 3
    assert samples[("watchkeeper_registry_sources_cap", ())] == 100000
    assert samples[("watchkeeper_registry_sources_by_owner", (("owner", "cli"),))] == 1


def test_a_machine_without_a_sources_file_never_judges_other_machines_sinks_gone(
    runtime: Any,
) -> None:
    # Given a sink's outbox written by a machine whose file configures the sink
    from tasks.notify.cleanup import notify_cleanup

    runtime.redis.hset("wk:notify:ops:outbox", "m1", "{}")
    # When a worker on a machine without any sources file runs the cleanup step
    runtime.config_path = None
    runtime._config = None
    result = notify_cleanup(runtime)
    # Then it knows no sinks, so it removes none of theirs
    assert result == {"skipped": "no sources file on this machine"}
    assert runtime.redis.hexists("wk:notify:ops:outbox", "m1")
