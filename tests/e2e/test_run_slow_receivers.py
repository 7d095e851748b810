"""`watchkeeper run` with two trickling notification receivers (issue 19 #1): polls stay on
time and the other destinations keep getting every item. The five-minute version, with its
figures, is ``bench/bench_slow_receivers.py``; this one runs a minute and asserts counts."""

from __future__ import annotations

import pytest

from bench.slow_receivers import scenario

pytestmark = pytest.mark.own_redis


@pytest.mark.slow
def test_two_trickling_receivers_stall_neither_polls_nor_the_other_destinations(tmp_path):
    result = scenario(tmp_path / "home", seconds=60, feeds_n=3, interval=2.0)
    # every source polled on time: no dispatched poll left waiting in the queue
    for name, polls in result["polls"].items():
        assert polls["polls"] >= polls["expected"] * 0.6, (name, result["polls"])
    assert all(streak < 2 for streak in result["queued_longest_streak_samples"].values()), result
    # the prompt webhooks got every item, once (with two blocked pool processes: none)
    assert result["items"] >= 30 and result["missing"] == 0 and result["duplicates"] == 0, result
    assert result["deliveries"] == 2 * result["items"]
    # the trickling ones are cut at their deadline and tried again, their sends never pile up
    assert all(n >= 2 for n in result["trickle_attempts"]), result
    assert all(n <= 1 for n in result["trickle_open_at_end"]), result
    assert result["notify"]["queue_length"] <= 2, result
    assert result["stop_problems"] == [], result
