"""The consumer-side helper that turns packed ``logs`` entries back into one record per line."""

from __future__ import annotations

from workers.tcp.entries import lines_of, missed, unpack

PACKED = {
    "source": "tcp",
    "peer": "10.0.0.7:5514",
    "received_at": "2026-01-01T00:00:00.000+00:00",
    "lines": "first\nsecond\nthird",
    "count": "3",
    "seq": "41",
    "schema": "1",
}


def test_a_packed_entry_becomes_one_record_per_line_shaped_like_an_unpacked_entry() -> None:
    records = lines_of(PACKED)
    assert [r["line"] for r in records] == ["first", "second", "third"]
    assert [r["seq"] for r in records] == ["41", "42", "43"]
    assert all(
        set(r) == {"source", "peer", "received_at", "line", "seq", "schema"} for r in records
    )


def test_an_unpacked_or_foreign_entry_passes_through_unchanged() -> None:
    single = {"source": "tcp", "peer": "p", "received_at": "t", "line": "x", "seq": "7"}
    http = {"source": "api", "line": "y", "key": "k", "seq": "8", "schema": "1"}
    assert lines_of(single) == [single]
    assert list(unpack([("1-0", single), ("2-0", PACKED), ("3-0", http)])) == [
        ("1-0", single),
        *(("2-0", r) for r in lines_of(PACKED)),
        ("3-0", http),
    ]


def test_missed_counts_lines_trimmed_between_two_entries_packed_or_not() -> None:
    assert missed(None, PACKED) == 0
    assert missed({"seq": "40"}, PACKED) == 0
    assert missed({"seq": "30"}, PACKED) == 10
    assert missed(PACKED, {"seq": "44", "line": "next"}) == 0
    assert missed(PACKED, {"seq": "50", "line": "later"}) == 6
