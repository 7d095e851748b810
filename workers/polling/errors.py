"""The failures a poll records as its source's error (one line each), instead of raising."""

from __future__ import annotations

from workers.core.redact import redact_text


class SourceError(Exception):
    """An expected failure of one source (fetch, politeness, content); ``str()`` is already a
    clear one-line message, so it is recorded as is — with any credential in a URL it quotes
    masked, since messages reach logs and ``status``."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact_text(message))


class HostBusy(SourceError):
    """No politeness slot for a host within the wait allowed; the message names the host."""


class SourceProblem(SourceError):
    """The fetched body is not what the source should serve (one line, names the problem)."""


class FetchError(SourceError):
    """A fetch failed; ``str(exc)`` is one line naming the URL and the problem."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
