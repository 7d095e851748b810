"""A source's request profile made concrete for one poll: the environment read, credentials
formatted, and every secret listed so a message quoting one is masked.

Read at each poll, never stored: a secret lives in the worker's environment and in the
request it goes into, nowhere else — not in Redis, the schedule, status or a log line.
Credentials (``auth``, cookies, and every header whose value comes from the environment) are
sent only to the source URL's own host and port, and never over plain http when the source URL
is https — a redirect or a site's next page on another host gets the profile's other headers,
its proxy and TLS settings, but no credential (what ``requests`` does when it follows a
redirect itself). Non-secret headers and the user agent go with every request of the source,
robots.txt included. The host's politeness slot is the target's, whatever the proxy.

``auth = "env:NAME"`` holds one of (the value format, also in docs/configuration.md):

* ``Bearer TOKEN`` → ``Authorization: Bearer TOKEN``;
* ``Basic USER:PASSWORD`` or plain ``USER:PASSWORD`` → HTTP basic (encoded here);
* ``Basic BASE64`` or any other ``SCHEME CREDENTIALS`` (``Token abc``) → sent as is.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from workers.core.redact import redact_text
from workers.core.request_profile import (
    ENV_PREFIX,
    MAX_PROFILE_BYTES,
    RequestProfile,
    proxy_problem,
)
from workers.core.source_env import EnvPolicy
from workers.core.sources_file import Source
from workers.polling.errors import SourceProblem

MIN_SECRET = 3
"""Shorter strings are not masked in messages (masking every "a" would make them unreadable;
a message never quotes a header value anyway)."""


@dataclass(frozen=True)
class Resolved:
    """One poll's request options. ``headers`` go with every request, ``credentials`` only to
    ``host`` (and not over http when ``https``); ``verify`` None keeps the session's."""

    headers: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    proxies: dict[str, str] | None = None
    verify: bool | str | None = None
    host: str = ""
    https: bool = False
    secrets: tuple[str, ...] = ()

    def headers_for(self, url: str) -> dict[str, str]:
        """The profile's headers for a request to ``url``: credentials only to its own host."""
        if not self.credentials:
            return self.headers
        parts = urlsplit(url)
        if _host(parts.scheme, parts.hostname, parts.port) != self.host or (
            self.https and parts.scheme != "https"
        ):
            return self.headers
        return {**self.headers, **self.credentials}

    def redact(self, text: str) -> str:
        """``text`` with URL credentials and this profile's secrets masked."""
        return redact_text(text, self.secrets) if self.secrets else text


NO_PROFILE = Resolved()


def resolve(
    source: Source, environ: Mapping[str, str] | None = None, policy: EnvPolicy | None = None
) -> Resolved:
    """The profile of ``source`` with its variables read now; ``SourceProblem`` (one line
    naming the field and the variable, never a value; the poll loop logs it with the source's
    name) when one is unset, holds something unusable or is one no source may read
    (``policy``, default: ``WK_SOURCE_*`` only; the poll passes its process's,
    ``workers.core.source_env.env_policy``)."""
    profile: RequestProfile = source.request
    if profile.empty:
        return NO_PROFILE
    env = os.environ if environ is None else environ
    return _Resolver(source, env, policy or EnvPolicy()).build(profile)


