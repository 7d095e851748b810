"""``watchkeeper sources``: the source registry from the command line.

    watchkeeper sources list [--kind K] [--owner O] [--tag T]
    watchkeeper sources show NAME
    watchkeeper sources add KIND NAME [URL] [--interval I] [--tag T]… [--set KEY=VALUE]…
                                           [--from-toml FILE] [--dry-run]
    watchkeeper sources edit NAME [--url U] [--interval I] [--tag T]… [--set KEY=VALUE]…
                                  [--unset KEY]… [--from-toml FILE] [--dry-run]
    watchkeeper sources remove NAME… | --owner OWNER [--dry-run]
    watchkeeper sources pause NAME… / resume NAME…
    watchkeeper sources export [NAME…] [--kind K] [--owner O]       TOML the sources file takes
    watchkeeper sources apply FILE [--dry-run]
    watchkeeper sources import-opml FILE [--interval I] [--dry-run]
    watchkeeper sources export-opml [--owner O] [--tag T] [--title T]

Every command takes ``--json``. A problem is one line per problem, worded as ``check`` words
it (``source 'x': url: … is not an http(s) URL``), exit status 2, and nothing written. Sources
added here are owned by ``cli``; a source a sources file owns is changed in that file (``edit``
and ``remove`` refuse it), pausing works for any.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workers.core.connection import get_client
from workers.core.redact import redact_text
from workers.core.request_profile import profile_of
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.core.source_env import env_policy
from workers.core.source_registry import Definition
from workers.core.sources_file import KIND_SECTIONS, ConfigError
from workers.core.text import table
from workers.ops.sources.apply import Diff, apply_file, changes, execute, release
from workers.ops.sources.imports import import_parsed
from workers.ops.sources.opml import OpmlError, export_opml, import_file
from workers.ops.sources.toml_out import sources_toml
from workers.polling.pause import set_paused
from workers.store.source_writes import RegistryError, write

CLI_OWNER = "cli"
STATE_SHOWN = ("last_status", "last_poll", "last_ok", "errors", "last_error", "next_check")

Run = Callable[[argparse.Namespace, Runtime], int]


def fail(line: str) -> ConfigError:
    """A one-line problem (printed as is, exit 2)."""
    return ConfigError("", [line])


def registry_runtime() -> Runtime:
    """The registry needs Redis and the settings, never this machine's sources file."""
    settings = Settings.from_env()
    return Runtime(settings, get_client(settings), None)


def add_sources_command(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sources",
        help="list, add, edit, remove, pause sources; apply a file; OPML import/export",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="sources_action", required=True, metavar="ACTION")

    def action(name: str, run: Run, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="JSON output")
        p.set_defaults(func=lambda args: run(args, registry_runtime()))
        return p

    p = action("list", cmd_list, "the sources of the registry, one a line")
    p.add_argument("--kind")
    p.add_argument("--owner", help="file:<path>, cli, opml or api")
    p.add_argument("--tag")
    p = action("show", cmd_show, "one source: its definition, owner and state")
    p.add_argument("name")
    p = action("add", cmd_add, "add a source (owned by cli)")
    p.add_argument("kind", help=f"a kind: {', '.join(sorted(KIND_SECTIONS.names()))}")
    p.add_argument("name")
    p.add_argument("url", nargs="?")
    _field_options(p)
    p = action("edit", cmd_edit, "change a source added by the cli, an OPML import or the API")
    p.add_argument("name")
    p.add_argument("--url")
    p.add_argument("--unset", action="append", default=[], metavar="KEY")
    _field_options(p)
    p = action("remove", cmd_remove, "remove sources (not those a sources file owns)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--owner", help="remove every source of this owner (a file that is gone)")
    p.add_argument("--dry-run", action="store_true")
    for name, help in (("pause", "pause sources (scheduled polls skip them)"), ("resume", "")):
        p = action(name, cmd_pause, help or "resume paused sources (due at once)")
        p.add_argument("names", nargs="+", metavar="NAME")
    p = action("export", cmd_export, "print sources as TOML the sources file takes")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--kind")
    p.add_argument("--owner")
    p = action("apply", cmd_apply, "make the registry match a sources file for its sources")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    p = action("import-opml", cmd_import_opml, "import the feeds of an OPML file (owned by opml)")
    p.add_argument("file", help="an OPML file, or - for standard input")
    p.add_argument("--interval", help="every imported feed's interval (default: the feed's)")
    p.add_argument("--dry-run", action="store_true")
    p = action(
        "export-opml",
        cmd_export_opml,
        "print the feeds as OPML 2.0 (Miniflux's form), URLs as they are: credentials in a "
        "feed's URL (user:password@, ?token=) included (the dashboard's and the API's exports "
        "mask them)",
    )
    p.add_argument("--owner")
    p.add_argument("--tag")
    p.add_argument("--title", default="watchkeeper", help="the OPML head's title")
    return parser


