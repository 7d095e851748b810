"""Secrets out of anything shown: URLs with user info or secret-looking query parameters.

Used for every URL that reaches a log line, a stored error, ``status``, metrics or a file:
Redis URLs (``redis://:password@host``, ``?password=``) and source URLs
(``https://user:token@host/feed?api_key=…``).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = re.compile(
    r"(pass(word|wd)?|secret|token|api[-_]?key|apikey|key|auth|sig(nature)?|credential|"
    r"access[-_]?key|session)",
    re.I,
)
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (or whole user info when it is a token) and secret-looking
    query values replaced; anything unparseable comes back with every ``user@`` masked.
    Several URLs joined by ``;`` (kombu's Sentinel form) are each redacted."""
    joined = re.split(r";(?=[a-zA-Z][a-zA-Z0-9+.-]*://)", url)
    if len(joined) > 1:
        return ";".join(_redact_one(part) for part in joined)
    return _redact_one(url)


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    secret_query = any(SECRET_PARAMS.search(k) for k, _ in parse_qsl(parts.query))
    if "@" not in netloc and not secret_query:
        return url  # nothing to hide: unchanged (urlunsplit would drop "//" of redis+socket:///)
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAMS.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def without_credentials(url: str) -> str:
    """``url`` fit to store as data (a listing's page or link): no user info at all, and
    secret-looking query values masked."""
    masked = redact_url(url)
    parts = urlsplit(masked)
    if "@" not in parts.netloc:
        return masked
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Free text (an error message quoting URLs) with URL credentials and given secrets masked."""
    out = re.sub(
        r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s]+)@",
        lambda m: (
            m.group(1)
            + (f"{m.group(2).split(':', 1)[0]}:{MASK}" if ":" in m.group(2) else MASK)
            + "@"
        ),
        text,
    )
    out = re.sub(
        r"([?&][^=&\s]*?(?:" + SECRET_PARAMS.pattern + r")[^=&\s]*=)[^&\s#]+",
        lambda m: m.group(1) + MASK,
        out,
        flags=re.I,
    )
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return out


class RedactingFilter(logging.Filter):
    """Masks URL credentials in a third-party logger's records (urllib3 logs every request
    line, query string included, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        return True


def redact_library_logs(*names: str) -> None:
    """Install the filter once on each named logger."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
