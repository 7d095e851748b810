"""What a location resolver returns, shared by the gazetteer, the Moonshot client and the buffer.

Kept apart so the buffer never imports an HTTP client and the resolvers never import Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

PRECISIONS = ("city", "state", "country", "point", "none")


@dataclass(frozen=True)
class Location:
    """A place: ``precision`` says what was matched; "none" is the explicit no-location result."""

    name: str
    country_code: str
    admin: str
    lat: float | None
    lon: float | None
    precision: str = "city"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "country_code": self.country_code,
            "admin": self.admin,
            "lat": self.lat,
            "lon": self.lon,
            "precision": self.precision,
        }

    @property
    def found(self) -> bool:
        return self.precision != "none"


NO_LOCATION = Location("", "", "", None, None, "none")


@dataclass
class ResolveResult:
    """One batch's answer: located ids, and ids the resolver could not answer for."""

    located: dict[str, Location] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


class ResolverError(Exception):
    """A whole batch failed. ``retryable`` errors are retried with backoff, others fall back.

    ``reason`` is a short fixed word used as a counter name (``http_500``, ``timeout``…), and the
    message never contains the API key.
    """

    def __init__(
        self, reason: str, message: str, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason, self.retryable, self.retry_after = reason, retryable, retry_after


class Resolver(Protocol):
    """Locates a batch of (alert id, text) pairs; ``method`` is recorded as location_method."""

    method: str

    def resolve(self, items: Sequence[tuple[str, str]]) -> ResolveResult: ...
