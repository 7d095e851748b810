"""Sentinel URLs (issue 20): both forms parse to one target; Celery, redis-py and messages get
what each needs from it; credentials never show."""

from __future__ import annotations

import ssl

import pytest

from workers.celery_app import celery_config
from workers.core import sentinel
from workers.core.connection import shown, tls_options, url_for
from workers.core.redact import redact_text, redact_url
from workers.core.settings import Settings, SettingsError


def test_the_one_url_form_names_sentinels_master_and_database() -> None:
    t = sentinel.parse("sentinel://:pw@h1:26379,h2:26380,[::1]/mymaster/3")
    assert t.sentinels == (("h1", 26379), ("h2", 26380), ("::1", 26379))
    assert (t.master, t.db, t.password, t.username) == ("mymaster", 3, "pw", None)
    assert t.sentinel_password is None and not t.tls


def test_the_kombu_form_takes_its_master_from_the_setting() -> None:
    t = sentinel.parse("sentinel://:pw@h1:26379/2;sentinel://:pw@h2:26379", master="mm")
    assert t.sentinels == (("h1", 26379), ("h2", 26379))
    assert (t.master, t.db, t.password) == ("mm", 2, "pw")
    assert sentinel.parse("sentinel://h1;sentinel://h2/4", master="mm").db == 4


def test_sentinel_and_server_passwords_are_separate() -> None:
    t = sentinel.parse("sentinel://u:data@h1/m?sentinel_password=sent&sentinel_username=su")
    assert t.data_kwargs() == {"db": 0, "password": "data", "username": "u"}
    kwargs = t.sentinel_kwargs(2)
    assert kwargs["password"] == "sent" and kwargs["username"] == "su"
    from_setting = sentinel.parse("sentinel://:data@h1/m", sentinel_password="fromenv")
    assert from_setting.sentinel_password == "fromenv" and from_setting.password == "data"
    assert "password" not in sentinel.parse("sentinel://:data@h1/m").sentinel_kwargs(2)


def test_sentinels_scheme_is_tls_with_rediss_options() -> None:
    url = "sentinels://:pw@h1/m/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none"
    t = sentinel.parse(url)
    assert t.tls
    assert t.ssl_kwargs() == {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": ssl.CERT_NONE}
    assert t.sentinel_kwargs(2)["ssl"] is True
    assert tls_options(url) == t.ssl_kwargs()
    assert tls_options("sentinel://h1/m") is None
    assert sentinel.parse("sentinels://h1/m").ssl_kwargs()["ssl_cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sentinel://h1:26379", "no master name"),
        ("sentinel://h1:x/m", "bad port"),
        ("sentinel://h1/a/b/c", "path must be /master/db"),
        ("sentinel://h1/m/x", "is not a number"),
        ("sentinel://h1/m?bogus=1", "unknown option 'bogus'"),
        ("sentinel://h1/m;redis://h2", "must be a sentinel:// URL"),
        ("sentinel:///m", "no Sentinel address"),
        ("sentinel://h1/m1?master_name=m2", "names two masters"),
        ("sentinel://h1/1;sentinel://h2/2", "different databases"),
        ("sentinel://h1/m;sentinels://h2/m", "mixes"),
    ],
)
def test_a_bad_sentinel_url_is_one_line_naming_the_problem(url: str, why: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"REDIS_URL": url.replace("h1", ":secret@h1", 1)})
    message = str(err.value)
    assert why in message and "\n" not in message and "secret" not in message
    assert message.startswith("REDIS_URL=")


def test_a_setting_conflicting_with_the_url_is_refused() -> None:
    with pytest.raises(SettingsError, match="WATCHKEEPER_SENTINEL_MASTER"):
        Settings.from_env({"REDIS_URL": "sentinel://h1/m1", "WATCHKEEPER_SENTINEL_MASTER": "m2"})


def test_the_settings_are_folded_into_one_complete_url() -> None:
    env = {
        "REDIS_URL": "sentinel://:p%40w@h1:26379;sentinel://h2:26380/5",
        "WATCHKEEPER_SENTINEL_MASTER": "mm",
        "WATCHKEEPER_SENTINEL_PASSWORD": "spw",
    }
    url = url_for(Settings.from_env(env))
    assert url == "sentinel://:p%40w@h1:26379,h2:26380/mm/5?sentinel_password=spw"
    again = sentinel.parse(url)
    assert (again.password, again.sentinel_password, again.master, again.db) == (
        "p@w",
        "spw",
        "mm",
        5,
    )


def test_celery_gets_kombus_form_transport_options_and_retries() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "sentinel://:pw@h1,h2:26380/mm/1?sentinel_password=s"}
    )
    config = celery_config(settings, url_for(settings))
    assert config["broker_url"] == "sentinel://:pw@h1:26379/1"
    assert config["result_backend"] == "sentinel://:pw@h1:26379/1;sentinel://:pw@h2:26380/1"
    options = config["broker_transport_options"]
    assert isinstance(options, dict)
    assert options["sentinels"] == [["h1", 26379], ["h2", 26380]]
    assert options["master_name"] == "mm" and options["sentinel_kwargs"]["password"] == "s"
    assert options["visibility_timeout"] == settings.visibility_timeout
    assert options["socket_keepalive"] and options["health_check_interval"] > 0
    backend = config["result_backend_transport_options"]
    assert isinstance(backend, dict) and backend["master_name"] == "mm"
    assert config["broker_channel_error_retry"] is True
    assert config["broker_transport"] == "workers.core.broker:SentinelTransport"


def test_credentials_never_show() -> None:
    url = "sentinel://:pw1@h1:26379/0;sentinel://:pw1@h2:26379/0"
    assert "pw1" not in redact_url(url) and "pw1" not in redact_text(f"error at {url}")
    full = "sentinel://u:pw1@h1,h2/m/0?sentinel_password=pw2"
    for text in (redact_url(full), redact_text(full), shown(full)):
        assert "pw1" not in text and "pw2" not in text
    assert shown(full) == "sentinel://h1:26379,h2:26379/m/0"


def test_failover_retry_spans_about_the_wait() -> None:
    retry = sentinel.failover_retry(20)
    assert 20 <= retry._retries <= 30
    assert sentinel.failover_retry(0)._retries == 0
