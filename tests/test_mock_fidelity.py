"""Issue #11: each difference the audit found between the mock and real Nacos, one test per point.

Every test names the Nacos source file whose behaviour it pins (tags 2.2.3, 2.5.1, 3.0.3, a 3.1 snapshot).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from nacos_token_client.testing import Hold, MockNacosServer, MockRequest

from .conftest import START, FakeClock

LOGIN = "/nacos/v1/auth/login"
CONFIGS = "/nacos/v1/cs/configs"
LISTENER = "/nacos/v1/cs/configs/listener"
BASE = "http://nacos.test:8848"


@contextmanager
def serve(**options: Any) -> Iterator[tuple[MockNacosServer, httpx.Client, FakeClock]]:
    clock = FakeClock()
    server = MockNacosServer(clock=clock, **{"poll_min_hold": 0.0, **options})
    with httpx.Client(transport=server.transport(), base_url=BASE) as client:
        yield server, client, clock


def token(client: httpx.Client, user: str = "nacos", password: str = "nacos") -> str:
    response = client.post(LOGIN, data={"username": user, "password": password})
    assert response.status_code == 200, response.text
    value: str = response.json()["accessToken"]
    return value


def get(client: httpx.Client, tok: str | None, data_id: str = "app", **params: str) -> httpx.Response:
    sent = {"dataId": data_id, "group": "DEFAULT_GROUP", **params}
    return client.get(CONFIGS, params=sent, headers={"accessToken": tok} if tok else {})


def probe(data_id: str, group: str, md5: str, tenant: str | None = None) -> str:
    return "\x02".join([data_id, group, md5, *([tenant] if tenant is not None else [])]) + "\x01"


# -- 1. namespaces: common/.../NamespaceUtil.java, config/.../MD5Util.java ----------------------------------------

@pytest.mark.parametrize("version", ["2.5", "3.1"])
def test_1_blank_and_public_are_one_namespace_NamespaceUtil(version: str) -> None:
    with serve(nacos_version=version) as (server, client, _):
        tok = token(client)
        assert client.post(CONFIGS, data={"dataId": "app", "group": "DEFAULT_GROUP", "content": "v1",
                                          "tenant": "public"}, headers={"accessToken": tok}).text == "true"
        for tenant in ({}, {"tenant": ""}, {"tenant": "public"}, {"tenant": " "}):
            assert get(client, tok, **tenant).text == "v1"
        # 2.x also folds "null" into the default namespace; on 3.x "null" is a namespace of its own
        assert get(client, tok, tenant="null").status_code == (200 if version == "2.5" else 404)
        assert server.get_config("app", tenant="public") == server.get_config("app") == "v1"


def test_1_listener_public_probe_MD5Util_by_version() -> None:
    md5 = hashlib.md5(b"v1").hexdigest()
    for version, public_changed in (("3.1", False), ("2.5", True)):
        with serve(nacos_version=version) as (server, client, _):
            server.set_config("app", "v1")
            tok = token(client)
            headers = {"accessToken": tok, "Long-Pulling-Timeout": "30000", "Long-Pulling-Timeout-No-Hangup": "true"}
            blank = client.post(LISTENER, data={"Listening-Configs": probe("app", "DEFAULT_GROUP", md5, "")},
                                headers=headers)
            assert blank.text == ""  # the right md5 for the default namespace: nothing changed
            public = client.post(LISTENER, data={"Listening-Configs": probe("app", "DEFAULT_GROUP", md5, "public")},
                                 headers=headers)
            # 3.x MD5Util normalizes the probe's tenant; 2.5.1 keys it as sent ("public" is another key)
            assert public.text == ("app%02DEFAULT_GROUP%02public%01\n" if public_changed else "")


# -- 2. login failures: plugin UserController(V3), AbstractAuthenticationManager, ConsoleExceptionHandler ---------

@pytest.mark.parametrize(("version", "status", "body"), [
    ("2.2", 500, "caused: zed;"),
    ("2.5", 500, "caused: User zed not found;"),
])
def test_2_unknown_user_login_on_2x_ConsoleExceptionHandler(version: str, status: int, body: str) -> None:
    with serve(nacos_version=version) as (_, client, _clock):
        response = client.post(LOGIN, data={"username": "zed", "password": "x"})
        assert (response.status_code, response.text) == (status, body)
        wrong = client.post(LOGIN, data={"username": "nacos", "password": "x"})
        assert (wrong.status_code, wrong.text) == (403, "user not found!")
        escaped = client.post(LOGIN, data={"username": "<b>", "password": "x"})  # HtmlUtils.htmlEscape
        assert "&lt;b&gt;" in escaped.text


def test_2_login_failures_on_the_3x_server_port_have_no_advice_UserControllerV3() -> None:
    with serve(nacos_version="3.1") as (_, client, _clock):
        for path in (LOGIN, "/nacos/v3/auth/user/login"):
            unknown = client.post(path, data={"username": "zed", "password": "x"})
            assert unknown.status_code == 500 and unknown.json()["message"] == "User zed not found"
            wrong = client.post(path, data={"username": "nacos", "password": "x"})
            assert wrong.status_code == 500 and wrong.json()["message"] == "No message available"


def test_2_unknown_user_credentials_on_a_resource_AuthFilter_AbstractWebAuthFilter() -> None:
    with serve(nacos_version="2.5") as (server, client, _):
        server.set_config("app", "v1")
        response = client.get(CONFIGS, params={"dataId": "app", "group": "DEFAULT_GROUP", "username": "zed",
                                               "password": "x"})
        assert response.status_code == 500 and response.json()["message"] == "Server failed, User zed not found"
    with serve(nacos_version="3.1") as (server, client, _):
        server.set_config("app", "v1")
        response = client.get(CONFIGS, params={"dataId": "app", "group": "DEFAULT_GROUP", "username": "zed",
                                               "password": "x"})
        assert (response.status_code, response.content) == (200, b"")  # the 3.x filter only logs the exception


# -- 2b. where a resource request's token is found: HttpIdentityContextBuilder, NacosAuthPluginService ------------

@pytest.mark.parametrize("version", ["2.2", "2.5", "3.1"])
def test_2b_token_resolution_HttpIdentityContextBuilder_NacosAuthPluginService_resolveToken(version: str) -> None:
    """Identical in 2.2.3, 2.5.1, 3.0.3 and the 3.1 snapshot: ``Authorization`` and ``accessToken`` are read from
    headers then parameters (names case-insensitive, a parameter overwriting a header); a non-blank
    ``Authorization`` starting with ``Bearer `` is the token (even when nothing follows the prefix, and then
    ``accessToken`` is not looked at); otherwise ``accessToken``."""
    with serve(nacos_version=version) as (server, client, _):
        server.set_config("app", "v1")
        tok = token(client)
        sent = {"dataId": "app", "group": "DEFAULT_GROUP"}

        def read(headers: dict[str, str], **params: str) -> httpx.Response:
            return client.get(CONFIGS, params={**sent, **params}, headers=headers)

        assert read({"Authorization": f"Bearer {tok}"}).text == "v1"
        assert read({"Authorization": f"Bearer {tok}", "accessToken": "junk"}).text == "v1"  # Bearer first
        assert read({"Authorization": "Basic abc", "accessToken": tok}).text == "v1"  # not Bearer: accessToken
        assert read({}, Authorization=f"Bearer {tok}").text == "v1"  # the name is read from parameters too
        assert read({}, accesstoken=tok).text == "v1"  # names are case-insensitive
        assert read({"Authorization": "Bearer junk"}, Authorization=f"Bearer {tok}").text == "v1"  # param wins
        assert read({"Authorization": f"bearer {tok}"}).status_code == 403  # the prefix is case-sensitive
        assert read({"Authorization": f"Bearer  {tok}"}).status_code == 403  # not stripped: " <token>" is invalid
        # "Bearer " with nothing after it is the (blank) token: accessToken is not read, credentials are
        assert read({"Authorization": "Bearer "}, accessToken=tok).status_code == 403
        assert read({"Authorization": "Bearer "}, username="nacos", password="nacos").text == "v1"


# -- 3. a deleted user's token: AbstractAuthenticationManager.authenticate(token), NacosRoleServiceImpl ------------

@pytest.mark.parametrize("version", ["2.5", "3.1"])
def test_3_deleted_users_token_keeps_working_AbstractAuthenticationManager(version: str) -> None:
    with serve(nacos_version=version) as (server, client, _):
        server.set_config("app", "v1")
        server.add_user("bob", "pw")
        server.grant("bob", ":*:*", "r")
        bob = token(client, "bob", "pw")
        admin = token(client)
        server.delete_user("bob")
        server.delete_user("nacos")
        assert get(client, bob).text == "v1"  # no user lookup, and bob's role survives the deletion
        assert get(client, admin).text == "v1"  # still a global admin by name
        again = client.post(LOGIN, data={"username": "bob", "password": "pw"})
        assert again.status_code == 500  # a re-login cannot help: the user is gone


# -- 4. v1 login parameters: plugin UserController.login(@RequestParam username, password) -------------------------

def test_4_v1_login_requires_username_and_password_UserController() -> None:
    with serve(nacos_version="2.5") as (server, client, _):
        tok = server.issue_token()
        alone = client.post(LOGIN, headers={"Authorization": "Bearer " + tok})
        assert alone.status_code == 500
        assert alone.text == ("caused: Required request parameter &#39;username&#39; for method parameter type "
                              "String is not present;")
        with_both = client.post(LOGIN, data={"username": "x", "password": "y"},
                                headers={"Authorization": "Bearer " + tok})
        assert with_both.json()["accessToken"] == tok  # present, the token still decides
    with serve(nacos_version="3.1") as (server, client, _):
        tok = server.issue_token()
        alone = client.post(LOGIN, data={"username": "nacos"}, headers={"Authorization": "Bearer " + tok})
        assert alone.status_code == 400 and alone.json()["message"] == "Required parameter 'password' is not present."
        v3 = client.post("/nacos/v3/auth/user/login", headers={"Authorization": "Bearer " + tok})
        assert v3.status_code == 200 and v3.json()["accessToken"] == tok  # UserControllerV3.login takes no params


# -- 5. token cache on: CachedJwtTokenManager ------------------------------------------------------------------------

def test_5_cached_tokens_skip_verification_until_the_cleanup_CachedJwtTokenManager() -> None:
    with serve(token_cache=True, token_ttl=100) as (server, client, clock):
        server.set_config("app", "v1")
        first = token(client)
        server.rotate_secret()
        assert get(client, first).status_code == 200  # a cache hit: the signature is not checked
        assert token(client) == first  # and the user's cached token is handed out again
        uncached = server.issue_token()
        server.rotate_secret()
        assert get(client, uncached).json()["message"] == "Invalid signature"
        # past exp the cached entry passes until cleanExpiredToken runs (30 s after start, then every 60 s)
        clock.set(START + 130)
        assert get(client, first).status_code == 200
        clock.set(START + 150)  # the run at start+150 drops entries that expired before it
        assert get(client, first).json()["message"] == "Invalid signature"


# -- 6. time: JwtTokenManager.getTokenTtlInSeconds, NacosSignatureAlgorithm.verify ----------------------------------

def test_6_token_ttl_and_validity_window_JwtTokenManager() -> None:
    with serve(token_ttl=10) as (server, client, clock):
        server.set_config("app", "v1")
        response = client.post(LOGIN, data={"username": "nacos", "password": "nacos"})
        assert response.json()["tokenTtl"] == 10  # exp - floor(now), though now is .25 past a second
        tok = response.json()["accessToken"]
        clock.set(math.floor(START) + 10.99)  # floor(now) == exp: valid for a fraction of an 11th second
        assert get(client, tok).status_code == 200
        clock.set(math.floor(START) + 11)
        assert get(client, tok).json()["message"] == "token expired!"


# -- 7. exact checks: NacosSignatureAlgorithm, NacosJwtPayload ------------------------------------------------------

def test_7_signature_and_shape_are_compared_exactly_NacosSignatureAlgorithm() -> None:
    with serve() as (server, client, _):
        server.set_config("app", "v1")
        tok = token(client)
        assert get(client, tok + "==").json()["message"] == "Invalid signature"
        assert get(client, "h.p.").json()["message"] == "token invalid!"
        assert get(client, tok + ".").status_code == 200  # Java's split drops a trailing empty part
        server.add_user("andré", "pw")
        accented = token(client, "andré", "pw")
        payload = accented.split(".")[1]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        assert raw.startswith('{"sub":"andré","exp":'.encode())  # Jackson writes UTF-8, not \\u00e9


# -- 8. config validation and long polling: ParamUtils, ConfigServletInner, LongPollingService --------------------

def test_8_config_validation_and_types_ParamUtils_ConfigServletInner() -> None:
    with serve() as (_, client, _clock):
        headers = {"accessToken": token(client)}
        bad = get(client, headers["accessToken"], data_id="a b/c")
        assert (bad.status_code, bad.text) == (400, "caused: invalid dataId : a b/c;")
        blank = client.post(CONFIGS, data={"dataId": "d", "group": "g", "content": "  "}, headers=headers)
        assert (blank.status_code, blank.text) == (400, "caused: content is blank :   ;")
        for config_type, content_type in (("json", "application/json;charset=UTF-8"),
                                          ("yaml", "text/plain;charset=UTF-8"), ("bogus", "text/plain;charset=UTF-8")):
            client.post(CONFIGS, data={"dataId": "d", "group": "g", "content": "{}", "type": config_type},
                        headers=headers)
            got = client.get(CONFIGS, params={"dataId": "d", "group": "g"}, headers=headers)
            assert got.headers["Config-Type"] == (config_type if config_type != "bogus" else "text")
            assert got.headers["Content-Type"] == content_type


def test_8_long_poll_hold_has_no_upper_bound_LongPollingService() -> None:
    server = MockNacosServer(poll_min_hold=10.0)
    tok = server.issue_token()
    current = hashlib.md5(b"v1").hexdigest()
    server.set_config("app", "v1")
    body = "Listening-Configs=" + httpx.QueryParams({"x": probe("app", "DEFAULT_GROUP", current)})["x"]
    for timeout, held in (("2000", 10.0), ("60000", 59.5)):
        answer = server.handle(MockRequest("POST", LISTENER, "", {
            "accesstoken": tok, "long-pulling-timeout": timeout,
            "content-type": "application/x-www-form-urlencoded"}, body.encode()))
        assert isinstance(answer, Hold) and answer.seconds == held


# -- 9. what was missing ---------------------------------------------------------------------------------------------

def test_9_namespaces_2x_NamespaceController() -> None:
    with serve(nacos_version="2.5") as (server, client, _):
        tok = token(client)
        server.set_config("a", "1", tenant="dev")
        created = client.post("/nacos/v1/console/namespaces", headers={"accessToken": tok},
                              data={"customNamespaceId": "dev", "namespaceName": "Dev"})
        assert created.text == "true"
        again = client.post("/nacos/v1/console/namespaces", headers={"accessToken": tok},
                            data={"customNamespaceId": "dev", "namespaceName": "Dev"})
        assert again.text == "false"
        listed = client.get("/nacos/v1/console/namespaces").json()
        assert listed["code"] == 200
        assert [(n["namespace"], n["namespaceShowName"], n["configCount"], n["type"]) for n in listed["data"]] == [
            ("", "public", 0, 0), ("dev", "Dev", 1, 2)]
        assert client.post("/nacos/v1/console/namespaces",
                           data={"customNamespaceId": "x", "namespaceName": "X"}).status_code == 403


def test_9_namespaces_3x_admin_api_NamespaceControllerV3() -> None:
    with serve(nacos_version="3.1") as (_, client, _clock):
        headers = {"accessToken": token(client)}
        created = client.post("/nacos/v3/admin/core/namespace", headers=headers,
                              data={"namespaceId": "dev", "namespaceName": "Dev"})
        assert created.json() == {"code": 0, "message": "success", "data": True}
        again = client.post("/nacos/v3/admin/core/namespace", headers=headers,
                            data={"namespaceId": "dev", "namespaceName": "Dev"})
        assert again.status_code == 500 and again.json()["code"] == 22002
        bad = client.post("/nacos/v3/admin/core/namespace", headers=headers,
                          data={"namespaceId": "a b", "namespaceName": "X"})
        assert bad.status_code == 400 and bad.json()["data"] == "namespaceId [a b] mismatch the pattern"
        listed = client.get("/nacos/v3/admin/core/namespace/list", headers=headers).json()["data"]
        assert [n["namespace"] for n in listed] == ["public", "dev"]


@pytest.mark.parametrize(("version", "path"), [("2.5", "/nacos/v1/auth/users/admin"),
                                               ("3.1", "/nacos/v3/auth/user/admin")])
def test_9_admin_initialisation_UserController_createAdminUser(version: str, path: str) -> None:
    with serve(nacos_version=version, users={}) as (_, client, _clock):
        assert client.post(LOGIN, data={"username": "nacos", "password": "pw"}).status_code == 500  # no user yet
        created = client.post(path, data={"password": "pw"}).json()
        assert (created if version == "2.5" else created["data"]) == {"username": "nacos", "password": "pw"}
        login = client.post(LOGIN, data={"username": "nacos", "password": "pw"}).json()
        assert login["globalAdmin"] is True
        conflict = client.post(path, data={"password": "other"}).json()
        assert conflict["code"] == 409
        if version == "2.5":  # RestResultUtils.failed(int, T data): the text lands in "data"
            assert conflict == {"code": 409, "message": None, "data": "have admin user cannot use it"}


def test_9_auth_switched_off_AuthFilter_by_version() -> None:
    with serve(nacos_version="2.5", auth_enabled=False) as (server, client, _):
        server.set_config("app", "v1")
        assert get(client, None).text == "v1"
        assert client.post("/nacos/v1/console/namespaces",
                           data={"customNamespaceId": "x", "namespaceName": "X"}).text == "true"
        assert client.post(LOGIN, data={"username": "nacos", "password": "nacos"}).json()["tokenTtl"] == 18000
    with serve(nacos_version="3.1", auth_enabled=False) as (server, client, _):
        server.set_config("app", "v1")
        assert get(client, None).text == "v1"  # server (open) API auth off, as 3.x ships
        admin_api = client.get("/nacos/v3/admin/core/namespace/list")  # nacos.core.auth.admin.enabled=true
        assert admin_api.status_code == 403


@pytest.mark.parametrize("version", ["2.5", "3.1"])
def test_9_permissions_NacosRoleServiceImpl(version: str) -> None:
    with serve(nacos_version=version) as (server, client, _):
        server.set_config("app", "v1")
        server.set_config("app", "d1", tenant="dev")
        server.add_user("bob", "pw")
        bob = token(client, "bob", "pw")
        denied = get(client, bob).json()["message"]
        assert denied.endswith("authorization failed!" + ("." if version == "3.1" else ""))
        server.grant("bob", "dev:*:*", "r")
        assert get(client, bob, tenant="dev").text == "d1"
        assert get(client, bob).status_code == 403  # only dev
        publish = client.post(CONFIGS, data={"dataId": "app", "group": "DEFAULT_GROUP", "content": "x",
                                             "tenant": "dev"}, headers={"accessToken": bob})
        assert publish.status_code == 403  # read only
        server.grant("bob", ":DEFAULT_GROUP:config/app*", "rw")
        assert get(client, bob).text == "v1"
        with pytest.raises(ValueError):
            server.grant("bob", ":*:*", "x")


def test_9_moved_endpoints_on_the_3x_server_port_ApiCompatibilityFilter() -> None:
    with serve(nacos_version="3.1") as (_, client, _clock):
        assert client.get("/nacos/v1/console/health/liveness").status_code == 404  # a console-port endpoint now
        assert client.get("/nacos/v3/admin/core/state/liveness").json() == {"code": 0, "message": "success",
                                                                            "data": "ok"}
        gone = client.get("/nacos/v2/cs/config", params={"dataId": "a", "group": "g"})
        assert gone.status_code == 410  # before the auth filter: no token needed to learn it moved
        result = json.loads(gone.json()["message"])
        assert result["code"] == 40000 and "GET ${contextPath:nacos}/v3/admin/cs/config" in result["message"]
    with serve(nacos_version="2.5") as (_, client, _clock):
        assert client.get("/nacos/v1/console/health/liveness").text == "OK"
        assert client.get("/nacos/v2/cs/config").status_code == 404


def test_versions_and_routes_are_extensible() -> None:
    from nacos_token_client.testing.model import text
    from nacos_token_client.testing.state import Route

    with pytest.raises(ValueError):
        MockNacosServer(nacos_version="2.4")
    assert MockNacosServer(nacos_version=2).nacos_version == "2.5"
    assert MockNacosServer(nacos_version=3).nacos_version == "3.1"
    route = Route("/v1/ns/ping", ("GET",), lambda state, request, params: text(200, state.nacos_version),
                  frozenset({"3.1"}))
    for version, expected in (("3.1", (200, "3.1")), ("2.5", (404, None))):
        server = MockNacosServer(nacos_version=version, extra_routes=[route])
        with httpx.Client(transport=server.transport(), base_url=BASE) as client:
            response = client.get("/nacos/v1/ns/ping")
            assert response.status_code == expected[0]
            if expected[1]:
                assert response.text == expected[1]
