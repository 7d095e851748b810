"""Listing changes: price moves past a site's thresholds and listings back again, written to
the capped ``changes`` stream and notified like any other stream."""

from __future__ import annotations

import dataclasses

from tasks.notify.tasks import deliver
from tasks.scrape.changes import record_changes
from tests.support.notify import fast, pump


def listing(ref: str, price: float | None, currency: str = "EUR") -> dict:
    return {
        "id": ref,
        "price_amount": price,
        "price_currency": currency,
        "fields": {"title": f"Watch {ref}", "link": f"https://market.example/{ref}"},
    }


def changes(rt) -> list[dict]:
    return [f for _, f in rt.redis.xrange(f"{rt.settings.prefix}stream:changes")]


def run(rt, items, drop=10.0, rise=None, complete=True) -> int:
    return record_changes(rt, "watches", items, drop_pct=drop, rise_pct=rise, complete=complete)[0]


def test_a_12_percent_drop_past_a_10_percent_threshold_is_one_entry_and_one_message(
    runtime, worker, hook
):
    rt = fast(runtime)
    rt.use_config(f'[[notify]]\nname = "deals"\nurls = ["{hook.url()}"]\nstreams = ["changes"]\n')
    deliver.apply_async(ignore_result=False).get(timeout=30)
    assert run(rt, [listing("A", 1000.0), listing("B", 200.0)]) == 0
    assert run(rt, [listing("A", 880.0), listing("B", 200.0)]) == 1
    (entry,) = changes(rt)
    assert (entry["site"], entry["id"], entry["change"]) == ("watches", "A", "price_drop")
    assert (entry["old_price"], entry["new_price"], entry["change_pct"]) == ("1000", "880", "-12.0")
    assert entry["seq"] == "1" and entry["schema"] == "1"
    pump(
        lambda: deliver.apply_async(ignore_result=False).get(timeout=30),
        lambda: len(hook.accepted) >= 1,
        message="the change notified",
    )
    deliver.apply_async(ignore_result=False).get(timeout=30)
    (message,) = hook.accepted
    assert message["title"] == "watches: price drop — Watch A"
    assert "1000 → 880 EUR (-12.0%)" in message["message"]


def test_small_moves_are_not_reported_until_they_add_up(runtime):
    rt = fast(runtime)
    run(rt, [listing("A", 100.0)])
    assert run(rt, [listing("A", 95.0)]) == 0  # -5 %
    assert run(rt, [listing("A", 94.0)]) == 0  # -6 % from the baseline
    assert run(rt, [listing("A", 89.0)]) == 1  # -11 % from 100: reported, new baseline 89
    assert run(rt, [listing("A", 85.0)]) == 0  # -4.5 % from 89
    assert run(rt, [listing("A", 120.0)]) == 0  # rises are not reported without a threshold
    assert run(rt, [listing("A", 150.0)], rise=20.0) == 1
    assert [c["change"] for c in changes(rt)] == ["price_drop", "price_rise"]


def test_a_listing_back_after_a_complete_run_without_it(runtime):
    rt = fast(runtime)
    both = [listing("A", 10.0), listing("B", 20.0)]
    run(rt, both)
    run(rt, [listing("A", 10.0)], complete=False)  # a partial run proves no absence
    assert run(rt, both) == 0
    run(rt, [listing("A", 10.0)])  # complete: B is absent
    assert run(rt, both) == 1
    (entry,) = changes(rt)
    assert (entry["id"], entry["change"]) == ("B", "back")


def test_the_price_memory_is_capped_like_the_seen_set(runtime):
    rt = fast(runtime)
    rt.settings = dataclasses.replace(rt.settings, max_seen=5)
    written, tracked = record_changes(
        rt,
        "watches",
        [listing(str(i), 1.0) for i in range(12)],
        drop_pct=10,
        rise_pct=None,
        complete=True,
    )
    assert (written, tracked) == (0, 5)
    prefix = rt.settings.prefix
    assert rt.redis.hlen(f"{prefix}listing:watches") == 5 + 1  # ids + the run counter
    assert rt.redis.ttl(f"{prefix}listing:watches") > 0
