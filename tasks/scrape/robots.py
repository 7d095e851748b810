"""robots.txt: fetched once per origin, cached in Redis with a TTL and a cap on hosts.

Rules follow RFC 9309: a 2xx body is parsed (``urllib.robotparser``, first 512 KiB); a 4xx
means no rules (everything allowed); a 5xx or a network failure means the file is unreachable,
so the site is not scraped this run and nothing is cached (the next run asks again). Cached
texts live under ``{prefix}robots:{origin}`` with ``WATCHKEEPER_ROBOTS_TTL``; a sorted-set
index ``{prefix}robots`` (origin → fetched at) keeps at most ``WATCHKEEPER_ROBOTS_MAX_HOSTS``
origins, evicting the oldest in the same Lua call that stores a new one. Nothing is kept in the
worker: a ``RobotsRules`` object lives for one scrape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import redis

from workers.core import keys
from workers.core.settings import Settings
from workers.polling.errors import FetchError
from workers.polling.fetch import fetch
from workers.polling.profile import NO_PROFILE, Resolved
from workers.store.scripts import Script
from workers.store.size import Size

AGENT = "watchkeeper"
ROBOTS_MAX_BYTES = 512 * 1024

_STORE = Script("tasks.scrape", "robots_store")


class RobotsUnavailable(Exception):
    """robots.txt could not be read (5xx, timeout, refused); one line naming the URL."""


@dataclass(frozen=True)
class RobotsResponse:
    """What a robots fetcher returns: the HTTP status and the body (empty for a 4xx)."""

    status: int
    body: bytes


RobotsFetcher = Callable[[str], RobotsResponse]


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` — without user info, so a credential never reaches a key."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme.lower()}://{host}" + (f":{parts.port}" if parts.port else "")


def robots_url(url: str) -> str:
    parts = urlsplit(origin_of(url))
    return urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))


def parse_rules(text: str) -> RobotFileParser:
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    return parser


class RobotsCache:
    """The Redis side: one cached text per origin, TTL'd, at most ``cap`` origins."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.index = keys.ROBOTS_INDEX.key(settings)

    def text_key(self, origin: str) -> str:
        return keys.ROBOTS_TEXT.key(self.settings, origin)

    def get(self, origin: str) -> str | None:
        value = self.client.get(self.text_key(origin))
        return None if value is None else str(value)

    def put(self, origin: str, text: str) -> None:
        evicted = _STORE(
            self.client,
            [self.index, self.text_key(origin)],
            [origin, text, self.settings.robots_ttl, self.settings.robots_max_hosts],
        )
        if evicted:
            self.client.delete(*(self.text_key(str(o)) for o in evicted))

    def __len__(self) -> int:
        return int(self.client.zcard(self.index))

    def size(self) -> Size:
        return Size(self.index, len(self), self.settings.robots_max_hosts)


@dataclass
class RobotsRules:
    """Answers "may this URL be fetched?" for one scrape, reading each origin once."""

    cache: RobotsCache
    fetcher: RobotsFetcher
    _parsed: dict[str, RobotFileParser] = field(default_factory=dict)

    def allowed(self, url: str) -> bool:
        """True if robots.txt allows ``url`` for watchkeeper; raises ``RobotsUnavailable``."""
        origin = origin_of(url)
        parser = self._parsed.get(origin)
        if parser is None:
            parser = self._parsed[origin] = parse_rules(self._text(origin, url))
        return parser.can_fetch(AGENT, url)

    def _text(self, origin: str, url: str) -> str:
        cached = self.cache.get(origin)
        if cached is not None:
            return cached
        where = robots_url(url)
        response = self.fetcher(where)
        if response.status >= 500:
            raise RobotsUnavailable(
                f"{where}: HTTP {response.status}; not scraping until it can be read"
            )
        text = (
            ""
            if response.status >= 400
            else response.body[:ROBOTS_MAX_BYTES].decode("utf-8", "replace")
        )
        self.cache.put(origin, text)
        return text


def http_fetcher(
    client: redis.Redis, settings: Settings, profile: Resolved = NO_PROFILE
) -> RobotsFetcher:
    """A fetcher through the shared fetch layer (timeouts, byte cap, host politeness) with the
    site's request profile (a site that answers only a browser's user agent, a cookie or a
    proxy answers its robots.txt only so too)."""

    def get(url: str) -> RobotsResponse:
        try:
            result = fetch(
                url,
                settings,
                client,
                max_bytes=ROBOTS_MAX_BYTES * 4,
                accept="text/plain",
                profile=profile,
            )
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return RobotsResponse(exc.status, b"")
            raise RobotsUnavailable(f"robots.txt unavailable: {exc}") from None
        return RobotsResponse(result.status, result.body)

    return get


def rules_for_run(
    client: redis.Redis, settings: Settings, profile: Resolved = NO_PROFILE
) -> RobotsRules:
    return RobotsRules(RobotsCache(client, settings), http_fetcher(client, settings, profile))
