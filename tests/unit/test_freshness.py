"""Polite by the source's own word (issue 21 #6): each signal read from headers or a feed's
channel, and the next check it gives within the source's clamps — as plain functions of the
headers, the body and a given time (the integration tests do it on Redis's clock)."""

from __future__ import annotations

import calendar
from email.utils import formatdate

import pytest

from tasks.feeds.freshness import feed_freshness
from workers.core.settings import Settings
from workers.core.sources_file import validate_config
from workers.polling.freshness import Freshness, bounds, from_headers, next_wait

SETTINGS = Settings.from_env({})
NOW = float(calendar.timegm((2026, 3, 4, 10, 30, 0)))  # a Wednesday, 10:30 GMT


def source(**fields: object):  # type: ignore[no-untyped-def]
    table = {"name": "f", "url": "https://e.org/f", "interval": "5m", **fields}
    return validate_config({"feeds": [table]}).sources[0]


def http(headers: dict[str, str]) -> Freshness | None:
    return from_headers({k.lower(): v for k, v in headers.items()})


@pytest.mark.parametrize(
    ("headers", "seconds", "label"),
    [
        ({"Cache-Control": "public, max-age=900"}, 900, "cache-control max-age=900"),
        ({"Cache-Control": "max-age=900", "Age": "300"}, 600, "cache-control max-age=900"),
        ({"Cache-Control": 's-maxage=60, max-age="1200"'}, 1200, "cache-control max-age=1200"),
        (
            {"Cache-Control": "max-age=900", "Expires": formatdate(NOW + 99999, usegmt=True)},
            900,
            "cache-control max-age=900",
        ),
        (
            {
                "Expires": formatdate(NOW + 1800, usegmt=True),
                "Date": formatdate(NOW, usegmt=True),
            },
            1800,
            "expires in 30m",
        ),
        ({"Expires": "0"}, 0, "expires (already expired)"),
    ],
)
def test_http_signals(headers, seconds, label):
    found = http(headers)
    assert found is not None and found.signals == ((seconds, label),)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Cache-Control": "no-cache"},
        {"Cache-Control": "no-store, max-age=600"},
        {"Cache-Control": "private"},
        {"Cache-Control": "max-age=soon"},
    ],
)
def test_no_lifetime_means_the_interval(headers):
    assert next_wait(SETTINGS, source(), http(headers), NOW) == (300, "interval")


def test_expires_without_date_is_measured_on_the_given_clock():
    found = http({"Expires": formatdate(NOW + 3600, usegmt=True)})
    assert found is not None and found.expires_at == NOW + 3600
    assert next_wait(SETTINGS, source(), found, NOW) == (3600, "expires in 60m")


def test_the_longest_signal_wins_within_the_clamps():
    both = Freshness(((900.0, "cache-control max-age=900"), (3600.0, "ttl 60")))
    assert next_wait(SETTINGS, source(), both, NOW) == (3600, "ttl 60")
    short = Freshness(((60.0, "cache-control max-age=60"),))
    assert next_wait(SETTINGS, source(), short, NOW) == (
        300,
        "cache-control max-age=60, raised to interval_min 5m",
    )
    assert next_wait(SETTINGS, source(interval_min="1m"), short, NOW) == (
        60,
        "cache-control max-age=60",
    )
    long = Freshness(((86400.0, "ttl 1440"),))
    assert next_wait(SETTINGS, source(), long, NOW) == (3600, "ttl 1440, cut to interval_max 60m")
    assert next_wait(SETTINGS, source(interval_max="2h"), long, NOW)[0] == 7200
    assert next_wait(SETTINGS, source(honour_cache=False), long, NOW) == (300, "interval")


def test_default_bounds_follow_the_interval_and_the_factor():
    assert bounds(SETTINGS, source()) == (300, 300 * SETTINGS.interval_max_factor)
    assert bounds(SETTINGS, source(interval_min=60, interval_max=900)) == (60, 900)


def test_skip_hours_move_the_check_to_the_next_allowed_hour():
    # 10:30 + 5m falls in 10h; 10h and 11h are skipped: the next check is at 12:00 GMT
    skip = Freshness(skip_hours=frozenset({10, 11}))
    wait, reason = next_wait(SETTINGS, source(interval_max="3h"), skip, NOW)
    assert (NOW + wait, reason) == (calendar.timegm((2026, 3, 4, 12, 0, 0)), "skipHours")
    # a clamp that ends before the allowed hour wins
    assert next_wait(SETTINGS, source(interval_max="1h"), skip, NOW) == (
        3600,
        "skipHours, cut to interval_max 60m",
    )
    # a feed that skips every hour cannot be honoured
    every = Freshness(skip_hours=frozenset(range(24)))
    assert next_wait(SETTINGS, source(), every, NOW) == (300, "interval")


def test_skip_days_and_ttl_together():
    both = Freshness(((3600.0, "ttl 60"),), None, frozenset(), frozenset({2}))  # Wednesday
    wait, reason = next_wait(SETTINGS, source(interval_max="24h"), both, NOW)
    assert NOW + wait == calendar.timegm((2026, 3, 5, 0, 0, 0))
    assert reason == "ttl 60, then skipDays"


RSS = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>t</title><ttl> 45 </ttl>
<skipHours><hour>0</hour><hour>24</hour><hour>7</hour><hour>99</hour></skipHours>
<skipDays><day>Saturday</day><day>Sunday</day><day>Caturday</day></skipDays>
<item><title>a</title><description><![CDATA[<ttl>1</ttl>]]></description></item>
<item><title>b</title><ttl>2</ttl></item>
</channel></rss>"""


def test_a_feeds_channel_ttl_skip_hours_and_skip_days():
    found = feed_freshness(RSS)
    assert found is not None
    assert found.signals == ((2700.0, "ttl 45"),)
    assert found.skip_hours == {0, 7} and found.skip_days == {5, 6}
    assert Freshness.from_json(found.to_json()) == found


def test_the_syndication_module_and_a_feed_that_says_nothing():
    rdf = (
        b'<rdf:RDF xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        b"<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>"
        b"</channel><item><title>x</title></item></rdf:RDF>"
    )
    found = feed_freshness(rdf)
    assert found is not None and found.signals == ((1800.0, "sy:updatePeriod hourly/2"),)
    atom = b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>x</title></entry></feed>'
    assert feed_freshness(atom) is None


def test_hostile_channel_values_are_ignored_or_clamped():
    huge = b"<rss><channel><ttl>999999999</ttl><item/></channel></rss>"
    found = feed_freshness(huge)
    assert found is not None
    assert next_wait(SETTINGS, source(), found, NOW)[0] == 300 * SETTINGS.interval_max_factor
    assert feed_freshness(b"<rss><channel><ttl>-5</ttl><ttl>x</ttl></channel></rss>") is None
    assert Freshness.from_json("not json") is None and Freshness.from_json('{"skip_hours": [99]}')
