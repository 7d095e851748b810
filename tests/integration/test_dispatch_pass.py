"""One dispatch pass, called as a plain function against the real Redis: what it sends, what
it skips, and what a failed send leaves behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from beat_schedule import schedule_entries
from workers.ops.status import collect_status
from workers.polling.dispatch import Entry, dispatch_pass, due_entries, hold_lock, release_lock
from workers.polling.pause import set_paused
from workers.polling.state import queue_save
from workers.store.scripts import execute

QUEUE = "wk-test-dispatch-queue"


def sources(*names: str, interval: str = "1h") -> str:
    return "".join(
        f'[[http_logs]]\nname = "{n}"\nurl = "http://127.0.0.1:9/{n}"\ninterval = "{interval}"\n'
        for n in names
    )


def run_pass(rt: Any, fail: tuple[str, ...] = (), full: bool = True, holder: str = "") -> list[str]:
    """One pass over the log sources: a full one, or one over what the due set says is due
    (as beat makes between full passes). The entries sent."""
    sent: list[str] = []

    def send(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
        if any(entry.name in fail for entry in batch):
            raise ConnectionError("broker went away")
        sent.extend(entry.name for entry in batch)

    every = schedule_entries(rt.settings, rt.sources.view().sources())
    entries = [e for e in every if e.name.startswith("http")]
    if not full:
        due = set(due_entries(rt.redis, rt.settings) or ())
        entries = [e for e in entries if e.name in due]
    dispatch_pass(rt.redis, rt.settings, QUEUE, entries, send, full, holder)
    return sorted(sent)


def test_a_failed_send_leaves_no_marker_so_the_next_pass_retries_it(runtime: Any) -> None:
    rt = runtime.use_config(sources("ok", "lost"))
    # When the broker refuses one message
    assert run_pass(rt, fail=("http_log:lost",)) == ["http_log:ok"]
    # Then only the sent one is marked queued, with the full age bound
    assert rt.redis.exists("wk:queued:http_log:lost") == 0
    assert rt.redis.ttl("wk:queued:http_log:ok") > 60
    # And the next pass sends the lost one, not the queued one again
    assert run_pass(rt) == ["http_log:lost"]
    assert run_pass(rt) == []
    stats = rt.redis.hgetall("wk:beat:stats")
    assert (stats["dispatched"], stats["skipped_queued"]) == ("3", "3")


def test_a_backing_off_source_waits_for_its_next_check_and_a_changed_one_does_not(
    runtime: Any,
) -> None:
    rt = runtime.use_config(sources("s"))
    assert run_pass(rt) == ["http_log:s"]
    rt.redis.delete("wk:queued:http_log:s")  # the poll started
    # Given the poll failed and backs off for ten minutes (next_check in Redis)
    now = float(rt.redis.time()[0])
    rt.redis.hset("wk:src:s", "next_check", now + 600)
    # Then the source is not dispatched while it waits
    assert run_pass(rt) == []
    # When its definition changes (a fixed URL), Then it is dispatched at once
    rt = runtime.use_config(sources("s").replace(":9/s", ":9/fixed"))
    assert run_pass(rt) == ["http_log:s"]
    assert float(rt.redis.hget("wk:src:s", "next_check") or 0) <= now + 5


def test_only_one_beat_holds_the_dispatch_lock_until_it_lets_go(runtime: Any) -> None:
    settings = replace(runtime.settings, beat_lock_ttl=10)
    assert hold_lock(runtime.redis, settings, "a") == (True, "a")
    assert hold_lock(runtime.redis, settings, "b") == (False, "a")
    assert hold_lock(runtime.redis, settings, "a") == (True, "a")
    release_lock(runtime.redis, settings, "b")  # not b's to release
    assert hold_lock(runtime.redis, settings, "b") == (False, "a")
    release_lock(runtime.redis, settings, "a")
    assert hold_lock(runtime.redis, settings, "b") == (True, "b")


def test_between_full_passes_a_pass_reads_only_what_the_due_set_says_is_due(
    runtime: Any,
) -> None:
    rt = runtime.use_config(sources("a", "b", "c", "gone"))
    due = "wk:beat:due"
    # Given a full pass that dispatched four new hourly sources
    assert run_pass(rt) == ["http_log:a", "http_log:b", "http_log:c", "http_log:gone"]
    # Then none is due until its marker (and message) would expire: an idle pass reads nothing
    assert due_entries(rt.redis, rt.settings) == []
    assert run_pass(rt, full=False) == []
    assert rt.redis.ttl(due) > 0 and rt.redis.zcard(due) == 4
    # When polls store their next due times (a, in the past: its backoff is over; b, in an hour)
    for name, due_in in (("a", -1.0), ("b", 3600.0)):
        source = rt.sources.get(name)
        pipe = rt.redis.pipeline(transaction=False)
        queue_save(pipe, rt.settings, source, {"last_status": "ok"}, due_in)
        execute(pipe)  # as the poll's write does (loading the script when Redis lacks it)
        rt.redis.delete(f"wk:queued:http_log:{name}")
    # Then only a is read and dispatched by the next pass
    assert due_entries(rt.redis, rt.settings) == ["http_log:a"]
    assert run_pass(rt, full=False) == ["http_log:a"]
    # When a paused source is resumed, Then it is due at once
    c = rt.sources.get("c")
    set_paused(rt.redis, rt.settings, c, True)
    rt.redis.delete("wk:queued:http_log:c")
    set_paused(rt.redis, rt.settings, c, False)
    assert run_pass(rt, full=False) == ["http_log:c"]
    # When a send fails, Then the entry is due again at the next pass
    rt.redis.delete("wk:queued:http_log:b")
    rt.redis.hset("wk:src:b", "next_check", 0)  # due now
    rt.redis.zadd(due, {"http_log:b": 0})
    assert run_pass(rt, fail=("http_log:b",), full=False) == []
    assert run_pass(rt, full=False) == ["http_log:b"]
    # When Redis loses the due set, Then beat is told only a full pass knows what is due
    rt.redis.delete(due)
    assert due_entries(rt.redis, rt.settings) is None
    run_pass(rt)
    assert rt.redis.zcard(due) == 4
    # When a source leaves the sources file, Then the next full pass drops it from the due set
    rt = runtime.use_config(sources("a", "b", "c"))
    run_pass(rt)
    assert sorted(rt.redis.zrange(due, 0, -1)) == ["http_log:a", "http_log:b", "http_log:c"]
    # And status reports its size
    assert collect_status(rt)["beat"]["due_set_entries"] == 3


def test_a_pass_is_fenced_by_the_dispatch_lock_on_the_server_it_runs_on(runtime: Any) -> None:
    """After a failover a beat may believe it holds the lock (taken on the old primary) while
    the new primary names another beat: its pass dispatches nothing there (issue 20)."""
    rt = runtime.use_config(sources("s"))
    settings = replace(rt.settings, beat_lock_ttl=10)
    assert hold_lock(rt.redis, settings, "b") == (True, "b")
    # Beat "a" thinks it holds the lock; the server says "b": nothing is marked or sent
    assert run_pass(rt, holder="a") == []
    assert rt.redis.exists("wk:queued:http_log:s") == 0
    # The holder dispatches as before
    assert run_pass(rt, holder="b") == ["http_log:s"]
    release_lock(rt.redis, settings, "b")


def test_a_pass_over_many_entries_is_many_short_calls_with_the_same_outcome(
    runtime: Any,
) -> None:
    # Given seven new sources and chunks of two entries a script call
    names = [f"s{i}" for i in range(7)]
    rt = runtime.use_config(sources(*names))
    rt.settings = replace(rt.settings, dispatch_chunk=2)
    rt.redis.config_resetstat()
    # When a full pass runs, Then every one is dispatched, in four calls, and the due set holds all
    assert run_pass(rt) == [f"http_log:{n}" for n in names]
    calls = rt.redis.info("commandstats")
    assert sum(calls.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval")) >= 4
    assert rt.redis.zcard("wk:beat:due") == 7
    assert rt.redis.hget("wk:beat:stats", "dispatched") == "7"
    # And a second full pass (markers still set) dispatches none of them again
    assert run_pass(rt) == []
    assert rt.redis.hget("wk:beat:stats", "skipped_queued") == "7"


def test_past_the_status_limit_status_shows_the_sources_due_earliest(runtime: Any) -> None:
    rt = runtime.use_config(sources("a", "b", "c", "d"))
    assert len(collect_status(rt)["sources"]) == 4
    run_pass(rt)
    # Given b and d are overdue (d the most) and a status limit of two
    for name, at in (("b", 100.0), ("d", 50.0)):
        rt.redis.zadd("wk:beat:due", {f"http_log:{name}": at})
    rt.settings = replace(rt.settings, status_sources=2)
    # Then status shows those two, not every source, and beat's section counts them overdue
    status = collect_status(rt)
    assert list(status["sources"]) == ["d", "b"]
    assert status["beat"]["overdue_entries"] == 2


def test_a_long_pass_refreshes_the_dispatch_lock_between_chunks_and_stops_without_it(
    runtime: Any, monkeypatch: Any
) -> None:
    import workers.polling.dispatch as dispatch

    monkeypatch.setattr(dispatch, "KEEP_EVERY", 0.0)  # refresh between every two chunks
    names = [f"s{i}" for i in range(6)]
    rt = runtime.use_config(sources(*names))
    rt.settings = replace(rt.settings, dispatch_chunk=2)
    every = schedule_entries(rt.settings, rt.sources.view().sources())
    entries = [e for e in every if e.name.startswith("http")]
    sent: list[str] = []
    refreshed: list[bool] = []

    def send(batch: Sequence[Entry], task_ids: Sequence[str]) -> None:
        sent.extend(e.name for e in batch)

    def keep() -> bool:  # the lock is lost at the second refresh
        refreshed.append(True)
        return len(refreshed) < 2

    result = dispatch_pass(rt.redis, rt.settings, QUEUE, entries, send, True, keep=keep)
    # Then the chunks decided before the lock was lost are sent, the rest wait for the next pass
    assert result.fenced and len(refreshed) == 2
    assert sorted(sent) == [f"http_log:s{i}" for i in range(4)]
