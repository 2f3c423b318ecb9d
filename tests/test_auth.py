"""NacosTokenAuth against the mock server: what a user of the SDK can observe."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from nacos_token_client import (
    AuthenticationError,
    LoginResponseError,
    LoginUnavailableError,
    MemoryTokenStore,
    NacosTokenAuth,
    RejectionKind,
    TokenEvent,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness
from .helpers import GatedTransport, RecordingTransport, is_login, token_of, wait_until


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


# -- basics --------------------------------------------------------------------------------------------------------

def test_logs_in_once_and_reuses_the_token(h: Harness) -> None:
    with h.client() as client:
        for _ in range(20):
            assert ok(h.get_config(client)).text == "greeting: hello"
    assert h.server.stats.logins == 1


def test_no_username_means_no_login(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    with httpx.Client(auth=hi.auth(None, None), transport=recorder) as client:
        assert hi.get_config(client).status_code == 403
    assert recorder.logins() == 0 and recorder.tokens_sent() == [None]


@pytest.mark.parametrize(("placement", "where"), [("header", "header"), ("query", "query"), ("bearer", "bearer")])
def test_token_placement(hi: Harness, placement: Any, where: str) -> None:
    recorder = RecordingTransport(hi.server.transport())
    auth = hi.auth(token_placement=placement)
    with httpx.Client(auth=auth, transport=recorder) as client:
        ok(hi.get_config(client))
    sent = next(r for r in recorder.requests if not is_login(r))
    token = auth.get_token()
    assert (sent.headers.get("accessToken") == token) == (where == "header")
    assert (sent.url.params.get("accessToken") == token) == (where == "query")
    assert (sent.headers.get("Authorization") == f"Bearer {token}") == (where == "bearer")


def test_login_sends_the_password_in_the_body_and_no_token(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    with httpx.Client(auth=hi.auth(transport=recorder, password="nacos"), transport=recorder) as client:
        ok(hi.get_config(client))
        hi.server.rotate_secret()
        ok(hi.get_config(client))  # the re-login happens while a token is cached: still none on it
    logins = [r for r in recorder.requests if is_login(r)]
    assert len(logins) == 2
    for request in logins:
        assert "password" not in str(request.url) and b"password=nacos" in request.content
        assert "accesstoken" not in request.headers and "authorization" not in request.headers


def test_token_goes_only_to_the_configured_origins(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    with httpx.Client(auth=hi.auth(), transport=recorder) as client:
        ok(hi.get_config(client))
        client.get("http://evil.test:8848/nacos/v1/cs/configs", params={"accessToken": "x"},
                   headers={"accessToken": "y"})
        client.get("https://nacos.test:8848/nacos/v1/cs/configs")  # another scheme is another origin
    foreign = [r for r in recorder.requests if r.url.host == "evil.test" or r.url.scheme == "https"]
    assert len(foreign) == 2
    for request in foreign:
        assert "accesstoken" not in request.headers and "accessToken" not in request.url.params


def redirecting(server: MockNacosServer, location: str = "http://attacker.test/steal") -> RecordingTransport:
    """Config reads on nacos.test answer 302 to ``location`` (once: a read of ``moved.yaml`` is redirected to
    ``app.yaml`` when ``location`` is "same-origin"); attacker.test thanks whoever comes."""
    inner = server.transport()

    class Redirect(httpx.BaseTransport, httpx.AsyncBaseTransport):
        def route(self, request: httpx.Request) -> httpx.Response | None:
            if request.url.host == "attacker.test":
                return httpx.Response(200, text="thanks")
            if not request.url.path.endswith("/v1/cs/configs") or request.url.host != "nacos.test":
                return None
            if location != "same-origin":
                return httpx.Response(302, headers={"Location": location})
            if request.url.params.get("dataId") == "moved.yaml":
                return httpx.Response(302, headers={"Location": str(request.url.copy_set_param("dataId", "app.yaml"))})
            return None

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return self.route(request) or inner.handle_request(request)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return self.route(request) or await inner.handle_async_request(request)

    return RecordingTransport(Redirect())


def _assert_nothing_stolen(recorder: RecordingTransport, token: str, hops: int) -> None:
    stolen = [r for r in recorder.requests if r.url.host == "attacker.test"]
    assert len(stolen) == hops
    for request in stolen:
        assert token not in str(request.url) and token not in str(list(request.headers.items()))


@pytest.mark.parametrize("location", ["http://attacker.test/steal", "https://attacker.test:8848/steal",
                                      "http://attacker.test:8848/nacos/v1/cs/configs"])
def test_by_default_a_cross_origin_redirect_carries_no_token_without_any_hook(hi: Harness, location: str) -> None:
    recorder = redirecting(hi.server, location)
    auth = hi.auth(transport=hi.server.transport())  # the default placement, and no redirect_guard installed
    with httpx.Client(auth=auth, transport=recorder, follow_redirects=True) as client:
        assert hi.get_config(client).text == "thanks"
    token = auth.get_token()
    assert token_of(recorder.requests[0]) == token  # the first hop did carry it (the test can fail)
    _assert_nothing_stolen(recorder, token, 1)


async def test_by_default_a_cross_origin_redirect_carries_no_token_async(hi: Harness) -> None:
    recorder = redirecting(hi.server)
    auth = hi.auth(transport=hi.server.transport())
    async with httpx.AsyncClient(auth=auth, transport=recorder, follow_redirects=True) as client:
        response = await client.get(hi.url("/v1/cs/configs"), params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"})
        assert response.text == "thanks"
    token = await auth.aget_token()
    assert token_of(recorder.requests[0]) == token
    _assert_nothing_stolen(recorder, token, 1)


def test_by_default_same_origin_redirects_keep_the_token(hi: Harness) -> None:
    recorder = redirecting(hi.server, "same-origin")
    auth = hi.auth(transport=hi.server.transport())
    with httpx.Client(auth=auth, transport=recorder, follow_redirects=True) as client:
        response = hi.get_config(client, data_id="moved.yaml")
        assert response.status_code == 200 and response.text == "greeting: hello"
        assert len(response.history) == 1
    assert recorder.tokens_sent() == [auth.get_token()] * 2


async def test_by_default_same_origin_redirects_keep_the_token_async(hi: Harness) -> None:
    recorder = redirecting(hi.server, "same-origin")
    auth = hi.auth(transport=hi.server.transport())
    async with httpx.AsyncClient(auth=auth, transport=recorder, follow_redirects=True) as client:
        response = await client.get(hi.url("/v1/cs/configs"), params={"dataId": "moved.yaml", "group": "DEFAULT_GROUP"})
        assert response.status_code == 200 and response.text == "greeting: hello"
    assert recorder.tokens_sent() == [await auth.aget_token()] * 2


def test_the_default_placement_is_the_bearer_header(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    auth = hi.auth()
    with httpx.Client(auth=auth, transport=recorder) as client:
        ok(hi.get_config(client))
    sent = next(r for r in recorder.requests if not is_login(r))
    assert sent.headers["Authorization"] == f"Bearer {auth.get_token()}"
    assert "accessToken" not in sent.headers and "accessToken" not in sent.url.params


@pytest.mark.parametrize("placement", ["header", "query", "bearer"])
def test_cross_origin_redirects_never_carry_the_token(hi: Harness, placement: Any) -> None:
    recorder = redirecting(hi.server)
    auth = hi.auth(token_placement=placement, transport=hi.server.transport())
    with httpx.Client(auth=auth, transport=recorder, follow_redirects=True,
                      event_hooks={"request": [auth.redirect_guard]}) as client:
        assert hi.get_config(client).text == "thanks"
    with httpx.Client(auth=auth, transport=recorder) as client:  # following by hand
        response = hi.get_config(client)
        assert response.next_request is not None
        client.send(response.next_request)
    token = auth.get_token()
    stolen = [r for r in recorder.requests if r.url.host == "attacker.test"]
    assert len(stolen) == 2
    for request in stolen:
        assert token not in str(request.url) and token not in str(list(request.headers.items()))


def test_wrapper_client_guards_redirects_by_itself(hi: Harness) -> None:
    from nacos_token_client import NacosTokenClient

    recorder = redirecting(hi.server)
    with NacosTokenClient(hi.address, "nacos", "nacos", transport=recorder, store=hi.store,
                          follow_redirects=True) as client:
        assert client.get("/v1/cs/configs", params={"dataId": "a", "group": "b"}).text == "thanks"
        token = client.get_token()
    stolen = [r for r in recorder.requests if r.url.host == "attacker.test"]
    assert stolen and all(token not in str(list(r.headers.items())) for r in stolen)


# -- zones, with an injected clock ---------------------------------------------------------------------------------

def test_advisory_zone_refreshes_in_the_background_and_nobody_waits(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    auth = hi.auth(transport=gated)
    gated.gate.set()
    with httpx.Client(auth=auth, transport=hi.server.transport()) as client:
        ok(hi.get_config(client))
        first = auth.token_info()
        assert first is not None
        gated.gate.clear()
        hi.clock.set(first.refresh_at + 1)
        for _ in range(5):  # the login is held at the gate, yet every request is served at once
            ok(hi.get_config(client))
        assert gated.login_started.wait(5)
        assert auth.token_info() == first
        gated.gate.set()
        assert wait_until(lambda: auth.token_info() != first)
        ok(hi.get_config(client))
    assert hi.server.stats.logins == 2 and auth.stats.waits == 0


def test_mandatory_zone_waits_for_the_single_login(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    gated.gate.set()
    auth = hi.auth(transport=gated)
    with httpx.Client(auth=auth, transport=hi.server.transport()) as client:
        ok(hi.get_config(client))
        info = auth.token_info()
        assert info is not None
        gated.gate.clear()
        gated.login_started.clear()
        hi.clock.set(info.mandatory_at + 1)
        done: list[int] = []
        threads = [threading.Thread(target=lambda: done.append(hi.get_config(client).status_code)) for _ in range(4)]
        for t in threads:
            t.start()
        assert gated.login_started.wait(5)
        assert done == []  # everyone waits for the one login
        gated.gate.set()
        for t in threads:
            t.join(10)
        assert done == [200] * 4
    assert hi.server.stats.logins == 2


def test_an_expired_token_is_never_sent(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    auth = hi.auth(transport=recorder)
    with httpx.Client(auth=auth, transport=recorder) as client:
        ok(hi.get_config(client))
        old = auth.get_token()
        info = auth.token_info()
        assert info is not None
        hi.clock.set(info.expires_at - 0.5)  # inside the safety margin: too late to send
        ok(hi.get_config(client))
    assert recorder.tokens_sent() == [old, auth.get_token()] and old != auth.get_token()
    assert hi.server.stats.rejections == {}


@pytest.mark.parametrize("server_options", [{"token_ttl": 5}])
def test_a_five_second_token_works_like_a_five_hour_one(h: Harness) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        for _ in range(120):  # one minute in half-second steps
            ok(h.get_config(client))
            h.clock.advance(0.5)
            wait_until(lambda: auth.stats.logins + auth.stats.failures >= 1, 0)  # let a refresh thread land
    logins = h.server.stats.logins
    assert 12 <= logins <= 16, logins  # ~one per 4.5 s of life, never one per request
    assert h.server.stats.rejections == {}


# -- invalidate ----------------------------------------------------------------------------------------------------

def test_invalidate_drops_the_token_and_the_next_request_logs_in(h: Harness) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        ok(h.get_config(client))
        first = auth.get_token()
        h.clock.advance(2)  # a new login in another second mints a different token
        assert auth.invalidate("not-the-current-token") is False
        assert auth.get_token() == first
        assert auth.invalidate() is True
        assert auth.token_info() is None
        ok(h.get_config(client))
        assert auth.get_token() != first
        assert auth.invalidate(auth.get_token()) is True
    assert h.server.stats.logins == 2 and auth.stats.invalidations == 2


def test_invalidate_from_another_thread(hi: Harness) -> None:
    auth = hi.auth()
    auth.get_token()
    thread = threading.Thread(target=auth.invalidate)
    thread.start()
    thread.join()
    assert auth.token_info() is None


# -- rejection, replay ---------------------------------------------------------------------------------------------

def rotate(server: MockNacosServer, clock: Any) -> None:
    server.rotate_secret()


def revoke_current(server: MockNacosServer, clock: Any, auth: NacosTokenAuth) -> None:
    server.revoke(auth.get_token())
    clock.advance(1)


@pytest.mark.parametrize("server_options", [{"nacos_version": 2}, {"nacos_version": 3}])
@pytest.mark.parametrize("how", ["rotation", "revoked", "restart"])
def test_server_rejections_heal_with_one_login_and_one_replay(h: Harness, how: str) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        ok(h.get_config(client))
        if how == "rotation":
            h.server.rotate_secret()
        elif how == "revoked":
            revoke_current(h.server, h.clock, auth)
        else:  # a restarted server with a new random key
            h.server.secret_key = MockNacosServer().secret_key
        ok(h.get_config(client))
        ok(h.get_config(client))
    assert h.server.stats.logins == 2 and auth.stats.replays == 1
    assert sum(h.server.stats.rejections.values()) == 1


REJECTIONS = [
    (403, "token invalid!"), (403, "token expired!"), (403, "Invalid signature"),
    (403, "unsupported signature algorithm"), (403, "token frozen!"),
    (403, "Code: 401, Message: token invalid!."), (403, "Code: 401, Message: token expired!."),
    (403, "Code: 401, Message: Invalid signature."), (403, "Code: 401, Message: unsupported signature algorithm."),
    (403, "Code: 401, Message: token frozen!."), (401, "token 已过期"), (401, ""),
]


@pytest.mark.parametrize(("status", "text"), REJECTIONS)
def test_every_token_rejection_heals(hi: Harness, status: int, text: str) -> None:
    inner = hi.server.transport()
    pending = {"reject": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            hi.clock.advance(1)
            return inner.handle_request(request)
        if pending["reject"]:
            pending["reject"] = False
            return httpx.Response(status, json={"timestamp": "x", "status": status, "error": "Forbidden",
                                                 "message": text, "path": request.url.path})
        return inner.handle_request(request)

    transport = httpx.MockTransport(handler)
    auth = hi.auth(transport=transport)
    with httpx.Client(auth=auth, transport=transport) as client:
        ok(hi.get_config(client))
    assert hi.server.stats.logins == 2 and auth.stats.replays == 1


@pytest.mark.parametrize("text", ["authorization failed!", "Code: 403, Message: authorization failed!.",
                                  "user not found!", "something else entirely"])
def test_other_403s_come_back_without_a_login(hi: Harness, text: str) -> None:
    inner = hi.server.transport()

    def handler(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            return inner.handle_request(request)
        return httpx.Response(403, json={"status": 403, "message": text})

    transport = httpx.MockTransport(handler)
    auth = hi.auth(transport=transport)
    with httpx.Client(auth=auth, transport=transport) as client:
        assert hi.get_config(client).status_code == 403
    assert hi.server.stats.logins == 1 and auth.stats.replays == 0


def test_a_token_the_server_thinks_expired_heals(h: Harness) -> None:
    """Clock skew: the server's clock runs ahead, so it expires the token before the client would."""
    from .conftest import FakeClock

    client_clock = FakeClock()
    auth = h.auth(clock=client_clock)
    with h.client(auth) as client:
        ok(h.get_config(client))
        h.clock.advance(18001)  # the server now sees the token as expired ...
        client_clock.advance(60)  # ... while the client thinks it has hours left
        ok(h.get_config(client))
    assert h.server.stats.rejections == {"token expired!": 1} and h.server.stats.logins == 2