def _field_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", help='seconds, or "30s", "5m", "1h"')
    p.add_argument("--tag", action="append", default=[], help="a tag (repeat for more)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any field; VALUE is read as TOML (true, 3, [1, 2], {a = 1}), else as text",
    )
    p.add_argument("--from-toml", metavar="FILE", help="the source's keys as TOML (- : stdin)")
    p.add_argument("--dry-run", action="store_true")


# --- helpers ---------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, lines: Iterable[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        for line in lines:
            print(line)


def masked(value: Any) -> Any:
    """A table with credentials in its strings masked (what list, show and diffs display)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


def kind_name(text: str) -> str:
    if text in KIND_SECTIONS:
        return text
    for kind in KIND_SECTIONS.names():
        if KIND_SECTIONS[kind] == text:
            return kind
    known = ", ".join(sorted(KIND_SECTIONS.names()))
    raise fail(f"kind {text!r}: expected one of {known}")


def toml_value(key: str, text: str) -> Any:
    """``--set`` values: TOML when they parse as a TOML value, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def read_toml_table(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return dict(tomllib.loads(text))
    except OSError as exc:
        raise fail(f"config {path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"config {path}: invalid TOML: {exc}") from None


def apply_fields(table: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out = dict(table)
    if getattr(args, "from_toml", None):
        out = read_toml_table(args.from_toml)
        out.pop("name", None)
    if getattr(args, "url", None):
        out["url"] = args.url
    if args.interval:
        out["interval"] = args.interval
    if args.tag:
        out["tags"] = list(args.tag)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = toml_value(key, value)
    for key in getattr(args, "unset", []):
        out.pop(key, None)
    return out


def definition_of(rt: Runtime, name: str) -> Definition:
    found = rt.sources.definition(name)
    if found is None:
        raise fail(f"source '{name}': name: not in the registry")
    return found


def not_file_owned(d: Definition, what: str) -> None:
    if d.owner.startswith("file:"):
        raise fail(
            f"source '{d.name}': owner: {d.owner} — {what} it in that file and run "
            f"`watchkeeper sources apply {d.owner[5:]}`"
        )


def row(d: Definition, paused: bool = False) -> dict[str, Any]:
    return {
        "name": d.name,
        "kind": d.kind,
        "owner": d.owner,
        "url": redact_text(str(d.table.get("url", ""))),
        "interval": d.table.get("interval"),
        "tags": d.table.get("tags", []),
        "paused": paused,
    }


def paused_of(rt: Runtime, names: list[str]) -> list[bool]:
    from workers.core import keys

    pipe = rt.redis.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.SOURCE_STATE.key(rt.settings, name), "paused")
    return [value == "1" for value in pipe.execute()]


def selected(
    rt: Runtime, kind: str | None = None, owner: str | None = None, tag: str | None = None
) -> list[Definition]:
    if owner:
        held = rt.sources.definitions(sorted(rt.sources.names_of(owner)))
        found: Iterable[Definition] = [d for d in held.values() if d is not None]
    else:
        found = rt.sources.scan()
    wanted_kind = kind_name(kind) if kind else None
    return sorted(
        (
            d
            for d in found
            if (wanted_kind is None or d.kind == wanted_kind)
            and (tag is None or tag in (d.table.get("tags") or []))
        ),
        key=lambda d: d.name,
    )


# --- commands --------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, rt: Runtime) -> int:
    found = selected(rt, args.kind, args.owner, args.tag)
    rows = [row(d, p) for d, p in zip(found, paused_of(rt, [d.name for d in found]), strict=True)]
    lines = table(
        ["source", "kind", "owner", "interval", "tags", "url"],
        [
            [
                r["name"] + (" (paused)" if r["paused"] else ""),
                r["kind"],
                r["owner"],
                r["interval"] or "default",
                ",".join(r["tags"]),
                r["url"],
            ]
            for r in rows
        ],
    )
    emit(args, rows, lines)
    return 0


def cmd_show(args: argparse.Namespace, rt: Runtime) -> int:
    from workers.core import keys

    d = definition_of(rt, args.name)
    state = rt.redis.hgetall(keys.SOURCE_STATE.key(rt.settings, d.name))
    data = {
        "name": d.name,
        "kind": d.kind,
        "section": d.section,
        "owner": d.owner,
        "table": masked(d.table),
        "paused": state.get("paused") == "1",
        "state": {
            k: state[k] for k in ("last_status", "last_poll", "errors", "last_error") if k in state
        },
    }
    lines = [f"{d.name}: {d.kind} ([[{d.section}]]), owner {d.owner}"]
    lines += [f"  {k} = {json.dumps(v, ensure_ascii=False)}" for k, v in masked(d.table).items()]
    lines.append(f"  paused: {'yes' if data['paused'] else 'no'}")
    lines += [f"  {k}: {v}" for k, v in data["state"].items()]
    emit(args, data, lines)
    return 0


def env_checked(rt: Runtime, d: Definition) -> None:
    """Refuse a definition whose profile names a variable no source may read (``source_env``)."""
    problems = env_policy(rt).problems(d.name, profile_of(d.table))
    if problems:
        raise ConfigError("", problems)


def cmd_add(args: argparse.Namespace, rt: Runtime) -> int:
    fields = apply_fields({}, args)
    d = Definition(args.name, kind_name(args.kind), CLI_OWNER, fields)
    env_checked(rt, d)
    if args.dry_run:
        from workers.store.source_writes import validate

        problems = validate(rt.settings, [d])
        if problems:
            raise ConfigError("", problems)
        emit(args, {"added": d.name, "dry_run": True}, [f"would add {d.kind} '{d.name}'"])
        return 0
    written = write(rt.redis, rt.settings, CLI_OWNER, [d], mode="new")
    emit(
        args,
        {"added": d.name, "owner": CLI_OWNER, "revision": written.rev},
        [f"added {d.kind} '{d.name}' (owner {CLI_OWNER}), registry revision {written.rev}"],
    )
    return 0


def cmd_edit(args: argparse.Namespace, rt: Runtime) -> int:
    old = definition_of(rt, args.name)
    not_file_owned(old, "edit")
    new = Definition(old.name, old.kind, old.owner, apply_fields(old.table, args))
    if new.encode() == old.encode():
        emit(args, {"changed": None}, [f"{old.name}: unchanged"])
        return 0
    what = changes(old, new)
    env_checked(rt, new)
    if args.dry_run:
        from workers.store.source_writes import validate

        problems = validate(rt.settings, [new])
        if problems:
            raise ConfigError("", problems)
        emit(args, {"changed": new.name, "dry_run": True}, [f"would change {new.name}: {what}"])
        return 0
    written = write(rt.redis, rt.settings, old.owner, [new], mode="owned")
    emit(
        args,
        {"changed": new.name, "revision": written.rev},
        [f"changed {new.name}: {what}; registry revision {written.rev}"],
    )
    return 0


def cmd_remove(args: argparse.Namespace, rt: Runtime) -> int:
    if args.owner and args.names:
        raise fail("remove: name sources or --owner, not both")
    if args.owner:
        result, written = release(rt.redis, rt.settings, args.owner, dry_run=args.dry_run)
        return _report_removal(args, [result], [written] if written else [])
    if not args.names:
        raise fail("remove: name at least one source (or --owner OWNER)")
    found = rt.sources.definitions(args.names)
    missing = [f"source '{n}': name: not in the registry" for n, d in found.items() if d is None]
    if missing:
        raise ConfigError("", missing)
    by_owner: dict[str, Diff] = {}
    for d in found.values():
        assert d is not None
        not_file_owned(d, "remove")
        by_owner.setdefault(d.owner, Diff(d.owner)).removed.append(d)
    diffs = list(by_owner.values())
    writes = [] if args.dry_run else [execute(rt.redis, rt.settings, r) for r in diffs]
    return _report_removal(args, diffs, writes)


def _report_removal(args: argparse.Namespace, diffs: list[Diff], writes: list[Any]) -> int:
    names = [d.name for r in diffs for d in r.removed]
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {len(names)} sources" + (f": {', '.join(names[:20])}" if names else "")]
    if len(names) > 20:
        lines[0] += f" and {len(names) - 20} more"
    data = {"removed": names, "dry_run": bool(args.dry_run)}
    if writes:
        data["revision"] = max(w.rev for w in writes)
    emit(args, data, lines)
    return 0


def cmd_pause(args: argparse.Namespace, rt: Runtime) -> int:
    paused = args.sources_action == "pause"
    found = rt.sources.get_many(args.names)
    missing = [f"source '{n}': name: not in the registry" for n, s in found.items() if s is None]
    if missing:
        raise ConfigError("", missing)
    for source in found.values():
        assert source is not None
        set_paused(rt.redis, rt.settings, source, paused)
    verb = "paused" if paused else "resumed"
    emit(args, {verb: list(found)}, [f"{verb} {', '.join(found)}"])
    return 0


def cmd_export(args: argparse.Namespace, rt: Runtime) -> int:
    if args.names:
        found = rt.sources.definitions(args.names)
        missing = [
            f"source '{n}': name: not in the registry" for n, d in found.items() if d is None
        ]
        if missing:
            raise ConfigError("", missing)
        chosen = [d for d in found.values() if d is not None]
    else:
        chosen = selected(rt, args.kind, args.owner)
    if args.json:
        print(json.dumps([{**d.file_table(), "kind": d.kind, "owner": d.owner} for d in chosen]))
        return 0
    rev = rt.sources.meta().rev
    header = f"{len(chosen)} sources exported from the source registry (revision {rev})"
    sys.stdout.write(sources_toml(chosen, header))
    return 0


def cmd_apply(args: argparse.Namespace, rt: Runtime) -> int:
    applied = apply_file(rt.redis, rt.settings, Path(args.file), dry_run=args.dry_run)
    emit(args, applied.as_json(), applied.report())
    return 0


def cmd_import_opml(args: argparse.Namespace, rt: Runtime) -> int:
    try:
        parsed = import_file(args.file, rt.settings)
    except OpmlError as exc:
        raise fail(str(exc)) from None
    imported = import_parsed(rt, parsed, args.file, args.interval, bool(args.dry_run))
    emit(args, imported.as_json(), [imported.head(), *imported.diff.lines()])
    return 0


def cmd_export_opml(args: argparse.Namespace, rt: Runtime) -> int:
    feeds = selected(rt, "feed", args.owner, args.tag)
    text = export_opml(feeds, title=args.title)
    if args.json:
        print(json.dumps({"feeds": len(feeds), "opml": text}))
    else:
        sys.stdout.write(text)
    return 0


__all__ = ["RegistryError", "add_sources_command"]
