"""A source's request profile, as the sources file writes it: headers, cookies, user agent,
credentials, proxy and TLS verification — validated here, resolved from the environment only
when a poll fetches (``workers.polling.profile``).

Secrets are never written in the file: ``auth``, cookie values and any header named like a
credential (Authorization, Cookie, X-Api-Key, …token…, …secret…) must be ``env:NAME``, and a
proxy URL may be written inline only without user info. The same rule as notification sinks,
so a sources file can be committed and shown. An unset variable is not a problem of the file
(status, the dashboard and beat must not need the secret): ``check`` warns, and the poll fails
with one line naming the source, the field and the variable.

Bounded: at most ``MAX_PROFILE_HEADERS`` headers and cookies, ``MAX_PROFILE_BYTES`` bytes of
names and values in all (checked again on the values read from the environment).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "env:"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
"""An HTTP header or cookie name (RFC 9110 token)."""

MAX_PROFILE_HEADERS = 32
"""Headers and cookies of one source, together."""
MAX_PROFILE_BYTES = 8192
"""Bytes of header and cookie names and values, user agent and credentials of one source."""

SECRET_HEADER_RE = re.compile(
    r"(auth|cookie|token|secret|pass(word|wd)?|api[-_]?key|apikey|session|signature|credential)",
    re.I,
)
"""Header names whose values are credentials: only ``env:NAME``."""

CONTROLLED = {
    "host": "set from the URL",
    "content-length": "set by the request",
    "transfer-encoding": "set by the request",
    "connection": "managed by the connection pool",
    "keep-alive": "managed by the connection pool",
    "te": "managed by the connection pool",
    "upgrade": "managed by the connection pool",
    "trailer": "set by the request",
    "proxy-authorization": 'write the credentials in the proxy URL (proxy = "env:NAME")',
    "proxy-connection": "managed by the proxy support",
    "if-none-match": "conditional GET is automatic",
    "if-modified-since": "conditional GET is automatic",
    "accept-encoding": "set by the fetch layer, which decodes and caps the body",
    "user-agent": 'use user_agent = "…"',
}
"""Headers a profile may not set, and why."""

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")


@dataclass(frozen=True)
class RequestProfile:
    """What a source adds to each of its requests (all optional; the default is empty).

    ``headers``/``cookies`` are ``(name, value)`` pairs, a value either literal or
    ``env:NAME``; ``auth`` and a proxy with credentials are ``env:NAME``. Nothing here is a
    secret: those stay in the environment until a poll reads them."""

    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()
    user_agent: str = ""
    auth: str = ""
    proxy: str = ""
    verify: bool = True
    ca_bundle: str = ""

    @property
    def empty(self) -> bool:
        return self == EMPTY_PROFILE

    def variables(self) -> list[tuple[str, str]]:
        """Every ``(field, variable)`` the profile reads from the environment."""
        out = [(f"headers.{n}", v[len(ENV_PREFIX) :]) for n, v in self.headers if is_env(v)]
        out += [(f"cookies.{n}", v[len(ENV_PREFIX) :]) for n, v in self.cookies if is_env(v)]
        refs = (("auth", self.auth), ("proxy", self.proxy))
        out += [(name, v[len(ENV_PREFIX) :]) for name, v in refs if is_env(v)]
        return out

    def summary(self) -> dict[str, Any]:
        """What ``status`` and the dashboard show: names and variable names, never a value."""
        out: dict[str, Any] = {}
        if self.headers:
            out["headers"] = sorted(name for name, _ in self.headers)
        if self.cookies:
            out["cookies"] = sorted(name for name, _ in self.cookies)
        if self.user_agent:
            out["user_agent"] = True
        if self.auth:
            out["auth"] = self.auth
        if self.proxy:
            out["proxy"] = self.proxy if is_env(self.proxy) else _proxy_label(self.proxy)
        if not self.verify:
            out["verify"] = False
        if self.ca_bundle:
            out["ca_bundle"] = self.ca_bundle
        return out


EMPTY_PROFILE = RequestProfile()


def is_env(value: str) -> bool:
    return value.startswith(ENV_PREFIX)


def is_secret_header(name: str) -> bool:
    return bool(SECRET_HEADER_RE.search(name))


def _proxy_label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def profile_of(table: Mapping[str, Any]) -> RequestProfile:
    """The request profile a (validated) table holds, for its names: nothing is resolved."""

    def pairs(value: Any) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in value.items()) if isinstance(value, dict) else ()

    return RequestProfile(
        headers=pairs(table.get("headers")),
        cookies=pairs(table.get("cookies")),
        user_agent=str(table.get("user_agent") or ""),
        auth=str(table.get("auth") or ""),
        proxy=str(table.get("proxy") or ""),
        verify=table.get("verify") is not False,
        ca_bundle=str(table.get("ca_bundle") or ""),
    )


def unset_variables(profile: RequestProfile, environ: Mapping[str, str]) -> list[str]:
    """``field: environment variable NAME is not set`` for each variable missing here."""
    return [
        f"{where}: environment variable {var} is not set"
        for where, var in profile.variables()
        if not environ.get(var)
    ]


# --- reading ----------------------------------------------------------------------------------


class ProfileReader:
    """Reads the profile fields of one source table through the sources file's reader
    (anything with ``get(name, type, default)`` and ``problem(name, text)``)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.size = 0

    def read(self) -> RequestProfile:
        f = self.f
        headers = self._pairs("headers", self._header)
        cookies = self._pairs("cookies", self._cookie)
        if len(headers) + len(cookies) > MAX_PROFILE_HEADERS:
            f.problem("headers", f"more than {MAX_PROFILE_HEADERS} headers and cookies")
        user_agent = f.get("user_agent", str, "")
        if user_agent and not _printable(user_agent):
            f.problem("user_agent", "must be one line of printable characters")
        self.size += len(user_agent)
        auth = f.get("auth", str, "")
        if auth:
            self._env_only("auth", auth, "a credential ('Bearer TOKEN', 'Basic USER:PASSWORD')")
        proxy = self._proxy(f.get("proxy", str, ""))
        verify = f.get("verify", bool, True)
        ca_bundle = f.get("ca_bundle", str, "")
        if ca_bundle and not verify:
            f.problem("ca_bundle", "has no use with verify = false")
        if ca_bundle and not Path(ca_bundle).is_absolute():
            f.problem("ca_bundle", f"{ca_bundle!r} must be an absolute path")
        if any(name.lower() == "cookie" for name, _ in headers) and cookies:
            f.problem("headers.Cookie", "give either a Cookie header or cookies = {…}, not both")
        if any(name.lower() == "authorization" for name, _ in headers) and auth:
            f.problem("headers.Authorization", "give either an Authorization header or auth")
        if self.size > MAX_PROFILE_BYTES:
            f.problem("headers", f"headers and cookies exceed {MAX_PROFILE_BYTES} bytes")
        return RequestProfile(
            headers=headers,
            cookies=cookies,
            user_agent=user_agent,
            auth=auth,
            proxy=proxy,
            verify=verify,
            ca_bundle=ca_bundle,
        )

    def _pairs(self, field: str, check: Any) -> tuple[tuple[str, str], ...]:
        table = self.f.get(field, dict, {})
        out = []
        for name, value in table.items():
            where = f"{field}.{name}"
            if not isinstance(value, str):
                self.f.problem(where, "expected a string")
                continue
            if check(where, name, value):
                out.append((name, value))
                self.size += len(name) + len(value)
        return tuple(out)

    def _header(self, where: str, name: str, value: str) -> bool:
        if not TOKEN_RE.match(name):
            self.f.problem(where, "not a valid header name")
            return False
        why = CONTROLLED.get(name.lower())
        if why is not None:
            self.f.problem(where, f"cannot be set here: {why}")
            return False
        if is_secret_header(name) or is_env(value):
            return self._env_only(where, value, "a credential")
        if not _printable(value):
            self.f.problem(where, "must be one line of printable ASCII")
            return False
        return True

    def _cookie(self, where: str, name: str, value: str) -> bool:
        if not TOKEN_RE.match(name):
            self.f.problem(where, "not a valid cookie name")
            return False
        return self._env_only(where, value, "a cookie value")

    def _env_only(self, where: str, value: str, what: str) -> bool:
        if not is_env(value):
            self.f.problem(
                where,
                f'{what} goes only through the environment: write "env:NAME" '
                "(the value is not shown)",
            )
            return False
        if not ENV_NAME_RE.match(value[len(ENV_PREFIX) :]):
            self.f.problem(where, f"{value!r} is not an environment variable name")
            return False
        return True

    def _proxy(self, proxy: str) -> str:
        if not proxy or is_env(proxy):
            return proxy if not proxy or self._env_only("proxy", proxy, "a proxy") else ""
        problem = proxy_problem(proxy)
        if problem is None and "@" in urlsplit(proxy).netloc:
            problem = (
                "a proxy URL with credentials goes only through the environment: write "
                '"env:NAME" (the value is not shown)'
            )
        if problem is not None:
            self.f.problem("proxy", problem)
            return ""
        return proxy


def proxy_problem(url: str) -> str | None:
    """Why ``url`` is no proxy URL; never quotes it (it may hold credentials)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return "not a proxy URL (scheme://host:port)"
    if parts.scheme not in PROXY_SCHEMES:
        return f"the scheme must be one of {', '.join(PROXY_SCHEMES)}"
    if not parts.hostname:
        return "not a proxy URL (scheme://host:port)"
    return None


def _printable(value: str) -> bool:
    """One line of printable ASCII without surrounding space: what a header value may be."""
    return value.isascii() and value.isprintable() and value == value.strip()