@pytest.mark.parametrize("server_options", [{"active_timeout": 60.0}])
def test_idle_freeze_heals(h: Harness) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        ok(h.get_config(client))
        h.clock.advance(61)
        ok(h.get_config(client))
    assert h.server.stats.rejections == {"token frozen!": 1} and h.server.stats.logins == 2


@pytest.mark.parametrize("server_options", [{"nacos_version": 2}, {"nacos_version": 3}])
def test_permission_denial_is_returned_without_a_login(h: Harness) -> None:
    h.server.deny("secret.yaml")
    auth = h.auth()
    with h.client(auth) as client:
        response = h.get_config(client, "secret.yaml")
    assert response.status_code == 403 and "authorization failed!" in response.text
    assert h.server.stats.logins == 1 and auth.stats.replays == 0


BODIES: dict[str, dict[str, Any]] = {
    "bytes": {"content": b"dataId=r&group=g&content=bytes",
              "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    "str": {"content": "dataId=r&group=g&content=str",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    "form": {"data": {"dataId": "r", "group": "g", "content": "form"}},
    "json": {"json": {"any": "json"}, "params": {"dataId": "r", "group": "g", "content": "json"}},
    "multipart": {"files": {"file": ("a.txt", b"data")}, "params": {"dataId": "r", "group": "g",
                                                                      "content": "multipart"}},
}


@pytest.mark.parametrize("kind", list(BODIES))
def test_replayable_bodies_are_replayed(h: Harness, kind: str) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        auth.get_token()
        h.server.rotate_secret()
        response = client.post(h.url("/v1/cs/configs"), **BODIES[kind])
    assert response.text == "true" and h.server.get_config("r", "g") == kind
    assert auth.stats.replays == 1


def test_a_streamed_body_is_not_replayed_but_the_token_is_renewed(h: Harness) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        old = auth.get_token()
        h.server.rotate_secret()

        def body() -> Any:
            yield b"dataId=s&group=g&content=stream"

        response = client.post(h.url("/v1/cs/configs"), content=body(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 403  # the original answer comes back
        assert auth.get_token() != old and h.server.stats.logins == 2  # … and the token was renewed
        ok(h.get_config(client))
    assert auth.stats.replays == 0


def test_never_loops_when_the_fresh_token_is_rejected_too(hi: Harness) -> None:
    inner = hi.server.transport()
    calls = {"resources": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            hi.clock.advance(1)  # Nacos tokens are deterministic within a second: let each login mint a new one
            return inner.handle_request(request)
        calls["resources"] += 1
        return httpx.Response(403, json={"status": 403, "message": "token expired!"})

    transport = httpx.MockTransport(handler)
    auth = hi.auth(transport=transport)
    with httpx.Client(auth=auth, transport=transport) as client:
        assert hi.get_config(client).status_code == 403
    assert calls["resources"] == 2 and hi.server.stats.logins == 2


def test_custom_classifier(hi: Harness) -> None:
    auth = hi.auth(rejection_classifier=lambda response: RejectionKind.PERMISSION)
    with hi.client(auth) as client:
        ok(hi.get_config(client))
        hi.server.rotate_secret()
        assert hi.get_config(client).status_code == 403
    assert hi.server.stats.logins == 1


def test_replaced_session_surfaces_unless_opted_in(hi: Harness) -> None:
    inner = hi.server.transport()
    state = {"replaced": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            hi.clock.advance(1)
        if not is_login(request) and state["replaced"]:
            state["replaced"] = False
            return httpx.Response(401, json={"code": -4, "msg": "token 已被顶下线"})
        return inner.handle_request(request)

    transport = httpx.MockTransport(handler)
    with httpx.Client(auth=hi.auth(transport=transport), transport=transport) as client:
        assert hi.get_config(client).status_code == 401
    state["replaced"] = True
    opted = hi.auth(transport=transport, relogin_on_replaced=True, store=MemoryTokenStore())
    with httpx.Client(auth=opted, transport=transport) as client:
        ok(hi.get_config(client))
    assert opted.stats.replays == 1


# -- login failures ------------------------------------------------------------------------------------------------

def test_transient_login_failures_are_retried(h: Harness) -> None:
    h.server.fail_logins(2, status=503)
    auth = h.auth()
    with h.client(auth) as client:
        ok(h.get_config(client))
    assert h.server.stats.login_attempts == 3 and h.server.stats.logins == 1


def test_persistent_failures_raise_login_unavailable(h: Harness) -> None:
    h.server.down = True
    auth = h.auth(login_attempts=4, login_timeout=1.0)
    started = time.monotonic()
    with h.client(auth) as client, pytest.raises(LoginUnavailableError) as info:
        h.get_config(client)
    # the request spends its own budget (login_timeout) on logins of 4 attempts each, then fails
    assert 1.0 <= time.monotonic() - started < 3.0
    assert info.value.attempts == 4 and h.server.stats.login_attempts >= 4
    assert "503" in str(info.value) and "login_timeout (1 s)" in str(info.value)


def test_unreachable_servers_are_skipped() -> None:
    server = MockNacosServer()
    with server.run() as url, MockNacosServer().run() as dead_url:
        pass  # dead_url now refuses connections
    with server.run() as url:
        auth = NacosTokenAuth([dead_url, url], "nacos", "nacos", store=MemoryTokenStore(),
                              login_backoff=(0.01, 0.02))
        with httpx.Client(auth=auth) as client:
            response = client.get(url + "/nacos/v1/console/health/liveness")
        assert response.text == "OK" and auth.token_info() is not None
        assert server.stats.logins == 1


def test_a_slow_login_times_out(hi: Harness) -> None:
    hi.server.login_delay = 0.5
    auth = hi.auth(timeout=0.05, login_attempts=2, login_timeout=0.5)
    with pytest.raises(LoginUnavailableError, match="attempt"):
        auth.get_token()


@pytest.mark.parametrize("server_options", [{}, {"unknown_user_status": 500}])
def test_refused_credentials_fail_at_once_and_are_remembered(h: Harness) -> None:
    auth = h.auth("ghost", "wrong")
    with h.client(auth) as client:
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                h.get_config(client)
        assert h.server.stats.login_attempts == 1  # no retry, and the negative cache spares the server
        h.clock.advance(6)
        with pytest.raises(AuthenticationError):
            h.get_config(client)
    assert h.server.stats.login_attempts == 2


@pytest.mark.parametrize(("body", "words"), [
    (b"<html>maintenance</html>", "HTML"),
    (b'{"tokenTtl": 18000}', "no accessToken"),
    (b'{"accessToken": "t", "tokenTtl": "soon"}', "not a number"),
    (b'{"accessToken": "t", "tokenTtl": -1}', "positive"),
])
def test_malformed_login_answers(body: bytes, words: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    auth = NacosTokenAuth("nacos.test", "nacos", "nacos", transport=transport, store=MemoryTokenStore())
    with pytest.raises(LoginResponseError, match=words):
        auth.get_token()


def test_failed_background_refresh_keeps_serving_the_valid_token(hi: Harness, caplog: pytest.LogCaptureFixture) -> None:
    auth = hi.auth(login_attempts=1)
    with hi.client(auth) as client:
        ok(hi.get_config(client))
        info = auth.token_info()
        assert info is not None
        hi.server.down = True
        hi.clock.set(info.refresh_at + 1)
        with caplog.at_level(logging.WARNING, "nacos_token_client"):
            for _ in range(3):
                ok(hi.get_config(client))
            assert wait_until(lambda: auth.stats.failures == 1)
            # the warning is logged by the refresh thread just after it counts the failure
            assert wait_until(lambda: "background token refresh failed" in caplog.text)
            ok(hi.get_config(client))  # backing off: no second attempt yet
        assert "background token refresh failed" in caplog.text
        assert auth.stats.failures == 1 and auth.token_info() == info
        hi.server.down = False
        hi.clock.advance(5)
        ok(hi.get_config(client))
        assert wait_until(lambda: auth.token_info() != info)


# -- API versions, sharing, info -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("server_options", "api", "login_path"), [
    ({"nacos_version": 2}, "auto", "/v1/auth/login"),
    ({"nacos_version": 3}, "auto", "/v3/auth/user/login"),
    ({"nacos_version": 3}, "v3", "/v3/auth/user/login"),
])
def test_api_versions(hi: Harness, api: Any, login_path: str) -> None:
    recorder = RecordingTransport(hi.server.transport())
    auth = hi.auth(api=api, transport=recorder)
    auth.get_token()
    auth.invalidate()
    hi.clock.advance(1)
    auth.get_token()
    paths = [r.url.path for r in recorder.requests]
    assert paths[-1] == "/nacos" + login_path
    assert paths.count("/nacos/v3/auth/user/login") <= (2 if login_path.startswith("/v3") else 1)


def test_two_auth_objects_with_one_identity_log_in_once(hi: Harness) -> None:
    a, b = hi.auth(), hi.auth()
    assert a.get_token() == b.get_token()
    other = hi.auth("admin", "admin")
    hi.server.add_user("admin", "admin")
    hi.clock.advance(1)
    assert other.get_token() != a.get_token()
    assert hi.server.stats.logins == 2


def test_a_wrong_password_never_borrows_a_token_of_the_same_identity(hi: Harness) -> None:
    wrong = hi.auth("nacos", "wrong")
    with pytest.raises(AuthenticationError):
        wrong.get_token()
    right = hi.auth("nacos", "nacos")
    assert right.get_token()  # not blocked by the wrong password's negative cache
    with pytest.raises(AuthenticationError):
        wrong.get_token()  # and the wrong password does not adopt the right one's token
    assert hi.server.stats.logins == 1


def test_token_info_is_a_secret_free_snapshot(hi: Harness) -> None:
    auth = hi.auth()
    assert auth.token_info() is None
    token = auth.get_token()
    info = auth.token_info()
    assert info is not None and token not in repr(info)
    # min(sent_at + tokenTtl, exp): tokenTtl is exp - floor(now) = 18000, so exp (whole seconds) bounds it
    assert info.lifetime == pytest.approx(17999.75)
    assert info.refresh_at >= info.issued_at + 0.9 * info.lifetime
    with pytest.raises(AttributeError):
        info.source = "x"  # type: ignore[misc]


def test_events_hook(hi: Harness) -> None:
    events: list[TokenEvent] = []
    auth = hi.auth(on_event=events.append)
    with hi.client(auth) as client:
        ok(hi.get_config(client))
        hi.server.rotate_secret()
        ok(hi.get_config(client))
        auth.invalidate()
    kinds = [(e.kind, e.reason.value if e.reason else None, e.outcome) for e in events]
    assert kinds == [("login", "absent", "ok"), ("rejection", None, "token"), ("login", "rejected", "ok"),
                     ("replay", "rejected", "sent"), ("invalidate", "forced", "dropped")]


def test_a_raising_hook_never_breaks_a_request(hi: Harness) -> None:
    def hook(event: TokenEvent) -> None:
        raise RuntimeError("boom")

    with hi.client(hi.auth(on_event=hook)) as client:
        ok(hi.get_config(client))


# -- async ---------------------------------------------------------------------------------------------------------

async def test_async_logs_in_once_heals_and_refreshes(h: Harness) -> None:
    auth = h.auth()
    async with h.async_client(auth) as client:
        url = h.url("/v1/cs/configs")
        params = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}
        responses = await asyncio.gather(*(client.get(url, params=params) for _ in range(50)))
        assert {r.status_code for r in responses} == {200}
        h.server.rotate_secret()
        assert (await client.get(url, params=params)).status_code == 200
        info = auth.token_info()
        assert info is not None
        h.clock.set(info.refresh_at + 1)
        assert (await client.get(url, params=params)).status_code == 200
        for _ in range(200):
            if auth.token_info() != info:
                break
            await asyncio.sleep(0.01)
        assert auth.token_info() != info
    assert h.server.stats.logins == 3 and auth.stats.replays == 1


async def test_async_needs_an_async_capable_transport(hi: Harness) -> None:
    class SyncOnly(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(500)

    auth = hi.auth(transport=SyncOnly())
    with pytest.raises(Exception, match="async_transport"):
        await auth.aget_token()


# -- secrets -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["header", "query", "bearer"])
def test_no_secret_in_logs_reprs_or_errors(h: Harness, caplog: pytest.LogCaptureFixture, placement: Any) -> None:
    hi = h  # over both transports: over loopback httpcore logs (login answers' headers) too
    password = "Pa55-w0rd-SECRET"
    hi.server.add_user("alice", password)
    hi.server.grant("alice", ":*:*", "rw")  # a user without a role is refused every config (NacosRoleServiceImpl)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        auth = hi.auth("alice", password, token_placement=placement, login_timeout=0.5)
        with hi.client(auth) as client:
            ok(hi.get_config(client))
            tokens = [auth.get_token()]
            hi.server.rotate_secret()
            ok(hi.get_config(client))
            tokens.append(auth.get_token())
            hi.server.down = True
            auth.invalidate()
            try:
                hi.get_config(client)
            except LoginUnavailableError as exc:
                texts.append(str(exc) + repr(exc))
            hi.server.down = False
        wrong = hi.auth("alice", password + "x", store=MemoryTokenStore(), token_placement=placement)
        try:
            wrong.get_token()
        except AuthenticationError as exc:
            texts.append(str(exc) + repr(exc))
        texts += [repr(auth), str(auth.token_info()), repr(auth.stats), repr(wrong), repr(auth._source.login)]  # type: ignore[union-attr]
    texts += [record.getMessage() for record in caplog.records]
    texts += [json.dumps(record.args, default=str) for record in caplog.records if record.args]
    assert any("httpx" in r.name for r in caplog.records)  # httpx's own INFO lines were captured too
    blob = "\n".join(texts)
    assert password not in blob
    for token in tokens:
        assert token not in blob and token.split(".")[2] not in blob


def test_redaction_of_other_libraries_log_lines() -> None:
    from nacos_token_client.redaction import redact

    jwt_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJuYWNvcyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    lines = [
        f'HTTP Request: GET http://h/nacos/v1/cs/configs?dataId=a&accessToken={jwt_token} "HTTP/1.1 200 OK"',
        f"return_value=(b'HTTP/1.1', 200, b'OK', [(b'Authorization', b'Bearer {jwt_token}')])",
        "accessToken: opaque-token-123",
        f"{{'accessToken': '{jwt_token}'}}",
    ]
    for line in lines:
        cleaned = redact(line)
        assert jwt_token not in cleaned and "opaque-token-123" not in cleaned and "<redacted:" in cleaned
    assert redact("nothing secret here: dataId=a&group=b") == "nothing secret here: dataId=a&group=b"