class _Resolver:
    def __init__(self, source: Source, env: Mapping[str, str], policy: EnvPolicy) -> None:
        self.source, self.env, self.policy = source, env, policy
        self.secrets: list[str] = []
        self.size = 0

    def fail(self, where: str, text: str) -> SourceProblem:
        """``field: problem`` — the poll's log line and every view name the source."""
        return SourceProblem(f"{where}: {text}")

    def value(self, where: str, raw: str, ascii_only: bool = True) -> str:
        """A literal, or the variable's value (recorded as a secret): one line of printable
        characters, ASCII unless it is encoded before it is sent (a basic-auth password)."""
        if not raw.startswith(ENV_PREFIX):
            return raw
        var = raw[len(ENV_PREFIX) :]
        refused = self.policy.refusal(var)
        if refused is not None:  # checked where it was added too: this is the last line
            raise self.fail(where, refused)
        value = self.env.get(var, "")
        if not value:
            raise self.fail(where, f"environment variable {var} is not set")
        if not value.isprintable() or value != value.strip():
            raise self.fail(
                where,
                f"environment variable {var} holds a control character, line break or "
                "surrounding space (the value is not shown)",
            )
        if ascii_only and not value.isascii():
            raise self.fail(
                where, f"environment variable {var} holds a non-ASCII character (not shown)"
            )
        self.secret(value)
        return value

    def secret(self, *values: str) -> None:
        self.secrets += [v for v in values if len(v) >= MIN_SECRET]

    def build(self, profile: RequestProfile) -> Resolved:
        headers: dict[str, str] = {}
        credentials: dict[str, str] = {}
        if profile.user_agent:
            headers["User-Agent"] = profile.user_agent
        for name, raw in profile.headers:
            value = self.value(f"headers.{name}", raw)
            (credentials if raw.startswith(ENV_PREFIX) else headers)[name] = value
            self.size += len(name) + len(value)
        if profile.cookies:
            credentials["Cookie"] = self.cookies(profile)
        if profile.auth:
            credentials["Authorization"] = self.authorization(profile.auth)
        self.size += len(profile.user_agent) + sum(len(v) for v in credentials.values())
        if self.size > MAX_PROFILE_BYTES:
            raise self.fail("headers", f"headers and cookies exceed {MAX_PROFILE_BYTES} bytes")
        proxies = self.proxies(profile.proxy) if profile.proxy else None
        verify: bool | str | None = None
        if not profile.verify:
            verify = False
            _quiet_insecure_warnings()
        elif profile.ca_bundle:
            if not os.access(profile.ca_bundle, os.R_OK):
                raise self.fail("ca_bundle", f"{profile.ca_bundle}: not a readable file here")
            verify = profile.ca_bundle
        parts = urlsplit(self.source.url)
        return Resolved(
            headers=headers,
            credentials=credentials,
            proxies=proxies,
            verify=verify,
            host=_host(parts.scheme, parts.hostname, parts.port),
            https=parts.scheme == "https",
            secrets=tuple(sorted(set(self.secrets), key=len, reverse=True)),
        )

    def cookies(self, profile: RequestProfile) -> str:
        pairs = []
        for name, raw in profile.cookies:
            value = self.value(f"cookies.{name}", raw)
            if any(c in value for c in ';,\\"') or " " in value:
                raise self.fail(
                    f"cookies.{name}",
                    f'{raw} holds a character a cookie value cannot (; , \\ " or a space)',
                )
            pairs.append(f"{name}={value}")
        return "; ".join(pairs)

    def authorization(self, raw: str) -> str:
        value = self.value("auth", raw, ascii_only=False)
        scheme, space, rest = value.partition(" ")
        if space and rest and ":" not in scheme:
            if scheme.lower() == "basic" and ":" in rest:
                return self.basic(rest)
            if value.isascii():
                self.secret(rest.strip())
                return f"{scheme} {rest.strip()}"
        elif ":" in value:
            return self.basic(value)
        raise self.fail(
            "auth",
            f"{raw} must hold 'Bearer TOKEN', 'Basic USER:PASSWORD' or 'USER:PASSWORD', "
            "a token in ASCII (the value is not shown)",
        )

    def basic(self, user_password: str) -> str:
        _user, _, password = user_password.partition(":")
        encoded = base64.b64encode(user_password.encode("utf-8")).decode("ascii")
        self.secret(password, encoded)
        return f"Basic {encoded}"

    def proxies(self, raw: str) -> dict[str, str]:
        url = self.value("proxy", raw)
        problem = proxy_problem(url)
        if problem is not None:
            raise self.fail("proxy", f"{raw} does not hold a proxy URL: {problem}")
        parts = urlsplit(url)
        if parts.password:
            user = unquote(parts.username or "")
            password = unquote(parts.password)
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.secret(parts.password, password, encoded)
        if parts.scheme.startswith("socks") and importlib.util.find_spec("socks") is None:
            raise self.fail(
                "proxy", f"a {parts.scheme}:// proxy needs PySocks (pip install 'requests[socks]')"
            )
        return {"http": url, "https": url}


DEFAULT_PORTS = {"http": 80, "https": 443}


def _host(scheme: str, hostname: str | None, port: int | None) -> str:
    """``host[:port]``, the scheme's default port left out (``h:443`` is ``h`` for https)."""
    host = (hostname or "").lower()
    return f"{host}:{port}" if port and port != DEFAULT_PORTS.get(scheme) else host


_insecure_quiet = False


def _quiet_insecure_warnings() -> None:
    """A source with ``verify = false`` asked for it: urllib3's warning on every request of it
    would flood the log (status shows the source's ``verify: false``)."""
    global _insecure_quiet
    if not _insecure_quiet:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        _insecure_quiet = True
