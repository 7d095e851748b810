"""The fetch session reads the environment once when requests would find nothing in it per
request, and leaves proxies and netrc to requests whenever they are there."""

from __future__ import annotations

import requests

from workers.polling.fetch import PROXY_VARIABLES, _environment_once


def _clean(monkeypatch, tmp_path) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)


def test_without_proxies_or_netrc_the_environment_is_read_once(monkeypatch, tmp_path):
    # Given no proxy variables, no netrc file and a CA bundle named in the environment
    _clean(monkeypatch, tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    session = requests.Session()
    # When the session is set up
    _environment_once(session)
    # Then requests no longer scans the environment per request, and the bundle still applies
    assert session.trust_env is False
    assert session.verify == str(tmp_path / "ca.pem")


def test_a_proxy_variable_or_a_netrc_file_leaves_the_environment_to_requests(monkeypatch, tmp_path):
    # Given a proxy variable (any case), then a netrc file
    _clean(monkeypatch, tmp_path)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    with_proxy = requests.Session()
    _environment_once(with_proxy)
    monkeypatch.delenv("HTTPS_PROXY")
    (tmp_path / ".netrc").write_text("machine example.org login a password b\n")
    with_netrc = requests.Session()
    _environment_once(with_netrc)
    # Then requests keeps reading the environment (no_proxy, netrc credentials) itself
    assert with_proxy.trust_env is True and with_netrc.trust_env is True
