"""The Moonshot resolver against a real local chat-completions server, mode by mode."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.locations.model import NO_LOCATION, ResolverError
from tasks.locations.resolvers.chat_completions import (
    ChatCompletionsResolver,
    parse_place,
    retry_after_seconds,
)
from tests.support.chat_api import ChatAPI

KEY = "sk-test-SECRET-0123456789"
ITEMS = [(f"1700000000000-{n}", f"Flooding in Lyon, alert {n}") for n in range(6)]


def resolver_for(settings, api: ChatAPI, timeout: float = 2.0) -> ChatCompletionsResolver:  # type: ignore[no-untyped-def]
    return ChatCompletionsResolver(
        replace(
            settings, moonshot_api_key=KEY, moonshot_base_url=api.base_url, moonshot_timeout=timeout
        )
    )


def test_good_reply_locates_every_sent_id_with_one_json_mode_call(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    # Given a healthy API
    api = ChatAPI(http_server, ["good"])
    # When a batch is resolved
    result = resolver_for(settings, api).resolve(ITEMS)
    # Then every id is located in one call that asked for JSON-object mode with the model
    assert set(result.located) == {i for i, _ in ITEMS}
    assert result.located[ITEMS[0][0]].name == "Lyon"
    assert result.missing == [] and result.malformed == []
    assert len(api.calls) == 1
    assert api.calls[0]["response_format"] == {"type": "json_object"}
    assert api.calls[0]["model"] == settings.moonshot_model
    assert api.sent_ids(0) == [i for i, _ in ITEMS]
    assert api.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_reply_slower_than_the_timeout_is_a_retryable_timeout(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["slow"], slow_s=2.0)
    with pytest.raises(ResolverError) as err:
        resolver_for(settings, api, timeout=0.3).resolve(ITEMS)
    assert err.value.reason == "timeout" and err.value.retryable


def test_429_is_retryable_and_carries_retry_after(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["429"], retry_after="7")
    with pytest.raises(ResolverError) as err:
        resolver_for(settings, api).resolve(ITEMS)
    assert err.value.reason == "rate_limited" and err.value.retryable
    assert err.value.retry_after == 7.0


def test_500_is_retryable(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["500"])
    with pytest.raises(ResolverError) as err:
        resolver_for(settings, api).resolve(ITEMS)
    assert err.value.reason == "http_500" and err.value.retryable


def test_403_is_not_retryable_and_the_key_is_not_in_the_error(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    # Given an API that rejects the key and echoes it back in its body
    http_server.static("/v1/chat/completions", f'{{"error": "bad key {KEY}"}}', status=403)
    resolver = ChatCompletionsResolver(
        replace(settings, moonshot_api_key=KEY, moonshot_base_url=http_server.url("/v1"))
    )
    with pytest.raises(ResolverError) as err:
        resolver.resolve(ITEMS)
    assert err.value.reason == "auth_failed" and not err.value.retryable
    assert KEY not in str(err.value) and "403" in str(err.value)


def test_malformed_json_reply_is_a_retryable_malformed_response(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["malformed"])
    with pytest.raises(ResolverError) as err:
        resolver_for(settings, api).resolve(ITEMS)
    assert err.value.reason == "malformed_response" and err.value.retryable


def test_ids_left_out_of_the_reply_are_reported_missing(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["missing"], drop=2)
    result = resolver_for(settings, api).resolve(ITEMS)
    assert result.missing == [ITEMS[0][0], ITEMS[1][0]]
    assert set(result.located) == {i for i, _ in ITEMS[2:]}


def test_ids_nobody_sent_are_ignored(settings, http_server) -> None:  # type: ignore[no-untyped-def]
    api = ChatAPI(http_server, ["extra"])
    result = resolver_for(settings, api).resolve(ITEMS)
    assert set(result.located) == {i for i, _ in ITEMS}


def test_unreachable_api_is_a_retryable_connection_error(settings) -> None:  # type: ignore[no-untyped-def]
    resolver = ChatCompletionsResolver(
        replace(settings, moonshot_api_key=KEY, moonshot_base_url="http://127.0.0.1:9/v1")
    )
    with pytest.raises(ResolverError) as err:
        resolver.resolve(ITEMS)
    assert err.value.retryable and KEY not in str(err.value)


@pytest.mark.parametrize(
    "item",
    [
        {"name": "", "country_code": "FR", "lat": 1, "lon": 1},
        {"name": "Lyon", "country_code": "FRA", "lat": 1, "lon": 1},
        {"name": "Lyon", "country_code": "FR", "lat": 91, "lon": 1},
        {"name": "Lyon", "country_code": "FR", "lat": "45", "lon": 4},
        {"name": "Lyon", "country_code": "FR", "lat": 45, "lon": 4, "precision": "galaxy"},
        ["Lyon"],
        "Lyon",
    ],
)
def test_malformed_items_are_rejected(item: object) -> None:
    assert parse_place(item) is None


def test_null_item_is_the_explicit_no_location() -> None:
    assert parse_place(None) == NO_LOCATION


def test_retry_after_accepts_seconds_and_dates_and_caps_them() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("100000") == 600.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
