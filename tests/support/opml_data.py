"""Feeds for the OPML tests: 1,000 subscriptions as a Miniflux user might have them.

``tests/data/miniflux-1000.opml`` was written from this list by Miniflux's own serializer
(``internal/reader/opml/serializer.go``, run once with Go 1.19 on these feeds: categories
sorted, each category's feeds in the order given — by title, as Miniflux's feed list shows
them). Titles hold what a real list holds and an encoder must escape: ``&``, quotes, ``<``,
non-ASCII, emoji, titles repeated across feeds, titles with no ASCII letter at all.
"""

from __future__ import annotations

import random
from typing import Any

CATEGORIES = [
    "All",
    "Security",
    "Linux & Open Source",
    "Science",
    "World News",
    "Économie",
    "日本のニュース",
    "Podcasts 🎧",
    "Dev <Blogs>",
    '"Quoted" things',
    "Sports",
    "Music",
    "Photography",
    "Cooking",
    "Games",
    "Weather",
    "Local",
    "Research papers",
    "Status pages",
    "Releases",
]

WORDS = [
    "Daily", "Weekly", "Notes", "Journal", "Digest", "Review", "Observer", "Post", "Times",
    "Log", "Letters", "Bulletin", "Report", "Field", "Signal", "Wire", "Dispatch", "Ledger",
]  # fmt: skip

SPECIAL_TITLES = [
    "Tom's Hardware",
    "AT&T Tech Channel",
    'The "Best" Feed',
    "a < b > c",
    "Le Monde — À la une",
    "日本語ニュース",
    "Новости",
    "🔥 Hot takes",
    "Ars Technica",
    "Ars Technica",
    "",
    "x",
    "Hacker News: Front Page",
    "Café & Crème",
    "Tab\there",
]


def miniflux_feeds(count: int = 1000) -> list[dict[str, Any]]:
    """``count`` feeds: title, feed URL, site URL, category; sorted as the fixture lists them
    (category, then title case-folded, then URL)."""
    rng = random.Random(21)
    feeds = []
    for i in range(count):
        if i < len(SPECIAL_TITLES):
            title = SPECIAL_TITLES[i] or f"https://feeds{i}.example.net/"
        else:
            title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}"
        host = f"site{i % 397}.example.{rng.choice(['org', 'com', 'net'])}"
        scheme = "https" if i % 5 else "http"
        query = f"?format=rss&page={i}" if i % 7 == 0 else ""
        feeds.append(
            {
                "title": title,
                "feed_url": f"{scheme}://{host}/feed/{i}.xml{query}",
                "site_url": f"{scheme}://{host}/" if i % 11 else f"{scheme}://{host}/blog/{i}",
                "category": CATEGORIES[i % len(CATEGORIES)],
            }
        )
    feeds.sort(key=lambda f: (f["category"], f["title"].casefold(), f["feed_url"]))
    return feeds
