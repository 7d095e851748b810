"""What a feed's own channel says about when to come back: RSS 2.0 ``<ttl>`` (minutes),
``<skipHours>`` (GMT hours 0-23; 24 read as 0) and ``<skipDays>``, and the RSS 1.0 syndication
module's ``sy:updatePeriod`` / ``sy:updateFrequency`` (Atom has no equivalent).

Read from the raw bytes by a scan of the channel only — the text before the first item or
entry and after the last — independent of the parser that reads the entries, and cheap: a few
bounded regular expressions over a few hundred bytes of a typical feed. Hostile values are
ignored (a ttl of 0 or of a billion minutes is clamped later by the source's interval bounds;
an unknown day or an hour outside 0-24 is dropped). ``workers.polling.freshness`` combines this
with the HTTP caching headers.
"""

from __future__ import annotations

import re

from workers.polling.freshness import Freshness

ITEM_START = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,30}:)?(?:item|entry)[\s>/]")
ITEM_ENDS = (b"</item>", b"</entry>")
ANY = re.compile(rb"<(?:ttl|skip|[\w.-]{1,30}:update)", re.I)
"""One search for all of them: most feeds say none, and pay only this."""
TTL = re.compile(rb"<ttl(?:\s[^<>]{0,200})?>\s*(\d{1,9})\s*</ttl>", re.I)
SKIP = {
    name: re.compile(
        rb"<%s(?:\s[^<>]{0,200})?>((?:[^<]|<(?!/?%s)){0,2000})</%s>" % (tag, tag, tag), re.I
    )
    for name, tag in (("hours", b"skipHours"), ("days", b"skipDays"))
}
"""The element's content never holds its own start or end tag, so the scans from two starts
never overlap: linear in the channel (``.{0,2000}?`` was 2,000 steps from every start)."""
HOUR = re.compile(rb"<hour>\s*(\d{1,2})\s*</hour>", re.I)
DAY = re.compile(rb"<day>\s*([A-Za-z]{1,12})\s*</day>", re.I)
SY_PERIOD = re.compile(
    rb"<[\w.-]{1,30}:updatePeriod(?:\s[^<>]{0,200})?>\s*([A-Za-z]{1,10})\s*</", re.I
)
SY_FREQUENCY = re.compile(
    rb"<[\w.-]{1,30}:updateFrequency(?:\s[^<>]{0,200})?>\s*(\d{1,6})\s*</", re.I
)
PERIODS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "monthly": 2592000}
PERIODS["yearly"] = 365 * 86400
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CHANNEL_MAX = 64 * 1024
"""Bytes of channel text scanned at each end of the document."""


def channel_text(body: bytes) -> bytes:
    """The document without its items: the channel's own elements."""
    first = ITEM_START.search(body)
    if first is None:
        return body[:CHANNEL_MAX]
    last = max(body.rfind(end) for end in ITEM_ENDS)
    head = body[: min(first.start(), CHANNEL_MAX)]
    tail = body[last:][-CHANNEL_MAX:] if last > first.start() else b""
    return head + b"\n" + tail


def feed_freshness(body: bytes) -> Freshness | None:
    """The feed's ttl / syndication period and skip hours and days; None when it says none."""
    channel = channel_text(body)
    if ANY.search(channel) is None:
        return None
    signals: list[tuple[float, str]] = []
    if m := TTL.search(channel):
        signals.append((int(m.group(1)) * 60.0, f"ttl {int(m.group(1))}"))
    period = SY_PERIOD.search(channel)
    frequency = SY_FREQUENCY.search(channel)
    if period or frequency:
        name = period.group(1).decode("ascii").lower() if period else "daily"
        times = max(1, int(frequency.group(1))) if frequency else 1
        if name in PERIODS:
            signals.append((PERIODS[name] / times, f"sy:updatePeriod {name}/{times}"))
    hours: set[int] = set()
    days: set[int] = set()
    if m := SKIP["hours"].search(channel):
        hours = {int(h) % 24 for h in HOUR.findall(m.group(1)) if int(h) <= 24}
    if m := SKIP["days"].search(channel):
        named = (d.decode("ascii").lower() for d in DAY.findall(m.group(1)))
        days = {WEEKDAYS.index(d) for d in named if d in WEEKDAYS}
    if not signals and not hours and not days:
        return None
    return Freshness(tuple(signals), None, frozenset(hours), frozenset(days))
