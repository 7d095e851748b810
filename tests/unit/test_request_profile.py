"""Request profiles in the sources file (issue 21 #5): what is accepted, one line per problem
naming the source and the field — never the secret written inline — and how a poll resolves
the environment (``workers.polling.profile``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from workers.core.request_profile import MAX_PROFILE_HEADERS, unset_variables
from workers.core.settings import Settings
from workers.core.sources_file import ConfigError, validate_config
from workers.polling.dispatch import source_entry
from workers.polling.errors import SourceProblem
from workers.polling.profile import NO_PROFILE, resolve

PLANTED = "planted-s3cret-value"


def feed(**fields: object) -> dict:
    return {"feeds": [{"name": "f", "url": "https://feeds.example.org/f.rss", **fields}]}


def problems(**fields: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_config(feed(**fields))
    return err.value.problems


def test_a_full_profile_is_read_for_every_kind():
    config = validate_config(
        {
            "feeds": [
                {
                    "name": "f",
                    "url": "https://feeds.example.org/f.rss",
                    "headers": {"X-Tenant": "acme", "Authorization": "env:F_AUTH"},
                    "cookies": {"session": "env:F_SESSION"},
                    "user_agent": "Mozilla/5.0 (X11)",
                    "proxy": "env:F_PROXY",
                    "ca_bundle": "/etc/ssl/private-ca.pem",
                    "interval": "5m",
                    "interval_min": "1m",
                    "interval_max": "2h",
                    "honour_cache": False,
                }
            ],
            "http_logs": [{"name": "l", "url": "http://h/l", "auth": "env:L_AUTH"}],
            "sites": [
                {
                    "name": "s",
                    "url": "http://h/s",
                    "item": "div",
                    "id": "ref",
                    "fields": {"ref": ".ref"},
                    "proxy": "socks5h://127.0.0.1:9050",
                    "verify": False,
                }
            ],
        }
    )
    f, log, site = (config.get(n) for n in ("f", "l", "s"))
    assert f is not None and log is not None and site is not None
    assert f.request.headers == (("X-Tenant", "acme"), ("Authorization", "env:F_AUTH"))
    assert f.request.cookies == (("session", "env:F_SESSION"),)
    assert (f.interval_min, f.interval, f.interval_max, f.honour_cache) == (60, 300, 7200, False)
    assert log.request.auth == "env:L_AUTH" and log.honour_cache
    assert site.request.proxy == "socks5h://127.0.0.1:9050" and not site.request.verify
    assert site.request.summary() == {"proxy": "socks5h://127.0.0.1:9050", "verify": False}


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"headers": {"Authorization": f"Bearer {PLANTED}"}}, "headers.Authorization"),
        ({"headers": {"X-Api-Key": PLANTED}}, "headers.X-Api-Key"),
        ({"headers": {"X-Session-Token": PLANTED}}, "headers.X-Session-Token"),
        ({"headers": {"Cookie": f"sid={PLANTED}"}}, "headers.Cookie"),
        ({"cookies": {"sid": PLANTED}}, "cookies.sid"),
        ({"auth": f"user:{PLANTED}"}, "auth"),
        ({"proxy": f"http://user:{PLANTED}@proxy.example.org:3128"}, "proxy"),
    ],
)
def test_a_secret_written_inline_is_one_line_naming_source_and_field_not_the_value(fields, line):
    found = problems(**fields)
    assert len(found) == 1
    assert found[0].startswith(f"source 'f': {line}: ") and "env:NAME" in found[0]
    assert PLANTED not in found[0]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"headers": {"Host": "x"}}, "source 'f': headers.Host: cannot be set here"),
        ({"headers": {"User-Agent": "x"}}, "headers.User-Agent: cannot be set here: use user_"),
        ({"headers": {"Accept-Encoding": "br"}}, "headers.Accept-Encoding: cannot be set here"),
        ({"headers": {"If-None-Match": "x"}}, "headers.If-None-Match: cannot be set here"),
        ({"headers": {"Bad Name": "x"}}, "headers.Bad Name: not a valid header name"),
        ({"headers": {"X-A": "two\nlines"}}, "headers.X-A: must be one line"),
        ({"headers": {"X-A": 3}}, "headers.X-A: expected a string"),
        ({"headers": {"X-A": "env:1BAD"}}, "headers.X-A: 'env:1BAD' is not an environment"),
        ({"auth": "env:A", "headers": {"Authorization": "env:B"}}, "either an Authorization"),
        ({"cookies": {"a": "env:A"}, "headers": {"Cookie": "env:B"}}, "either a Cookie header"),
        ({"proxy": "ftp://proxy:21"}, "proxy: the scheme must be one of http, https, socks5"),
        ({"proxy": "http://"}, "proxy: not a proxy URL"),
        ({"verify": False, "ca_bundle": "/ca.pem"}, "ca_bundle: has no use with verify = false"),
        ({"ca_bundle": "ca.pem"}, "ca_bundle: 'ca.pem' must be an absolute path"),
        ({"verify": "no"}, "verify: expected bool"),
        ({"user_agent": "a\tb"}, "user_agent: must be one line"),
        ({"headers": {"X-A": "naïve"}}, "headers.X-A: must be one line of printable ASCII"),
        ({"interval": "5m", "interval_min": "10m"}, "interval_min: 600s is longer than the"),
        ({"interval": "5m", "interval_max": "1m"}, "interval_max: 60s is shorter than the"),
        ({"interval_max": "soon"}, "interval_max: 'soon' is not a duration"),
        ({"honour_cache": "yes"}, "honour_cache: expected bool"),
    ],
)
def test_each_bad_profile_field_is_one_line(fields, line):
    found = problems(**fields)
    assert len(found) == 1 and line in found[0], found


def test_headers_and_cookies_are_capped_in_count_and_bytes():
    many = {f"X-H{i}": "v" for i in range(MAX_PROFILE_HEADERS + 1)}
    assert any("more than 32 headers and cookies" in p for p in problems(headers=many))
    big = {"X-A": "v" * 5000, "X-B": "v" * 5000}
    assert any("exceed 8192 bytes" in p for p in problems(headers=big))


def test_an_unset_variable_is_not_a_problem_of_the_file_but_is_listed_for_check():
    config = validate_config(
        feed(auth="env:WK_SOURCE_UNSET_AUTH", headers={"X-Key": "env:WK_SOURCE_UNSET_K"})
    )
    source = config.sources[0]
    assert unset_variables(source.request, {"WK_SOURCE_UNSET_K": "1"}) == [
        "auth: environment variable WK_SOURCE_UNSET_AUTH is not set"
    ]


def test_check_warns_of_an_unset_variable_and_still_exits_0(write_config):
    from tests.unit.test_config import _check

    path = write_config(
        '[[feeds]]\nname = "f"\nurl = "https://e.org/f"\nauth = "env:WK_SOURCE_CHECK_UNSET_AUTH"\n'
    )
    proc = _check("--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (
        "warning: source 'f': auth: environment variable WK_SOURCE_CHECK_UNSET_AUTH is not set "
        "here "
        "(its polls fail until it is)"
    )


def test_a_changed_profile_or_clamp_makes_the_source_due_again():
    settings = Settings.from_env({})
    base = validate_config(feed()).sources[0]
    first = source_entry(settings, base, "t").fingerprint
    changes = [
        {"headers": {"X-Tenant": "a"}},
        {"headers": {"X-Tenant": "b"}},
        {"auth": "env:OTHER"},
        {"proxy": "http://127.0.0.1:3128"},
        {"verify": False},
        {"interval_max": "1h"},
        {"honour_cache": False},
    ]
    prints = {
        source_entry(settings, validate_config(feed(**c)).sources[0], "t").fingerprint
        for c in changes
    }
    assert first not in prints and len(prints) == len(changes)
    # a source without the new fields keeps the fingerprint it had before they existed
    from workers.polling.dispatch import fingerprint

    old = {"name": "f", "url": base.url, "interval": base.interval, "locate": True}
    old |= {"sanitize_html": False, "resolve_relative_uris": False, "tags": ()}
    assert first == fingerprint("feed", "t", old)


# --- resolving at poll time -------------------------------------------------------------------


def resolved(env: dict[str, str], **fields: object):  # type: ignore[no-untyped-def]
    return resolve(validate_config(feed(**fields)).sources[0], env)


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("Bearer abc.def", "Bearer abc.def"),
        ("bearer abc", "bearer abc"),
        ("Basic user:pa ss", "Basic " + base64.b64encode(b"user:pa ss").decode()),
        ("user:pa:ss", "Basic " + base64.b64encode(b"user:pa:ss").decode()),
        ("Token xyz123", "Token xyz123"),
        ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
        ("usér:pässword", "Basic " + base64.b64encode("usér:pässword".encode()).decode()),
    ],
)
def test_auth_value_formats(value, header):
    profile = resolved({"WK_SOURCE_A": value}, auth="env:WK_SOURCE_A")
    assert profile.headers_for("https://feeds.example.org/x")["Authorization"] == header


def test_an_auth_value_in_no_known_format_is_one_line_without_the_value():
    with pytest.raises(SourceProblem) as err:
        resolved({"WK_SOURCE_A": PLANTED}, auth="env:WK_SOURCE_A")
    assert str(err.value) == (
        "auth: env:WK_SOURCE_A must hold 'Bearer TOKEN', 'Basic USER:PASSWORD' or "
        "'USER:PASSWORD', a token in ASCII (the value is not shown)"
    )


@pytest.mark.parametrize(
    ("env", "fields", "line"),
    [
        ({}, {"auth": "env:WK_SOURCE_A"}, "auth: environment variable WK_SOURCE_A is not set"),
        (
            {},
            {"cookies": {"s": "env:WK_SOURCE_S"}},
            "cookies.s: environment variable WK_SOURCE_S is not set",
        ),
        (
            {"WK_SOURCE_P": ""},
            {"proxy": "env:WK_SOURCE_P"},
            "proxy: environment variable WK_SOURCE_P is not set",
        ),
        (
            {"WK_SOURCE_K": f"{PLANTED}\r\nX: y"},
            {"headers": {"X-K": "env:WK_SOURCE_K"}},
            "holds a control char",
        ),
        (
            {"WK_SOURCE_S": f"a;{PLANTED}"},
            {"cookies": {"s": "env:WK_SOURCE_S"}},
            "env:WK_SOURCE_S holds a character",
        ),
        (
            {"WK_SOURCE_P": f"ftp://u:{PLANTED}@h"},
            {"proxy": "env:WK_SOURCE_P"},
            "env:WK_SOURCE_P does not hold a proxy URL",
        ),
        ({}, {"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle: /nonexistent/ca.pem: not a read"),
        (
            {"WK_SOURCE_K": "v" * 9000},
            {"headers": {"X-K": "env:WK_SOURCE_K"}},
            "headers: headers and cookies exceed",
        ),
        (
            {"WK_SOURCE_K": f"{PLANTED}é"},
            {"headers": {"X-K": "env:WK_SOURCE_K"}},
            "WK_SOURCE_K holds a non-ASCII character",
        ),
        ({"WK_SOURCE_A": f"Bearer {PLANTED}é"}, {"auth": "env:WK_SOURCE_A"}, "a token in ASCII"),
    ],
)
def test_what_the_environment_holds_is_checked_at_poll_time(env, fields, line):
    with pytest.raises(SourceProblem) as err:
        resolved(env, **fields)
    assert line in str(err.value) and PLANTED not in str(err.value)


def test_credentials_only_to_the_sources_host_and_never_downgraded_to_http():
    profile = resolved(
        {"WK_SOURCE_A": "Bearer t0ken", "WK_SOURCE_S": "c00kie", "WK_SOURCE_K": "k3y"},
        auth="env:WK_SOURCE_A",
        cookies={"s": "env:WK_SOURCE_S"},
        headers={"X-Key": "env:WK_SOURCE_K", "X-Plain": "p"},
        user_agent="UA",
    )
    own = profile.headers_for("https://FEEDS.example.org:443/other?page=2")
    assert own == {
        "User-Agent": "UA",
        "X-Plain": "p",
        "X-Key": "k3y",
        "Cookie": "s=c00kie",
        "Authorization": "Bearer t0ken",
    }
    plain = {"User-Agent": "UA", "X-Plain": "p"}
    assert profile.headers_for("https://cdn.example.org/f.rss") == plain
    assert profile.headers_for("https://feeds.example.org:8443/f.rss") == plain
    assert profile.headers_for("http://feeds.example.org/f.rss") == plain
    assert set(profile.secrets) >= {"Bearer t0ken", "t0ken", "c00kie", "k3y"}


def test_proxy_credentials_are_secrets_and_an_empty_profile_costs_nothing():
    profile = resolved({"WK_SOURCE_P": "http://u:p%40ss@127.0.0.1:3128"}, proxy="env:WK_SOURCE_P")
    assert profile.proxies == {"http": "http://u:p%40ss@127.0.0.1:3128"} | {
        "https": "http://u:p%40ss@127.0.0.1:3128"
    }
    assert {"p%40ss", "p@ss", base64.b64encode(b"u:p@ss").decode()} <= set(profile.secrets)
    shown = profile.redact("proxy http://u:p%40ss@127.0.0.1:3128 refused p@ss")
    assert shown == "proxy http://u:***@127.0.0.1:3128 refused ***"
    assert resolve(validate_config(feed()).sources[0], {}) is NO_PROFILE


def test_a_ca_bundle_is_passed_on_and_verify_false_too(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert resolved({}, ca_bundle=str(ca)).verify == str(ca)
    assert resolved({}, verify=False).verify is False
    assert NO_PROFILE.verify is None and NO_PROFILE.proxies is None


# --- which variables a source may read (WATCHKEEPER_SOURCE_ENV) -----------------------------


@pytest.mark.parametrize(
    ("fields", "where", "var"),
    [
        ({"auth": "env:REDIS_URL"}, "auth", "REDIS_URL"),
        ({"headers": {"X-Api-Key": "env:WATCHKEEPER_WEB_TOKEN"}}, "headers.X-Api-Key", None),
        ({"headers": {"X-Tenant": "env:WATCHKEEPER_API_TOKEN"}}, "headers.X-Tenant", None),
        ({"cookies": {"s": "env:MOONSHOT_API_KEY"}}, "cookies.s", "MOONSHOT_API_KEY"),
        ({"proxy": "env:CELERY_BROKER_URL"}, "proxy", "CELERY_BROKER_URL"),
        ({"auth": "env:redis_password"}, "auth", "redis_password"),
    ],
)
def test_a_poll_never_reads_watchkeepers_own_variables_even_with_any_name_allowed(
    fields, where, var
):
    from workers.core.source_env import EnvPolicy

    var = var or fields["headers"][where.split(".")[1]][4:]  # type: ignore[index]
    env = {var: f"Bearer {PLANTED}"}
    # Given a policy allowing any name (a single-user setup), then the default one
    for policy in (EnvPolicy(("*",)), EnvPolicy(), None):
        # When a source naming one of watchkeeper's own variables is polled
        with pytest.raises(SourceProblem) as err:
            resolve(validate_config(feed(**fields)).sources[0], env, policy)
        # Then the poll fails with one line naming the field and the variable, no value
        line = str(err.value)
        assert line.startswith(f"{where}: environment variable {var} cannot be read by a source")
        assert PLANTED not in line


def test_only_the_variables_the_setting_allows_are_read():
    from workers.core.source_env import EnvPolicy

    env = {"MEMBERS_AUTH": "Bearer t0ken", "WK_SOURCE_AUTH": "Bearer t0ken"}
    source = validate_config(feed(auth="env:MEMBERS_AUTH")).sources[0]
    with pytest.raises(SourceProblem) as err:
        resolve(source, env)  # the default: WK_SOURCE_* only
    assert str(err.value) == (
        "auth: environment variable MEMBERS_AUTH cannot be read by a source "
        "(WATCHKEEPER_SOURCE_ENV allows WK_SOURCE_*)"
    )
    allowed = EnvPolicy(("WK_SOURCE_*", "MEMBERS_*"))
    assert resolve(source, env, allowed).credentials["Authorization"] == "Bearer t0ken"
    default = validate_config(feed(auth="env:WK_SOURCE_AUTH")).sources[0]
    assert resolve(default, env).credentials["Authorization"] == "Bearer t0ken"
    # a sink's variable is refused whatever the patterns allow
    sink = EnvPolicy(("*",), frozenset({"MEMBERS_AUTH"}))
    with pytest.raises(SourceProblem, match="a notification sink's URL is in it"):
        resolve(source, env, sink)


def test_the_setting_is_patterns_and_a_bad_one_is_one_line():
    from workers.core.settings import SettingsError

    settings = Settings.from_env({"WATCHKEEPER_SOURCE_ENV": " WK_SOURCE_*, FEED_?_KEY ,"})
    assert settings.source_env_patterns == ("WK_SOURCE_*", "FEED_?_KEY")
    assert Settings.from_env({}).source_env_patterns == ("WK_SOURCE_*",)
    with pytest.raises(SettingsError, match=r"WATCHKEEPER_SOURCE_ENV=.*'A\$B' is not a pattern"):
        Settings.from_env({"WATCHKEEPER_SOURCE_ENV": "A$B"})


def test_check_refuses_a_variable_no_source_may_read_and_a_sinks_variable(write_config):
    from tests.unit.test_config import _check

    # Given a file whose source reads the Redis URL, and one reading a sink's variable
    path = write_config(
        '[[feeds]]\nname = "f"\nurl = "https://e.org/f"\nauth = "env:REDIS_URL"\n'
        '[[feeds]]\nname = "g"\nurl = "https://e.org/g"\n'
        '[feeds.headers]\nX-Hook = "env:WK_SOURCE_HOOK"\n'
        '[[notify]]\nname = "ops"\nurls = ["env:WK_SOURCE_HOOK"]\n'
    )
    proc = _check("--config", str(path))
    # Then check fails with one line for each, naming the source, the field and the variable
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "source 'f': auth: environment variable REDIS_URL cannot be read by a source "
        "(REDIS_* holds watchkeeper's own settings and secrets)",
        "source 'g': headers.X-Hook: environment variable WK_SOURCE_HOOK cannot be read by a "
        "source (a notification sink's URL is in it)",
    ]
