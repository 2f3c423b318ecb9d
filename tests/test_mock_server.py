"""The mock server behaves like real Nacos, rule by rule, over both transports (raw httpx, no SDK)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from nacos_token_client.testing import MockNacosServer

from .conftest import START, Harness

LOGIN = "/v1/auth/login"
CONFIGS = "/v1/cs/configs"
LISTENER = "/v1/cs/configs/listener"


@pytest.fixture
def raw(h: Harness) -> Iterator[httpx.Client]:
    with httpx.Client(transport=h.transport) as client:
        yield client


def login(h: Harness, raw: httpx.Client, user: str = "nacos", password: str = "nacos") -> str:
    response = raw.post(h.url(LOGIN), data={"username": user, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


def get(h: Harness, raw: httpx.Client, token: str | None = None, data_id: str = "app.yaml",
        headers: dict[str, str] | None = None) -> httpx.Response:
    params = {"dataId": data_id, "group": "DEFAULT_GROUP"}
    sent = {**(headers or {}), **({"accessToken": token} if token else {})}
    return raw.get(h.url(CONFIGS), params=params, headers=sent)


def message(response: httpx.Response) -> str:
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"timestamp", "status", "error", "message", "path"}
    assert body["status"] == 403 and body["error"] == "Forbidden"
    text: str = body["message"]
    return text


# -- login ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/auth/users/login"])
def test_login_answer_shape(h: Harness, raw: httpx.Client, path: str) -> None:
    response = raw.post(h.url(path), data={"username": "nacos", "password": "nacos"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["accessToken", "tokenTtl", "globalAdmin", "username"]
    assert body["globalAdmin"] is True and body["username"] == "nacos"
    assert response.headers["Authorization"] == "Bearer " + body["accessToken"]
    # tokenTtl is exp - floor(now) (JwtTokenManager.getTokenTtlInSeconds): the full life, though the clock is at .25
    assert body["tokenTtl"] == 18000


def test_credentials_in_the_query_string_work_too(h: Harness, raw: httpx.Client) -> None:
    response = raw.post(h.url(LOGIN), params={"username": "nacos", "password": "nacos"})
    assert response.status_code == 200


def test_token_bytes_are_nacos_bytes(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    header, payload, _signature = token.split(".")
    assert header == "eyJhbGciOiJIUzI1NiJ9"
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert decoded == json.dumps({"sub": "nacos", "exp": math.floor(START) + 18000}, separators=(",", ":")).encode()
    key = base64.b64decode(h.server.secret_key)
    assert jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False})["sub"] == "nacos"
    assert "=" not in token


def test_login_with_wrong_password_or_unknown_user(h: Harness, raw: httpx.Client) -> None:
    response = raw.post(h.url(LOGIN), data={"username": "nacos", "password": "wrong"})
    assert (response.status_code, response.text) == (403, "user not found!")
    # NacosUserDetailsServiceImpl throws UsernameNotFoundException; ConsoleExceptionHandler answers 500
    response = raw.post(h.url(LOGIN), data={"username": "nobody", "password": "x"})
    assert (response.status_code, response.text) == (500, "caused: User nobody not found;")


@pytest.mark.parametrize("server_options", [{"nacos_version": 3}])
def test_nacos3_login_paths_and_message(h: Harness, raw: httpx.Client) -> None:
    assert raw.post(h.url("/v3/auth/user/login"), data={"username": "nacos", "password": "nacos"}).status_code == 200
    # the 3.x server port has no advice for the plugin's AccessException: Spring Boot's error page, no message
    response = raw.post(h.url("/v3/auth/user/login"), data={"username": "nacos", "password": "no"})
    assert response.status_code == 500 and response.json()["message"] == "No message available"


def test_nacos2_has_no_v3_login(h: Harness, raw: httpx.Client) -> None:
    assert raw.post(h.url("/v3/auth/user/login"), data={"username": "nacos", "password": "nacos"}).status_code == 404


@pytest.mark.parametrize("server_options", [{"unknown_user_status": 500}])
def test_some_servers_answer_an_unknown_user_with_500(h: Harness, raw: httpx.Client) -> None:
    response = raw.post(h.url(LOGIN), data={"username": "ghost", "password": "x"})
    assert (response.status_code, response.text) == (500, "caused: User ghost not found;")


def test_login_carrying_a_token_is_authenticated_by_the_token(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    response = raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"},
                        headers={"Authorization": f"Bearer {token}"})
    assert response.json()["accessToken"] == token
    h.server.rotate_secret()
    for extra in ({"headers": {"Authorization": f"Bearer {token}"}}, {"params": {"accessToken": token}}):
        stale = raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}, **extra)  # type: ignore[arg-type]
        assert (stale.status_code, stale.text) == (403, "Invalid signature")


def test_login_is_post_only(h: Harness, raw: httpx.Client) -> None:
    response = raw.get(h.url(LOGIN), params={"username": "nacos", "password": "nacos"})
    assert response.status_code == 405 and "POST" in response.headers["Allow"]


# -- rejections ----------------------------------------------------------------------------------------------------

def test_no_token_no_credentials(h: Harness, raw: httpx.Client) -> None:
    assert message(get(h, raw)) == "user not found!"


def test_malformed_tokens(h: Harness, raw: httpx.Client) -> None:
    assert message(get(h, raw, "only.twoparts")) == "token invalid!"
    assert message(get(h, raw, "eyJhbGciOiJub25lIn0.e30.x")) == "unsupported signature algorithm"
    assert message(get(h, raw, "eyJhbGciOiJub25lIn0.e30.")) == "token invalid!"  # Java's split drops the empty part
    token = login(h, raw)
    header, _payload, signature = token.split(".")
    assert message(get(h, raw, f"{header}.bm90IGpzb24.{signature}")) == "Invalid signature"


def test_signature_is_checked_before_expiry(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    h.server.rotate_secret()
    h.clock.advance(20000)
    assert message(get(h, raw, token)) == "Invalid signature"


def test_expiry_equal_is_still_valid(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    h.clock.set(math.floor(START) + 18000.999)  # exp >= floor(now) still holds
    assert get(h, raw, token).status_code == 200
    h.clock.advance(0.001)
    assert message(get(h, raw, token)) == "token expired!"


def test_permission_denial(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    h.server.deny("secret.yaml")
    assert message(get(h, raw, token, data_id="secret.yaml")) == "authorization failed!"
    assert get(h, raw, token).status_code == 200
    h.server.allow("secret.yaml")
    assert get(h, raw, token, data_id="secret.yaml").status_code == 404  # allowed again (and not there)


def test_revoked_token(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    h.server.revoke(token)
    assert message(get(h, raw, token)) == "token invalid!"


@pytest.mark.parametrize("server_options", [{"nacos_version": 3}])
def test_nacos3_wraps_messages_with_codes(h: Harness, raw: httpx.Client) -> None:
    assert message(get(h, raw)) == "Code: 401, Message: User not found! Please check user exist or password is right!."
    token = login(h, raw)
    h.server.deny("secret.yaml")
    assert message(get(h, raw, token, data_id="secret.yaml")) == "Code: 403, Message: authorization failed!."
    h.clock.advance(20000)
    assert message(get(h, raw, token)) == "Code: 401, Message: token expired!."


def test_where_the_token_is_looked_for(h: Harness, raw: httpx.Client) -> None:
    good = login(h, raw)
    params = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}
    url = h.url(CONFIGS)
    # Bearer first: a bad bearer is not rescued by a good accessToken
    assert raw.get(url, params=params, headers={"Authorization": "Bearer bad", "accessToken": good}).status_code == 403
    # the prefix is case-sensitive: "bearer x" is not a bearer token
    assert raw.get(url, params=params, headers={"Authorization": "bearer bad", "accessToken": good}).status_code == 200
    # a parameter wins over a header of the same name
    assert raw.get(url, params={**params, "accessToken": good}, headers={"accessToken": "bad"}).status_code == 200
    assert raw.get(url, params={**params, "accessToken": "bad"}, headers={"accessToken": good}).status_code == 403
    # a bad token does not fall back to credentials; credentials alone work (the Node.js client's way)
    creds = {**params, "username": "nacos", "password": "nacos"}
    assert raw.get(url, params={**creds, "accessToken": "bad"}).status_code == 403
    assert raw.get(url, params=creds).status_code == 200
    assert message(raw.get(url, params={**params, "username": "nacos", "password": "x"})) == "user not found!"


def test_html_error_page_when_asked_for(h: Harness, raw: httpx.Client) -> None:
    response = get(h, raw, "bad", headers={"Accept": "text/html"})
    assert response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    assert "Whitelabel Error Page" in response.text and "token invalid!" in response.text


# -- the server's token cache and idle freeze ----------------------------------------------------------------------

@pytest.mark.parametrize("server_options", [{"token_cache": True, "token_ttl": 1000}])
def test_token_cache_hands_back_the_same_token_until_ninety_percent(h: Harness, raw: httpx.Client) -> None:
    first = login(h, raw)
    h.clock.advance(500)
    response = raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"})
    # the cache keeps its own expiry, login time + life in ms (CachedJwtTokenManager): 500 s left, not 499
    assert response.json()["accessToken"] == first and response.json()["tokenTtl"] == 500
    h.clock.advance(400)  # now + 100 <= exp still holds exactly at 900 s
    assert login(h, raw) == first
    h.clock.advance(1)
    second = login(h, raw)
    assert second != first
    assert raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}).json()["tokenTtl"] == 1000


@pytest.mark.parametrize("server_options", [{"active_timeout": 60.0}])
def test_idle_tokens_freeze_and_use_renews(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    for _ in range(3):
        h.clock.advance(50)
        assert get(h, raw, token).status_code == 200
    h.clock.advance(61)
    assert message(get(h, raw, token)) == "token frozen!"
    h.clock.advance(1)
    fresh = login(h, raw)
    assert fresh != token and get(h, raw, fresh).status_code == 200
    assert message(get(h, raw, token)) == "token frozen!"  # a frozen token stays frozen


# -- config API ----------------------------------------------------------------------------------------------------

def test_config_crud_and_namespaces(h: Harness, raw: httpx.Client) -> None:
    headers = {"accessToken": login(h, raw)}
    url = h.url(CONFIGS)
    assert raw.post(url, data={"dataId": "d", "group": "g", "content": "public"}, headers=headers).text == "true"
    assert raw.post(url, params={"dataId": "d", "group": "g", "content": "dev", "tenant": "dev"},
                    headers=headers).text == "true"
    assert raw.get(url, params={"dataId": "d", "group": "g"}, headers=headers).text == "public"
    response = raw.get(url, params={"dataId": "d", "group": "g", "tenant": "dev"}, headers=headers)
    assert response.text == "dev" and response.headers["Content-MD5"] == hashlib.md5(b"dev").hexdigest()
    assert raw.delete(url, params={"dataId": "d", "group": "g", "tenant": "dev"}, headers=headers).text == "true"
    missing = raw.get(url, params={"dataId": "d", "group": "g", "tenant": "dev"}, headers=headers)
    assert (missing.status_code, missing.text) == (404, "config data not exist\n")


def test_bad_input_gets_clear_answers_and_the_server_keeps_serving(h: Harness, raw: httpx.Client) -> None:
    headers = {"accessToken": login(h, raw)}
    url = h.url(CONFIGS)
    missing = raw.get(url, params={"dataId": "d"}, headers=headers)  # 2.x: ConsoleExceptionHandler's catch-all
    assert missing.status_code == 500 and "&#39;group&#39;" in missing.text
    assert raw.post(url, data={"dataId": "d", "group": "g", "content": "  "}, headers=headers).status_code == 400
    bad_utf8 = raw.get(url + "?dataId=%ff%fe&group=g", headers=headers)
    assert bad_utf8.status_code == 400
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    assert raw.post(url, content=b"dataId=\xff&group=g", headers=form).status_code == 400
    too_big = raw.post(url, content=b"x" * (h.server.max_body + 1), headers=form)
    assert too_big.status_code == 413
    assert raw.get(h.url("/v1/nope")).status_code == 404
    assert raw.get(f"{h.address}/elsewhere").status_code == 404
    assert raw.put(url, headers=headers).status_code == 405
    assert raw.get(h.url("/v1/console/health/liveness")).text == "OK"
    assert get(h, raw, headers["accessToken"]).status_code == 200


# -- long polling --------------------------------------------------------------------------------------------------

def probe(data_id: str, group: str, md5: str, tenant: str | None = None) -> str:
    fields = [data_id, group, md5] + ([tenant] if tenant is not None else [])
    return "\x02".join(fields) + "\x01"


def poll(h: Harness, raw: httpx.Client, probes: str, timeout_ms: int | None = 30000, **headers: str) -> httpx.Response:
    hdrs = {"accessToken": login(h, raw), **headers}
    if timeout_ms is not None:
        hdrs["Long-Pulling-Timeout"] = str(timeout_ms)
    return raw.post(h.url(LISTENER), data={"Listening-Configs": probes}, headers=hdrs, timeout=10)


def test_listener_answers_at_once_on_an_md5_mismatch(h: Harness, raw: httpx.Client) -> None:
    h.server.set_config("a b", "x", group="G", tenant="ns1")
    three = poll(h, raw, probe("app.yaml", "DEFAULT_GROUP", "stale"))
    assert three.status_code == 200 and three.text == "app.yaml%02DEFAULT_GROUP%01\n"
    four = poll(h, raw, probe("a b", "G", "", "ns1") + probe("app.yaml", "DEFAULT_GROUP", "", ""))
    assert four.text == "a+b%02G%02ns1%01app.yaml%02DEFAULT_GROUP%01\n"
    current = hashlib.md5(b"greeting: hello").hexdigest()
    missing = poll(h, raw, probe("nothing", "G", "") + probe("app.yaml", "DEFAULT_GROUP", current), timeout_ms=None)
    assert (missing.status_code, missing.text) == (200, "")


def test_listener_holds_until_timeout(h: Harness, raw: httpx.Client) -> None:
    current = hashlib.md5(b"greeting: hello").hexdigest()
    started = time.monotonic()
    response = poll(h, raw, probe("app.yaml", "DEFAULT_GROUP", current), timeout_ms=800)
    assert response.text == "" and 0.25 <= time.monotonic() - started < 3
    started = time.monotonic()
    assert poll(h, raw, probe("app.yaml", "DEFAULT_GROUP", current), timeout_ms=800,
                **{"Long-Pulling-Timeout-No-Hangup": "true"}).text == ""
    assert time.monotonic() - started < 0.25


def test_a_publish_wakes_a_held_poll_at_once(h: Harness, raw: httpx.Client) -> None:
    current = hashlib.md5(b"greeting: hello").hexdigest()
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(
        poll(h, raw, probe("app.yaml", "DEFAULT_GROUP", current), timeout_ms=8000)))
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    token = login(h, raw)
    assert raw.post(h.url(CONFIGS), data={"dataId": "app.yaml", "group": "DEFAULT_GROUP", "content": "new"},
                    headers={"accessToken": token}).text == "true"
    thread.join(5)
    assert result and result[0].text == "app.yaml%02DEFAULT_GROUP%01\n"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("server_options", [{"poll_min_hold": 10.0}])
def test_real_nacos_holds_at_least_ten_seconds(hi: Harness) -> None:
    from nacos_token_client.testing import Hold, MockRequest

    token = hi.server.issue_token()
    current = hashlib.md5(b"greeting: hello").hexdigest()
    body = "Listening-Configs=" + httpx.QueryParams({"x": probe("app.yaml", "DEFAULT_GROUP", current)})["x"]
    answer = hi.server.handle(MockRequest("POST", "/nacos" + LISTENER, "", {
        "accesstoken": token, "long-pulling-timeout": "2000",
        "content-type": "application/x-www-form-urlencoded"}, body.encode()))
    assert isinstance(answer, Hold) and answer.seconds == 10.0


def test_listener_probe_errors(h: Harness, raw: httpx.Client) -> None:
    assert poll(h, raw, "only\x02two\x01").status_code == 400
    token = login(h, raw)
    assert raw.post(h.url(LISTENER), data={}, headers={"accessToken": token}).status_code == 400
    assert raw.post(h.url(LISTENER), data={"Listening-Configs": probe("a", "b", "")}).status_code == 403


# -- controls and stats --------------------------------------------------------------------------------------------

def test_fault_controls(h: Harness, raw: httpx.Client) -> None:
    h.server.fail_logins(2, status=502)
    assert raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}).status_code == 502
    assert raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}).status_code == 502
    login(h, raw)
    h.server.down = True
    assert raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}).status_code == 503
    h.server.down = False
    h.server.login_delay = 0.3
    started = time.monotonic()
    login(h, raw)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        raw.post(h.url(LOGIN), data={"username": "nacos", "password": "nacos"}, timeout=0.1)
    stats = h.server.stats  # the timed-out login still happened on the server, as on a real one
    assert stats.logins == 3 and stats.login_attempts == 6 and stats.logins_by_user == {"nacos": 3}


def test_stats_count_requests_and_rejections(h: Harness, raw: httpx.Client) -> None:
    token = login(h, raw)
    get(h, raw, token)
    get(h, raw, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
    get(h, raw)
    stats = h.server.stats
    assert stats.requests == 3
    assert stats.rejections == {"Invalid signature": 1, "user not found!": 1}


def test_concurrent_clients_are_safe(h: Harness) -> None:
    token = h.server.issue_token()
    failures: list[int] = []

    def worker() -> None:
        with httpx.Client(transport=h.transport) as client:
            for i in range(40):
                if i % 10 == 0:
                    client.post(h.url(CONFIGS), data={"dataId": "c", "group": "g", "content": str(i)},
                                headers={"accessToken": token})
                response = get(h, client, token)
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == [] and h.server.stats.requests == 8 * 44


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        MockNacosServer(secret_key=base64.b64encode(b"short").decode())
    with pytest.raises(ValueError):
        MockNacosServer(nacos_version=1)
    with pytest.raises(ValueError):
        MockNacosServer(secret_key="not base64!!")
    assert MockNacosServer(secret_key=base64.b64encode(b"k" * 64).decode()).issue_token().startswith(
        "eyJhbGciOiJIUzUxMiJ9.")


def test_run_serves_and_stops() -> None:
    server = MockNacosServer()
    with server.run() as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/nacos/v1/console/health/liveness").text == "OK"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/nacos/v1/console/health/liveness")


def test_stop_closes_kept_alive_connections() -> None:
    server = MockNacosServer()
    url = server.start()
    with httpx.Client() as client:
        assert client.get(url + "/nacos/v1/console/health/liveness").status_code == 200
        server.stop()
        with pytest.raises(httpx.TransportError):
            client.get(url + "/nacos/v1/console/health/liveness")


def test_pytest_fixture(nacos_server: MockNacosServer) -> None:
    response = httpx.post(nacos_server.url + "/nacos/v1/auth/login", data={"username": "nacos", "password": "nacos"})
    assert response.status_code == 200


async def test_an_async_held_poll_is_woken_by_a_publish(hi: Harness) -> None:
    import asyncio

    token = hi.server.issue_token()
    current = hashlib.md5(b"greeting: hello").hexdigest()
    async with httpx.AsyncClient(transport=hi.server.transport()) as client:
        poll_task = asyncio.create_task(client.post(
            hi.url(LISTENER), data={"Listening-Configs": probe("app.yaml", "DEFAULT_GROUP", current)},
            headers={"accessToken": token, "Long-Pulling-Timeout": "20000"}))
        await asyncio.sleep(0.2)
        assert not poll_task.done()  # held without blocking the event loop
        started = time.monotonic()
        published = await client.post(hi.url(CONFIGS), headers={"accessToken": token},
                                      data={"dataId": "app.yaml", "group": "DEFAULT_GROUP", "content": "v2"})
        assert published.text == "true"
        answer = await asyncio.wait_for(poll_task, 5)
    assert answer.text == "app.yaml%02DEFAULT_GROUP%01\n" and time.monotonic() - started < 2


@pytest.mark.parametrize("nacos_server", [{"token_ttl": 5, "nacos_version": 3}], indirect=True)
def test_the_fixture_takes_server_options(nacos_server: MockNacosServer) -> None:
    response = httpx.post(nacos_server.url + "/nacos/v3/auth/user/login",
                          data={"username": "nacos", "password": "nacos"})
    assert response.status_code == 200 and response.json()["tokenTtl"] == 5
