"""Request profiles (issue 21 #5): a source's headers, cookies, user agent, credentials and
proxy reach a real local server through a real local proxy (HTTP forwarding, CONNECT to https
with the source's CA bundle, SOCKS5), each side checking what it received — and no secret
shows anywhere: status, text status, metrics, the dashboard's rows, stored state, key names,
logs (urllib3's included) or the poll's error."""

from __future__ import annotations

import base64
import json
import logging
import tomllib
from dataclasses import replace

import pytest

from tests.integration.test_secrets import _everything_shown
from tests.support.helpers import HTTPFixtureServer, respond
from tests.support.proxies import HttpProxy, Socks5Proxy, self_signed, serve_tls
from workers.ops.web.sources import source_rows
from workers.polling.politeness import host_keys
from workers.polling.poll import poll_now

TOKEN = "b3arer-planted-7f1"
API_KEY = "ap1key-planted-c2e"
SESSION = "s3ssion-planted-91d"
PROXY_USER, PROXY_PASSWORD = "proxyuser", "pr0xy-planted-55a"
AGENT = "Mozilla/5.0 (compatible; watchkeeper-test)"

FEED = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    "<item><title>One</title><link>https://example.org/1</link><guid>u1</guid></item>"
    "</channel></rss>"
)
SECRETS = (
    TOKEN,
    API_KEY,
    SESSION,
    PROXY_PASSWORD,
    base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode(),
)


