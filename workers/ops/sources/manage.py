"""Managing one source from the REST API and the dashboard: create, change, remove, pause,
check now — and how a source is shown there.

The same rules as ``watchkeeper sources`` (whose helpers this reuses): every definition goes
through the kind's reader (the same one-line problems as ``check``), a source a sources file
owns is changed in that file (``Refused`` 409 with the CLI's line), sources created here are
owned by ``api``. A refusal carries the HTTP status that fits it: 400 a problem of the
definition, 404 no such source, 409 a conflict with what the registry holds.

Shown: the table with the request profile replaced by its names (``RequestProfile.summary``:
header and cookie names, ``env:NAME`` of credentials — never a value) and URLs with their
credentials masked; the source's state as ``status`` shows it (errors already masked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.core import keys
from workers.core.dead_letters import Dispatch
from workers.core.redact import redact_url
from workers.core.request_profile import profile_of
from workers.core.runtime import Runtime
from workers.core.source_env import env_policy
from workers.core.source_registry import Definition
from workers.core.source_schema import REQUEST_FIELDS
from workers.core.sources_file import ConfigError, Source
from workers.ops.sources.commands import kind_name, not_file_owned
from workers.polling.dispatch import CHECK_OUTCOMES, check_now, source_entry
from workers.polling.kinds import KINDS
from workers.polling.pause import set_paused
from workers.polling.state import as_float
from workers.store.source_writes import RegistryError, Written, validate, write

API_OWNER = "api"
STATE_SHOWN = (
    "last_status",
    "last_poll",
    "last_ok",
    "errors",
    "last_error",
    "last_warning",
    "next_check",
    "next_check_reason",
)
HEALTH = ("paused", "new", "ok", "backing off", "failing")


class Refused(Exception):
    """A request refused: its HTTP status and one line per problem."""

    def __init__(self, status: int, problems: list[str]) -> None:
        self.status, self.problems = status, problems
        super().__init__("\n".join(problems))


def refused(status: int, exc: ConfigError) -> Refused:
    return Refused(status, list(exc.problems) or [str(exc)])


# --- showing ---------------------------------------------------------------------------------


def health(state: Mapping[str, str], failing_after: int) -> str:
    """The health word the dashboard shows: paused, new, ok, backing off, failing."""
    if state.get("paused") == "1":
        return "paused"
    if not state.get("last_poll"):
        return "new"
    errors = int(as_float(state.get("errors")))
    if errors == 0:
        return "ok"
    return "failing" if errors >= failing_after else "backing off"


def shown_fields(table: Mapping[str, Any]) -> dict[str, Any]:
    """The table without its request profile, URLs masked."""
    out = {}
    for key, value in table.items():
        if key in REQUEST_FIELDS:
            continue
        out[key] = (
            redact_url(value) if key in ("url", "site_url") and isinstance(value, str) else value
        )
    return out


def describe(d: Definition, state: Mapping[str, str], failing_after: int) -> dict[str, Any]:
    """One source as the API returns it (and the dashboard shows it)."""
    shown_state: dict[str, Any] = {k: state[k] for k in STATE_SHOWN if state.get(k)}
    for number in ("last_poll", "last_ok", "next_check"):
        if number in shown_state:
            shown_state[number] = as_float(shown_state[number])
    if "errors" in shown_state:
        shown_state["errors"] = int(as_float(shown_state["errors"]))
    return {
        "name": d.name,
        "kind": d.kind,
        "owner": d.owner,
        "paused": state.get("paused") == "1",
        "health": health(state, failing_after),
        "fields": shown_fields(d.table),
        "request": profile_of(d.table).summary(),
        "state": shown_state,
    }


def states(rt: Runtime, names: list[str]) -> list[dict[str, str]]:
    """The state hash of each source, one pipeline."""
    pipe = rt.redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.SOURCE_STATE.key(rt.settings, name))
    return [dict(s) for s in pipe.execute()]


def shown(rt: Runtime, d: Definition) -> dict[str, Any]:
    return describe(d, states(rt, [d.name])[0], rt.settings.notify_after_errors)


# --- changing --------------------------------------------------------------------------------


def definition_of(rt: Runtime, name: str) -> Definition:
    found = rt.sources.definition(name)
    if found is None:
        raise Refused(404, [f"source '{name}': name: not in the registry"])
    return found


def editable(d: Definition, what: str) -> None:
    """A source a sources file owns is changed there (409, the CLI's line)."""
    try:
        not_file_owned(d, what)
    except ConfigError as exc:
        raise refused(409, exc) from None


def checked(rt: Runtime, d: Definition) -> None:
    """The definition's problems as ``check`` words them, and every environment variable its
    profile names that no source may read here (``source_env``): 400."""
    problems = validate(rt.settings, [d])
    if not problems:
        problems = env_policy(rt).problems(d.name, profile_of(d.table))
    if problems:
        raise Refused(400, problems)


def _write(
    rt: Runtime,
    owner: str,
    puts: list[Definition],
    removes: list[str],
    mode: str,
    expect: str = "",
) -> Written:
    try:
        return write(rt.redis, rt.settings, owner, puts, removes, mode=mode, expect=expect)
    except RegistryError as exc:  # what the registry refused: a name taken, the cap, a race
        missing = all(p.endswith(": name: not in the registry") for p in exc.problems)
        raise refused(404 if missing else 409, exc) from None


def expected(d: Definition, tag: str, if_match: str | None) -> None:
    """An ``If-Match`` (the ``ETag`` the client read, or a form's version) that is no longer
    ``d``'s version ``tag``: 412, nothing written — the client edits what someone else already
    changed."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = {t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")}
    if tag not in tags:
        raise Refused(
            412,
            [
                f"source '{d.name}': changed since you read it (its version is now "
                f"{tag[:12]}); read it again and repeat the change"
            ],
        )


def create(
    rt: Runtime, kind: str, table: Mapping[str, Any], owner: str = API_OWNER
) -> tuple[Definition, Written]:
    """A new source (its name must be free): ``table`` as the sources file holds it, ``name``
    included."""
    try:
        kind = kind_name(kind)
    except ConfigError as exc:
        raise refused(400, exc) from None
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise Refused(400, [f"source '{name or '?'}': name: missing"])
    d = Definition(name, kind, owner, {k: v for k, v in table.items() if k != "name"})
    checked(rt, d)
    existing = rt.sources.definition(name)
    if existing is not None:
        raise Refused(
            409, [f"source '{name}': name: already in the registry (owner {existing.owner})"]
        )
    return d, _write(rt, owner, [d], [], "new")


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: a member null removes, an object merges into an object, anything else
    replaces. So one header is changed without knowing (or sending) the others."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def change(
    rt: Runtime,
    name: str,
    table: dict[str, Any],
    if_match: str | None = None,
    read: Definition | None = None,
) -> tuple[Definition, Written | None]:
    """Give source ``name`` this table (without ``name``); its owner and kind stay. Written
    only over the version read (``read``, else read here) — a concurrent edit is a 409, never
    silently undone — and, with ``if_match``, only over that version (412)."""
    old = read or definition_of(rt, name)
    tag = rt.sources.version(old)
    expected(old, tag, if_match)
    editable(old, "edit")
    new = Definition(old.name, old.kind, old.owner, table)
    if new.encode() == old.encode():
        return old, None
    checked(rt, new)
    return new, _write(rt, old.owner, [new], [], "owned", expect=tag)


def patch(
    rt: Runtime, name: str, changes: Mapping[str, Any], if_match: str | None = None
) -> tuple[Definition, Written | None]:
    """Apply a JSON merge patch to source ``name``'s table; ``name`` and ``kind`` stay. The
    patch applies to the version read here: another edit between read and write is a 409."""
    old = definition_of(rt, name)
    fixed = [
        f"source '{name}': {key}: cannot be changed (remove the source and add it again)"
        for key in ("name", "kind")
        if key in changes and changes[key] != (name if key == "name" else old.kind)
    ]
    if fixed:
        raise Refused(400, fixed)
    rest = {k: v for k, v in changes.items() if k not in ("name", "kind")}
    return change(rt, name, merge_patch(old.table, rest), if_match, read=old)


def remove(rt: Runtime, name: str, if_match: str | None = None) -> Written:
    d = definition_of(rt, name)
    tag = rt.sources.version(d) if if_match else ""
    expected(d, tag, if_match)
    editable(d, "remove")
    return _write(rt, d.owner, [], [name], "owned", expect=tag)


def source_of(rt: Runtime, name: str) -> Source:
    definition_of(rt, name)
    source = rt.sources.get(name)
    if source is None:
        raise Refused(409, [f"source '{name}': cannot be read here (see the log)"])
    return source


def pause(rt: Runtime, name: str, paused: bool) -> Source:
    """Pause or resume a source, whoever owns it (as ``sources pause`` does)."""
    source = source_of(rt, name)
    set_paused(rt.redis, rt.settings, source, paused)
    return source


@dataclass(frozen=True)
class Checked:
    outcome: str
    """One of ``CHECK_OUTCOMES``."""
    line: str

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "skipped_queue_full")


def check(rt: Runtime, source: Source, dispatch: Dispatch, queue: str) -> Checked:
    """Check now: one forced poll, through beat's queued marker and queue cap."""
    s = rt.settings
    entry = source_entry(s, source, KINDS[source.kind].task)
    outcome = check_now(rt.redis, s, queue, entry, dispatch)
    return Checked(outcome, f"{source.name}: check now: {CHECK_OUTCOMES[outcome]}")
