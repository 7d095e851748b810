"""Listing the registry a page at a time (``workers.core.source_pages``): every source once,
whatever the page size, in a small registry (Redis sends it whole) and a large one (a real
hash table, walked with HSCAN), by owner too, and with a filter that keeps little."""

from __future__ import annotations

import pytest

from workers.core.source_pages import BadCursor, Cursor, list_page
from workers.core.source_registry import Definition
from workers.store.source_writes import write


def fill(runtime, owner: str, count: int, start: int = 0) -> None:
    puts = [
        Definition(f"s{i:05d}", "feed", owner, {"url": f"http://127.0.0.1:9/{i}"})
        for i in range(start, start + count)
    ]
    write(runtime.redis, runtime.settings, owner, puts, read=False)


def walk(runtime, limit: int, **kw) -> tuple[list[str], int]:
    names, cursor, pages = [], Cursor(), 0
    while True:
        found, following = list_page(runtime.sources, cursor, limit, **kw)
        assert len(found) <= limit
        names += [d.name for d in found]
        pages += 1
        if following is None:
            return names, pages
        cursor = Cursor.decode(following.encode())


@pytest.mark.parametrize("size", [30, 1500])
def test_every_source_is_listed_once_whatever_the_page(runtime, size):
    fill(runtime, "cli", size)
    for limit in (1, 7, 200):
        if size > 100 and limit == 1:
            continue
        names, _ = walk(runtime, limit)
        assert sorted(names) == [f"s{i:05d}" for i in range(size)]
        assert len(names) == size


def test_one_owners_sources_and_a_sparse_filter(runtime):
    fill(runtime, "cli", 700)
    fill(runtime, "opml", 300, start=700)
    names, _ = walk(runtime, 50, owner="opml")
    assert sorted(names) == [f"s{i:05d}" for i in range(700, 1000)]

    def rare(batch):
        return [d for d in batch if d.name.endswith("7")]

    # a limit no page reaches (100 match in all): only the budget can end a page
    names, pages = walk(runtime, 1000, keep=rare, budget=200)
    assert sorted(names) == [f"s{i:05d}" for i in range(7, 1000, 10)]
    assert pages >= 2  # short pages: the budget bounds what one page reads (1 page without)


@pytest.mark.parametrize("text", ["", "x", "1:", "1:bad name", "99999999999999999999999:a"])
def test_a_cursor_not_made_here_is_refused_in_one_line(text):
    if text == "1:":
        assert Cursor.decode(text) == Cursor(1, "")
        return
    with pytest.raises(BadCursor, match=r"^cursor: "):
        Cursor.decode(text)