def guarded(seen: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    """A route that answers the feed only with every header of the profile right."""

    def handler(req) -> None:  # type: ignore[no-untyped-def]
        headers = {k.lower(): v for k, v in req.headers.items()}
        seen.append(headers)
        ok = (
            headers.get("authorization") == f"Bearer {TOKEN}"
            and headers.get("x-api-key") == API_KEY
            and headers.get("cookie") == f"session={SESSION}"
            and headers.get("x-tenant") == "acme"
            and headers.get("user-agent") == AGENT
            and "proxy-authorization" not in headers
        )
        if ok:
            respond(req, 200, FEED, {"Content-Type": "application/rss+xml"})
        else:
            respond(req, 401, "who are you")

    return handler


def profile_toml(url: str, extra: str = "") -> str:
    return (
        f'[[feeds]]\nname = "private"\nurl = "{url}"\nlocate = false\n'
        f'user_agent = "{AGENT}"\nauth = "env:WK_SOURCE_T_AUTH"\n'
        f'proxy = "env:WK_SOURCE_T_PROXY"\n{extra}'
        '[feeds.headers]\nX-Tenant = "acme"\nX-Api-Key = "env:WK_SOURCE_T_KEY"\n'
        '[feeds.cookies]\nsession = "env:WK_SOURCE_T_SESSION"\n'
    )


@pytest.fixture
def rt(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    runtime.settings = replace(
        runtime.settings, host_delay=0.0, http_connect_timeout=2.0, http_read_timeout=5.0
    )
    monkeypatch.setenv("WK_SOURCE_T_AUTH", f"Bearer {TOKEN}")
    monkeypatch.setenv("WK_SOURCE_T_KEY", API_KEY)
    monkeypatch.setenv("WK_SOURCE_T_SESSION", SESSION)
    return runtime


@pytest.fixture
def proxy():  # type: ignore[no-untyped-def]
    server = HttpProxy(PROXY_USER, PROXY_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def socks():  # type: ignore[no-untyped-def]
    server = Socks5Proxy(PROXY_USER, PROXY_PASSWORD).start()
    yield server
    server.stop()


def assert_nothing_shown(rt, caplog, *more: object, secrets=SECRETS) -> None:  # type: ignore[no-untyped-def]
    shown = _everything_shown(rt) + caplog.text + json.dumps(source_rows(rt), default=str)
    shown += json.dumps(more, default=str)
    for secret in secrets:
        at = shown.find(secret)
        assert at < 0, shown[max(0, at - 300) : at + 50]


def test_headers_credentials_and_proxy_reach_the_server_and_no_secret_shows(
    rt, http_server, proxy, monkeypatch, caplog
):
    # Given a feed behind an HTTP proxy that demands its own credentials, whose server wants
    # a bearer token, an API key header, a session cookie, a tenant header and a user agent
    seen: list[dict[str, str]] = []
    http_server.route("/private.rss", guarded(seen))
    monkeypatch.setenv("WK_SOURCE_T_PROXY", proxy.url())
    rt.use_config(profile_toml(http_server.url("/private.rss")))
    caplog.set_level(logging.DEBUG)
    rt.settings = replace(rt.settings, host_delay=60.0)

    # When it is polled
    result = poll_now(rt, rt.config().get("private"))

    # Then the proxy let it through and the server got every header right
    assert result["status"] == "ok" and result["new"] == 1, result
    assert proxy.log.accepted == [http_server.url("/private.rss")] and not proxy.log.refused
    assert seen and seen[-1]["authorization"] == f"Bearer {TOKEN}"
    # and the politeness slot taken was the target host's, not the proxy's
    target = host_keys(rt.settings, f"127.0.0.1:{http_server.port}")[1]
    assert rt.redis.exists(target)
    assert not [k for k in rt.redis.scan_iter("wk:*") if str(proxy.port) in str(k)]
    # and status names the profile without a value
    status = rt.redis.hgetall("wk:src:private")
    assert status["last_status"] == "ok"
    from workers.ops.status import collect_status

    shown = collect_status(rt)["sources"]["private"]["request"]
    assert shown == {
        "headers": ["X-Api-Key", "X-Tenant"],
        "cookies": ["session"],
        "user_agent": True,
        "auth": "env:WK_SOURCE_T_AUTH",
        "proxy": "env:WK_SOURCE_T_PROXY",
    }
    assert_nothing_shown(rt, caplog, result)


def test_a_wrong_proxy_password_is_one_line_without_the_password(
    rt, http_server, proxy, monkeypatch, caplog
):
    seen: list[dict[str, str]] = []
    http_server.route("/private.rss", guarded(seen))
    monkeypatch.setenv("WK_SOURCE_T_PROXY", proxy.url(password=PROXY_PASSWORD + "x"))
    rt.use_config(profile_toml(http_server.url("/private.rss")))
    caplog.set_level(logging.DEBUG)
    result = poll_now(rt, rt.config().get("private"))
    assert result["status"] == "error" and "407" in result["error"], result
    assert not seen and proxy.log.refused  # the proxy refused, the server saw nothing
    assert "\n" not in result["error"]
    assert_nothing_shown(rt, caplog, result, secrets=(*SECRETS, PROXY_PASSWORD + "x"))


def test_https_through_a_connect_tunnel_with_the_sources_ca_bundle(
    rt, proxy, monkeypatch, caplog, tmp_path
):
    # Given an https server with a self-signed certificate, reached through the proxy
    cert, key = self_signed(tmp_path)
    server = HTTPFixtureServer()
    serve_tls(server, cert, key)
    seen: list[dict[str, str]] = []
    server.route("/private.rss", guarded(seen))
    server.start()
    try:
        url = f"https://127.0.0.1:{server.port}/private.rss"
        monkeypatch.setenv("WK_SOURCE_T_PROXY", proxy.url())
        caplog.set_level(logging.DEBUG)
        # When the source does not name the CA, the certificate is refused (verify is on)
        rt.use_config(profile_toml(url))
        refused = poll_now(rt, rt.config().get("private"))
        assert refused["status"] == "error" and "certificate" in refused["error"].lower()
        assert not seen
        # and with ca_bundle it goes through the tunnel, headers and all
        rt.use_config(profile_toml(url, f'ca_bundle = "{cert}"\n'))
        result = poll_now(rt, rt.config().get("private"))
        assert result["status"] == "ok" and result["new"] == 1, result
        assert f"127.0.0.1:{server.port}" in proxy.log.accepted  # a CONNECT
        # verify = false works too (and is shown in status)
        rt.use_config(profile_toml(url, "verify = false\n"))
        assert poll_now(rt, rt.config().get("private"))["status"] == "ok"
        assert_nothing_shown(rt, caplog, refused, result)
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_a_socks5_proxy_with_credentials(rt, http_server, socks, monkeypatch, caplog, scheme):  # type: ignore[no-untyped-def]
    seen: list[dict[str, str]] = []
    http_server.route("/private.rss", guarded(seen))
    monkeypatch.setenv("WK_SOURCE_T_PROXY", socks.url(scheme))
    rt.use_config(profile_toml(http_server.url("/private.rss")))
    caplog.set_level(logging.DEBUG)
    result = poll_now(rt, rt.config().get("private"))
    assert result["status"] == "ok" and result["new"] == 1, result
    assert socks.log.accepted == [f"127.0.0.1:{http_server.port}"] and seen
    assert_nothing_shown(rt, caplog, result)


def test_an_unset_variable_fails_the_poll_naming_source_and_variable_and_sends_nothing(
    rt, http_server, proxy, monkeypatch, caplog
):
    seen: list[dict[str, str]] = []
    http_server.route("/private.rss", guarded(seen))
    monkeypatch.setenv("WK_SOURCE_T_PROXY", proxy.url())
    monkeypatch.delenv("WK_SOURCE_T_KEY")
    rt.use_config(profile_toml(http_server.url("/private.rss")))
    source = rt.config().get("private")  # the file is valid without the secret
    result = poll_now(rt, source)
    assert result["status"] == "error"
    assert result["error"] == "headers.X-Api-Key: environment variable WK_SOURCE_T_KEY is not set"
    logged = [r.getMessage() for r in caplog.records if r.name == "workers.polling.poll"]
    assert len(logged) == 1 and logged[0].startswith(
        "[poll] source 'private': headers.X-Api-Key: environment variable WK_SOURCE_T_KEY "
        "is not set "
        "(error 1, next try in "
    )
    assert not seen and not proxy.log.accepted and not proxy.log.refused
    assert rt.redis.hget("wk:src:private", "next_check_reason") == "backoff (error 1)"


def test_credentials_go_only_to_the_sources_own_host(rt, http_server, monkeypatch):
    # Given a feed whose server redirects to another host (another port)
    other = HTTPFixtureServer()
    landed: list[dict[str, str]] = []

    def record(req) -> None:  # type: ignore[no-untyped-def]
        landed.append({k.lower(): v for k, v in req.headers.items()})
        respond(req, 200, FEED, {"Content-Type": "application/rss+xml"})

    other.route("/feed.rss", record)
    other.start()
    try:
        http_server.static("/private.rss", "", 302, {"Location": other.url("/feed.rss")})
        rt.use_config(
            profile_toml(http_server.url("/private.rss")).replace(
                'proxy = "env:WK_SOURCE_T_PROXY"\n', ""
            )
        )
        result = poll_now(rt, rt.config().get("private"))
        assert result["status"] == "ok", result
        # Then the other host got the plain headers but no credential
        assert landed[0]["x-tenant"] == "acme" and landed[0]["user-agent"] == AGENT
        for name in ("authorization", "cookie", "x-api-key"):
            assert name not in landed[0]
        # while the source's own host got them
        _, _, first = http_server.requests[-1]
        assert {k.lower(): v for k, v in first.items()}["authorization"] == f"Bearer {TOKEN}"
    finally:
        other.stop()


def test_a_site_sends_its_profile_with_robots_txt_and_every_page(rt, http_server, monkeypatch):
    from tests.integration.test_scrape import card, html_route, listing_html, site_toml

    monkeypatch.setenv("WK_SOURCE_T_AUTH", "reader:s3cret-pass")
    http_server.static("/robots.txt", "User-agent: *\nAllow: /\n")
    html_route(http_server, "/l", listing_html(card("w1"), next_href="/l2"))
    html_route(http_server, "/l2", listing_html(card("w2")))
    extra = 'auth = "env:WK_SOURCE_T_AUTH"\nheaders = { X-Tenant = "acme" }\n'
    rt.use_config(site_toml("shop", http_server.url("/l"), max_pages=2, robots=True, extra=extra))
    result = poll_now(rt, rt.config().get("shop"))
    assert result["status"] == "ok" and result["pages"] == 2, result
    basic = "Basic " + base64.b64encode(b"reader:s3cret-pass").decode()
    paths = [(p.split("?")[0], h) for _, p, h in http_server.requests]
    assert [p for p, _ in paths] == ["/robots.txt", "/l", "/l2"]
    for _, headers in paths:
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["authorization"] == basic and lower["x-tenant"] == "acme"


@pytest.mark.parametrize("kind", ["feed", "site"])
def test_a_poll_refuses_a_variable_no_source_may_read_even_if_the_registry_holds_it(
    rt, http_server, monkeypatch, caplog, kind
):
    """Defence in depth: a source that reached the registry another way (written with other
    settings, by hand) still never sends the worker's own secrets."""
    from tests.integration.test_scrape import site_toml
    from workers.core.sources_file import validate_config

    # Given the worker's Redis URL with a password, and any variable name allowed
    monkeypatch.setenv("REDIS_URL", f"redis://:{TOKEN}@127.0.0.1:1/0")
    rt.settings = replace(rt.settings, source_env="*")
    http_server.static("/x", FEED, headers={"Content-Type": "application/rss+xml"})
    url = http_server.url("/x")
    extra = 'auth = "env:REDIS_URL"\n'
    text = site_toml("grab", url, extra=extra) if kind == "site" else profile_toml(url)
    if kind == "feed":
        text = text.replace("env:WK_SOURCE_T_KEY", "env:REDIS_URL")
    source = validate_config(tomllib.loads(text)).sources[0]
    # When it is polled
    result = poll_now(rt, source)
    # Then the poll fails with one line naming the field and the variable, before any request
    assert result["status"] == "error", result
    where = "auth" if kind == "site" else "headers.X-Api-Key"
    assert f"{where}: environment variable REDIS_URL cannot be read by a source" in result["error"]
    assert not http_server.requests
    assert TOKEN not in caplog.text + json.dumps(result)
