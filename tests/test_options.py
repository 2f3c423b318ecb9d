"""Issue #12: every option is checked when the auth object is made, and the error names it (never a secret)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from nacos_token_client import ConfigurationError, MemoryTokenStore, NacosTokenAuth, NacosTokenError
from nacos_token_client.login import RetrySettings
from nacos_token_client.protocol import parse_server_addresses

ADDRESS = "http://127.0.0.1:8848"
SECRET = "Sup3r-Secret-PW"

#: (what is changed, the option the message must start with)
BAD: list[tuple[dict[str, Any], str]] = [
    ({"timeout": 1e12}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "abc"}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"timeout": httpx.Timeout(5.0, read=1e12)}, "timeout"),
    ({"password": 123}, "password"),
    ({"password": ""}, "password"),
    ({"password": SECRET + "\r\n"}, "password"),
    ({"password": None}, "password"),
    ({"username": None}, "password"),  # a password with no username: refused, not silently unauthenticated
    ({"username": ""}, "username"),
    ({"username": 7}, "username"),
    ({"username": "na\ncos"}, "username"),
    ({"store": "file.json"}, "store"),
    ({"refresh_ratio": "0.9"}, "refresh_ratio"),
    ({"refresh_ratio": 1.0}, "refresh_ratio"),
    ({"refresh_ratio": 0}, "refresh_ratio"),
    ({"refresh_ratio": float("nan")}, "refresh_ratio"),
    ({"refresh_jitter": -0.1}, "refresh_jitter"),
    ({"refresh_jitter": 0.2}, "refresh_jitter"),  # past 1 - refresh_ratio
    ({"login_timeout": 0}, "login_timeout"),
    ({"login_timeout": 1e9}, "login_timeout"),
    ({"negative_cache_seconds": -1}, "negative_cache_seconds"),
    ({"store_sync_interval": 0}, "store_sync_interval"),
    ({"login_backoff": (5, 1)}, "login_backoff"),
    ({"login_backoff": 5}, "login_backoff"),
    ({"login_backoff": (1, 2, 3)}, "login_backoff"),
    ({"login_backoff": ("a", 1)}, "login_backoff"),
    ({"login_attempts": 10**9}, "login_attempts"),
    ({"login_attempts": 0}, "login_attempts"),
    ({"login_attempts": 2.5}, "login_attempts"),
    ({"verify": 3}, "verify"),
    ({"trust_env": "no"}, "trust_env"),
    ({"relogin_on_replaced": 1}, "relogin_on_replaced"),
    ({"on_event": "print"}, "on_event"),
    ({"clock": 1.0}, "clock"),
    ({"timer": None}, "timer"),
    ({"rejection_classifier": "token"}, "rejection_classifier"),
    ({"transport": "http"}, "transport"),
    ({"async_transport": httpx.HTTPTransport()}, "async_transport"),
    ({"namespace": 1}, "namespace"),
    ({"namespace": "dev\n"}, "namespace"),
    ({"context_path": 1}, "context_path"),
    ({"context_path": "/nacos?x=1"}, "context_path"),
    ({"context_path": "/a/../b"}, "context_path"),
    ({"api": "v2"}, "api"),
    ({"token_placement": "cookie"}, "token_placement"),
    ({"server_addresses": "127.0.0.1:0"}, "server_addresses"),
    ({"server_addresses": "a b:8848"}, "server_addresses"),
    ({"server_addresses": "http://h:8848/nacos?x=1"}, "server_addresses"),
    ({"server_addresses": f"http://h:8848/nacos?password={SECRET}"}, "server_addresses"),
    ({"server_addresses": "http://h:8848#top"}, "server_addresses"),
    ({"server_addresses": f"http://nacos:{SECRET}@h:0"}, "server_addresses"),
    ({"server_addresses": "h:65536"}, "server_addresses"),
    ({"server_addresses": "ftp://h:21"}, "server_addresses"),
    ({"server_addresses": "http://h:8848/nacos/../admin"}, "server_addresses"),
    ({"server_addresses": ""}, "server_addresses"),
    ({"server_addresses": 8848}, "server_addresses"),
    ({"server_addresses": ["h:8848", None]}, "server_addresses"),
]


def _ids() -> list[str]:
    return [f"{next(iter(kw))}={next(iter(kw.values()))!r}"[:60] for kw, _ in BAD]


@pytest.mark.parametrize(("change", "option"), BAD, ids=_ids())
def test_a_bad_option_is_refused_at_construction_naming_it(change: dict[str, Any], option: str) -> None:
    options: dict[str, Any] = {"server_addresses": ADDRESS, "username": "nacos", "password": SECRET,
                               "store": MemoryTokenStore(), **change}
    with pytest.raises(ConfigurationError) as caught:
        NacosTokenAuth(options.pop("server_addresses"), options.pop("username"), options.pop("password"), **options)
    message = str(caught.value)
    assert re.match(rf"{re.escape(option)}\b", message), message
    assert isinstance(caught.value, NacosTokenError) and isinstance(caught.value, ValueError)
    for text in (message, repr(caught.value), str(caught.value.__cause__), str(caught.value.__context__)):
        assert SECRET not in text and "123" not in text


@pytest.mark.parametrize("good", [
    {},
    {"timeout": None},
    {"timeout": httpx.Timeout(5.0, connect=1.0)},
    {"timeout": 3600},
    {"verify": False},
    {"login_backoff": [0, 0]},
    {"username": None, "password": None},
    {"password": lambda: SECRET},
    {"server_addresses": "http://[::1]:8848, nacos-2.internal:8848/ctx, https://nacos.example.com"},
    {"server_addresses": ["127.0.0.1:1", "bücher.example:65535"]},
    {"context_path": "/"},
])
def test_good_options_are_accepted(good: dict[str, Any]) -> None:
    options: dict[str, Any] = {"server_addresses": ADDRESS, "username": "nacos", "password": SECRET,
                               "store": MemoryTokenStore(), **good}
    auth = NacosTokenAuth(options.pop("server_addresses"), options.pop("username"), options.pop("password"), **options)
    auth.close()


def test_the_parts_check_themselves_when_made_directly() -> None:
    with pytest.raises(ConfigurationError, match=r"^login_attempts\b"):
        RetrySettings(attempts=10**9)
    with pytest.raises(ConfigurationError, match=r"^login_backoff\b"):
        RetrySettings(attempts=3, backoff_initial=5, backoff_max=1)
    with pytest.raises(ConfigurationError, match=r"^server_addresses\b"):
        parse_server_addresses("127.0.0.1:0")
