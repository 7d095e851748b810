"""The capped primitives every later stage relies on, against a real Redis."""

from __future__ import annotations

from workers.store.lists import CappedList
from workers.store.seen import SeenSet
from workers.store.streams import CappedStream


def test_seen_set_reports_only_new_keys_once(redis_client):
    # Given an empty seen-set
    seen = SeenSet(redis_client, "wk:seen:t", cap=100)
    # When the same keys are presented twice, with a duplicate inside one batch
    first = seen.add_new(["a", "b", "a", "c"])
    second = seen.add_new(["a", "b", "c", "d"])
    # Then each key is new exactly once
    assert first == ["a", "b", "c"]
    assert second == ["d"]
    assert len(seen) == 4


def test_seen_set_holds_exactly_its_cap_and_never_re_emits_a_key_present_in_every_batch(
    redis_client,
):
    # Given a seen-set capped at 10,000
    seen = SeenSet(redis_client, "wk:seen:big", cap=10_000)
    pinned_new = 0
    # When 1,000,000 distinct keys arrive in batches of 50, a pinned key in every batch
    for batch in range(20_000):
        keys = ["pinned", *(f"k{batch}-{i}" for i in range(50))]
        new = seen.add_new(keys)
        pinned_new += new.count("pinned")
        assert len(new) == 50 + (batch == 0)
    # Then it holds exactly 10,000 members and the pinned key was new once
    assert len(seen) == 10_000
    assert pinned_new == 1
    assert "pinned" in seen


def test_seen_set_age_limit_drops_keys_not_seen_again(redis_client):
    seen = SeenSet(redis_client, "wk:seen:aged", cap=100, max_age=1)
    seen.add_new(["old"])
    redis_client.zadd("wk:seen:aged", {next(iter(redis_client.zrange("wk:seen:aged", 0, 0))): 1})
    assert seen.add_new(["fresh"]) == ["fresh"]
    assert len(seen) == 1
    assert 0 < redis_client.ttl("wk:seen:aged") <= 1


def test_capped_stream_stays_near_its_cap_and_round_trips_nested_fields(redis_client):
    stream = CappedStream(redis_client, "wk:stream:test", cap=500, seq_key="wk:stream:test:seq")
    stream.add_many({"title": f"t{i}", "tags": ["x", str(i)]} for i in range(5000))
    assert 500 <= len(stream) <= 600
    ((_, last),) = stream.latest(1)
    assert last == {"title": "t4999", "tags": ["x", "4999"], "seq": "5000", "schema": "1"}


def test_capped_list_keeps_the_newest_records(redis_client):
    history = CappedList(redis_client, "wk:history:s", cap=3)
    for i in range(10):
        history.push({"run": i})
    assert [r["run"] for r in history.latest()] == [9, 8, 7]
    assert len(history) == 3


def test_dedup_and_append_write_each_new_entry_once_in_the_same_step(redis_client):
    # Given a seen-set and a stream
    seen = SeenSet(redis_client, "wk:seen:both", cap=100)
    stream = CappedStream(redis_client, "wk:stream:both", cap=100, seq_key="wk:stream:both:seq")
    # When items arrive twice, with a duplicate key inside the first batch
    first = seen.add_new_and_append(
        stream, [("a", {"t": "1"}), ("b", {"t": "2"}), ("a", {"t": "again"})]
    )
    second = seen.add_new_and_append(stream, [("a", {"t": "1"}), ("c", {"t": "3"})])
    # Then each new key's entry was appended exactly once, and the ids match the stream
    assert [i for i, _ in first] == [0, 1] and [i for i, _ in second] == [1]
    assert [f["t"] for _, f in stream.latest(10)] == ["1", "2", "3"]
    assert [f["seq"] for _, f in stream.latest(10)] == ["1", "2", "3"]
    assert [sid for _, sid in first + second] == [sid for sid, _ in stream.latest(10)]
    assert len(seen) == 3


def test_dedup_and_append_chunks_large_batches_and_keeps_the_cap(redis_client):
    seen = SeenSet(redis_client, "wk:seen:many", cap=1500)
    stream = CappedStream(redis_client, "wk:stream:many", cap=5000, seq_key="wk:stream:many:seq")
    written = seen.add_new_and_append(stream, [(f"k{i}", {"n": str(i)}) for i in range(2500)])
    assert [i for i, _ in written] == list(range(2500))
    assert len(stream) == 2500 and len(seen) == 1500
