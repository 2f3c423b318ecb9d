"""The Nacos wire: addresses, login answers (incl. hostile ones, fuzzed), and the rejection classifier."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nacos_token_client.errors import (
    AuthenticationError,
    ConfigurationError,
    LoginResponseError,
    NacosTokenError,
)
from nacos_token_client.protocol import (
    LoginEndpointMissing,
    RejectionKind,
    TransientLoginError,
    classify_rejection,
    classify_rejection_message,
    jwt_expiry,
    login_request,
    parse_login_response,
    parse_server_addresses,
)

JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJuYWNvcyIsImV4cCI6MTcwMDAwMDAwMH0."
       "r3y5fKRq3v-izKm68kwq7SyCxrQRWr6C8vZGxJ7vu_s")


# -- addresses -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:8848", ["http://127.0.0.1:8848/nacos"]),
    ("nacos.internal", ["http://nacos.internal:8848/nacos"]),
    ("https://nacos.example.com", ["https://nacos.example.com:443/nacos"]),
    ("http://a:1/custom/ctx/", ["http://a:1/custom/ctx"]),
    ("a:1, b:2 ,a:1", ["http://a:1/nacos", "http://b:2/nacos"]),
    (["a:1", "http://b:2,c:3"], ["http://a:1/nacos", "http://b:2/nacos", "http://c:3/nacos"]),
    ("[::1]:8848", ["http://[::1]:8848/nacos"]),
])
def test_server_addresses(value: str | list[str], expected: list[str]) -> None:
    assert [str(s) for s in parse_server_addresses(value)] == expected


def test_context_path_option_applies_when_the_url_has_none() -> None:
    assert str(parse_server_addresses("a:1", context_path="")[0]) == "http://a:1"
    assert str(parse_server_addresses("a:1", context_path="/x/")[0]) == "http://a:1/x"


@pytest.mark.parametrize("value", ["", " , ", "ftp://a:1", "a:notaport", "http://user:pw@a:1", [1], 42])
def test_bad_server_addresses(value: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_server_addresses(value)  # type: ignore[arg-type]


def test_login_request_keeps_the_password_out_of_the_url_and_sends_no_token() -> None:
    server = parse_server_addresses("a:1")[0]
    request = login_request(server, "v1", "nacos", "p@ss&word=1")
    assert request.method == "POST"
    assert str(request.url) == "http://a:1/nacos/v1/auth/login"
    assert "p%40ss" not in str(request.url) and "password" not in str(request.url)
    assert request.read() == b"username=nacos&password=p%40ss%26word%3D1"
    assert "authorization" not in request.headers and "accesstoken" not in request.headers
    assert str(login_request(server, "v3", "u", "p").url).endswith("/nacos/v3/auth/user/login")


# -- login answers -------------------------------------------------------------------------------------------------

def ok(**fields: object) -> bytes:
    body = {"accessToken": JWT, "tokenTtl": 18000, "globalAdmin": True, "username": "nacos"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_good_answer() -> None:
    answer = parse_login_response(200, ok())
    assert answer.token == JWT and answer.token_ttl == 18000.0 and answer.jwt_exp == 1700000000.0
    assert answer.username == "nacos" and answer.global_admin is True
    assert JWT not in repr(answer)


@pytest.mark.parametrize(("status", "body", "error", "words"), [
    (403, b"user not found!", AuthenticationError, "user not found!"),
    (403, b"User not found! Please check user exist or password is right!", AuthenticationError, "User not found"),
    (401, b"", AuthenticationError, "HTTP 401"),
    (500, b"caused: User nobody not found;", AuthenticationError, "unknown user"),
    (500, b"caused: java.lang.NullPointerException;", TransientLoginError, "HTTP 500"),
    (503, b"server is DOWN now", TransientLoginError, "503"),
    (429, b"", TransientLoginError, "429"),
    (408, b"", TransientLoginError, "408"),
    (404, b"", LoginEndpointMissing, "not found"),
    (501, b"", LoginEndpointMissing, "not found"),
    (400, b"bad", LoginResponseError, "HTTP 400"),
    (200, b"<html><body>login page</body></html>", LoginResponseError, "HTML"),
    (200, b"not json at all", LoginResponseError, "not JSON"),
    (200, b"\xff\xfe\x00garbage", LoginResponseError, "not JSON"),
    (200, b"[1, 2]", LoginResponseError, "list"),
    (200, b"null", LoginResponseError, "NoneType"),
    (200, ok(accessToken=...), LoginResponseError, "no accessToken"),
    (200, ok(accessToken=""), LoginResponseError, "accessToken"),
    (200, ok(accessToken=12345), LoginResponseError, "accessToken"),
    (200, ok(accessToken="abc\r\nX-Injected: 1"), LoginResponseError, "characters"),
    (200, ok(accessToken="a" * 20000), LoginResponseError, "length"),
    (200, ok(tokenTtl=...), LoginResponseError, "no tokenTtl"),
    (200, ok(tokenTtl="18000"), LoginResponseError, "str, not a number"),
    (200, ok(tokenTtl=True), LoginResponseError, "bool"),
    (200, ok(tokenTtl=0), LoginResponseError, "positive"),
    (200, ok(tokenTtl=-5), LoginResponseError, "positive"),
    (200, b'{"accessToken": "t", "tokenTtl": NaN}', LoginResponseError, "positive"),
    (200, b'{"accessToken": "t", "tokenTtl": Infinity}', LoginResponseError, "positive"),
    (200, ok(tokenTtl=10**12), LoginResponseError, "absurdly large"),
    (200, b"[" * 100000 + b"]" * 100000, LoginResponseError, "JSON"),
])
def test_bad_answers_get_typed_errors(status: int, body: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        parse_login_response(status, body, server="http://a:1/nacos")
    assert words in str(info.value)


def test_error_messages_never_echo_a_token_from_the_body() -> None:
    with pytest.raises(LoginResponseError) as info:
        parse_login_response(200, ok(tokenTtl="x"))
    assert JWT not in str(info.value)


@settings(max_examples=400, deadline=None)
@given(status=st.sampled_from([200, 200, 200, 401, 403, 404, 500, 502]),
       body=st.one_of(
           st.binary(max_size=300),
           st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4),
                        max_leaves=12).map(lambda v: json.dumps(v).encode()),
           st.fixed_dictionaries({"accessToken": st.one_of(st.text(max_size=40), st.integers(), st.none()),
                                  "tokenTtl": st.one_of(st.integers(), st.floats(), st.text(max_size=5),
                                                        st.none())}).map(lambda v: json.dumps(v).encode()),
       ))
def test_fuzzed_login_answers_only_ever_raise_typed_errors(status: int, body: bytes) -> None:
    try:
        answer = parse_login_response(status, body)
    except NacosTokenError:
        return
    assert status == 200
    assert answer.token and 0 < answer.token_ttl <= 10 * 365 * 24 * 3600


@pytest.mark.parametrize(("token", "exp"), [
    (JWT, 1700000000.0),
    ("not-a-jwt", None),
    ("a.b.c", None),
    ("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOiJzb29uIn0.x", None),  # exp is a string
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJuYWNvcyJ9.x", None),  # no exp
])
def test_jwt_expiry(token: str, exp: float | None) -> None:
    assert jwt_expiry(token) == exp


# -- rejections ----------------------------------------------------------------------------------------------------

def spring(message: str) -> str:
    return json.dumps({"timestamp": "2026-01-01T00:00:00.000+00:00", "status": 403, "error": "Forbidden",
                       "message": message, "path": "/nacos/v1/cs/configs"})


TOKEN_PROBLEMS = ["token invalid!", "unsupported signature algorithm", "Invalid signature", "token expired!",
                  "token frozen!"]


@pytest.mark.parametrize("message", TOKEN_PROBLEMS)
def test_nacos2_token_problems(message: str) -> None:
    assert classify_rejection_message(403, spring(message)) is RejectionKind.TOKEN
    assert classify_rejection_message(403, message) is RejectionKind.TOKEN


@pytest.mark.parametrize("message", TOKEN_PROBLEMS)
def test_nacos3_token_problems(message: str) -> None:
    assert classify_rejection_message(403, spring(f"Code: 401, Message: {message}.")) is RejectionKind.TOKEN


@pytest.mark.parametrize("text", [spring("authorization failed!"), "authorization failed!",
                                  spring("Code: 403, Message: authorization failed!.")])
def test_permission_denials_never_trigger_a_login(text: str) -> None:
    assert classify_rejection_message(403, text) is RejectionKind.PERMISSION


@pytest.mark.parametrize("text", [spring("user not found!"), spring(
    "Code: 401, Message: User not found! Please check user exist or password is right!.")])
def test_no_token_reached_the_server(text: str) -> None:
    assert classify_rejection_message(403, text) is RejectionKind.MISSING


def test_html_error_pages_and_401s() -> None:
    page = "<html><body><h1>Whitelabel Error Page</h1><div>token expired!</div></body></html>"
    assert classify_rejection_message(403, page) is RejectionKind.TOKEN
    assert classify_rejection_message(401, "") is RejectionKind.TOKEN
    assert classify_rejection_message(403, "nope") is RejectionKind.PERMISSION
    assert classify_rejection_message(200, "token expired!") is RejectionKind.NOT_A_REJECTION


@pytest.mark.parametrize(("message", "kind"), [
    ("token 无效", RejectionKind.TOKEN), ("token 已过期", RejectionKind.TOKEN), ("token 已被冻结", RejectionKind.TOKEN),
    ("token 已被顶下线", RejectionKind.REPLACED), ("token 已被踢下线", RejectionKind.KICKED_OUT),
])
def test_sa_token_messages(message: str, kind: RejectionKind) -> None:
    assert classify_rejection_message(401, json.dumps({"code": 401, "msg": message})) is kind


def test_classify_rejection_reads_a_response() -> None:
    response = httpx.Response(403, text=spring("token expired!"))
    assert classify_rejection(response) is RejectionKind.TOKEN
    assert classify_rejection(httpx.Response(200, text="ok")) is RejectionKind.NOT_A_REJECTION
