"""Issue #12: quiet logging, redaction of server text at the edges, the waits counter, typed events."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, get_args
from urllib.parse import quote, quote_plus

import httpx
import pytest

from nacos_token_client import (
    AuthenticationError,
    LoginResponseError,
    LoginUnavailableError,
    MemoryTokenStore,
    NacosTokenAuth,
    NacosTokenError,
    RejectionKind,
    TokenEvent,
)
from nacos_token_client.errors import __all__ as error_names
from nacos_token_client.events import EventKind, EventOutcome

from .conftest import Harness
from .helpers import GatedTransport, wait_until

PASSWORD = "p@ss w0rd&x=1!é"
TOKEN = "opaque-token-XYZ-1234567890"
SPELLINGS = {PASSWORD, quote_plus(PASSWORD), quote(PASSWORD, safe=""), json.dumps(PASSWORD)[1:-1]}
LOGGER = "nacos_token_client"


# -- quiet logging -------------------------------------------------------------------------------------------------

def test_the_package_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger(LOGGER).handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_a_program_that_never_configured_logging_prints_nothing_of_ours() -> None:
    program = """
import httpx
from nacos_token_client import NacosTokenAuth, LoginUnavailableError
def answer(request):
    if request.url.port == 1:
        raise httpx.ConnectError("refused")
    return httpx.Response(503, text="busy")
auth = NacosTokenAuth("http://127.0.0.1:1,http://127.0.0.2:2", "nacos", "pw", transport=httpx.MockTransport(answer),
                      login_backoff=(0.001, 0.002), login_timeout=0.3)
try:
    auth.get_token()
except LoginUnavailableError:
    print("failed as expected")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "failed as expected", done.stderr
    assert done.stderr == ""


def failing_servers(request: httpx.Request) -> httpx.Response:
    if request.url.host == "first.test":
        raise httpx.ConnectError("connection refused")
    return httpx.Response(503, text="second is busy")


def test_retry_records_name_the_server_that_failed_at_info_and_the_give_up_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[TokenEvent] = []
    auth = NacosTokenAuth("http://first.test:8848,http://second.test:8848", "nacos", "pw",
                          transport=httpx.MockTransport(failing_servers), login_attempts=2,
                          login_backoff=(0.001, 0.002), login_timeout=0.2, store=MemoryTokenStore(),
                          on_event=events.append)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with pytest.raises(LoginUnavailableError) as caught:
        auth.get_token()
    ours = [r for r in caplog.records if r.name == LOGGER]
    attempts = [r for r in ours if r.getMessage().startswith("nacos login attempt")]
    assert attempts and all(r.levelno == logging.INFO for r in attempts)
    for record in attempts:
        message = record.getMessage()
        if "first.test" in message:
            assert "ConnectError" in message and "second.test" not in message
        else:
            assert "second.test" in message and "503" in message and "first.test" not in message
    assert {("first.test" in r.getMessage()) for r in attempts} == {True, False}  # both servers were tried
    warnings = [r for r in ours if r.levelno >= logging.WARNING]
    failures = [e for e in events if e.kind == "failure"]
    assert warnings and len(warnings) == len(failures)  # one warning per login that failed as a whole
    assert all(r.getMessage().startswith("token failure") for r in warnings)
    assert {e.outcome for e in failures} == {"LoginUnavailableError"}
    internal = ("TransientLoginError", "_DeadlinePassed", "StormBackOff", "LoginEndpointMissing")
    for text in [r.getMessage() for r in ours] + [str(caught.value), repr(caught.value)]:
        assert not any(name in text for name in internal), text


# -- redaction of echoed server text -----------------------------------------------------------------------------

def echo_form(status: int, as_json: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    """A proxy that answers every login with ``status`` and the form it was sent."""

    def answer(request: httpx.Request) -> httpx.Response:
        form = request.content.decode()
        if as_json:
            return httpx.Response(status, json={"message": f"bad login {form}", "password": PASSWORD})
        return httpx.Response(status, text=f"proxy error for {request.url}: {form} (raw: {PASSWORD})")

    return answer


def _chain(error: BaseException | None) -> list[BaseException]:
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def _assert_clean(texts: list[str], secrets: set[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, text


ECHOES = [(403, False, AuthenticationError), (503, False, LoginUnavailableError), (400, True, LoginResponseError),
          (401, True, AuthenticationError)]


def _echo_auth(status: int, as_json: bool, events: list[TokenEvent]) -> NacosTokenAuth:
    return NacosTokenAuth("http://nacos.test:8848", "nacos", PASSWORD, transport=httpx.MockTransport(
        echo_form(status, as_json)), login_attempts=1, login_backoff=(0.001, 0.001), login_timeout=0.2,
        store=MemoryTokenStore(), on_event=events.append)


def _texts(error: BaseException, events: list[TokenEvent], caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [str(e) for e in _chain(error)] + [repr(e) for e in _chain(error)]
    texts += [repr(e) for e in events] + [str(e.error) for e in events]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    return texts


@pytest.mark.parametrize(("status", "as_json", "error"), ECHOES)
def test_an_echoed_login_form_never_shows_the_password(caplog: pytest.LogCaptureFixture, status: int,
                                                       as_json: bool, error: type[NacosTokenError]) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[TokenEvent] = []
    auth = _echo_auth(status, as_json, events)
    with pytest.raises(error) as caught:
        auth.get_token()
    if error is AuthenticationError:  # the server's words are kept (200 characters), the password is not
        assert "password=<redacted>" in str(caught.value)
    assert any(e.kind == "failure" for e in events)
    _assert_clean(_texts(caught.value, events, caplog), SPELLINGS)


@pytest.mark.parametrize(("status", "as_json", "error"), ECHOES)
async def test_an_echoed_login_form_never_shows_the_password_async(caplog: pytest.LogCaptureFixture, status: int,
                                                                   as_json: bool,
                                                                   error: type[NacosTokenError]) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[TokenEvent] = []
    auth = _echo_auth(status, as_json, events)
    with pytest.raises(error) as caught:
        await auth.aget_token()
    _assert_clean(_texts(caught.value, events, caplog), SPELLINGS)


def echo_token(request: httpx.Request) -> httpx.Response:
    """Logs in with an opaque token; every other request is refused with the token it carried echoed back."""
    if request.url.path.endswith("/auth/login"):
        return httpx.Response(200, json={"accessToken": TOKEN, "tokenTtl": 100})
    sent = request.headers.get("Authorization", "")
    return httpx.Response(403, json={"status": 403, "message": f"token invalid! you sent {sent} ({TOKEN})"})


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_echoed_token_never_shows_in_rejection_events_or_logs(caplog: pytest.LogCaptureFixture,
                                                                       mode: str) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[TokenEvent] = []
    transport = httpx.MockTransport(echo_token)
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", PASSWORD, transport=transport,
                          store=MemoryTokenStore(), on_event=events.append)
    url = "http://nacos.test:8848/nacos/v1/cs/configs"
    if mode == "sync":
        with httpx.Client(auth=auth, transport=transport) as client:
            response = client.get(url)
    else:
        async with httpx.AsyncClient(auth=auth, transport=transport) as aclient:
            response = await aclient.get(url)
    assert response.status_code == 403
    rejections = [e for e in events if e.kind == "rejection"]
    assert rejections and all(e.error and "token invalid!" in e.error for e in rejections)
    _assert_clean([repr(e) for e in events] + [caplog.text], {TOKEN, PASSWORD})


# -- the waits counter ---------------------------------------------------------------------------------------------

def test_a_request_blocked_on_an_expired_token_is_a_wait(hi: Harness) -> None:
    auth = hi.auth()
    with hi.client(auth) as client:
        assert hi.get_config(client).status_code == 200
        assert auth.stats.waits == 0  # the very first login is counted as a login only
        info = auth.token_info()
        assert info is not None
        hi.clock.set(info.expires_at + 1)
        assert hi.get_config(client).status_code == 200
        assert (auth.stats.waits, auth.stats.logins) == (1, 2)
        info = auth.token_info()
        assert info is not None
        hi.clock.set(info.mandatory_at + 0.01)  # still usable, but too close to expiry: the request logs in
        assert hi.get_config(client).status_code == 200
        assert (auth.stats.waits, auth.stats.logins) == (2, 3)
        assert auth.stats.wait_seconds > 0


def test_every_thread_blocked_on_an_expired_token_counts_one_wait(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    gated.gate.set()
    auth = hi.auth(transport=gated)
    auth.get_token()
    info = auth.token_info()
    assert info is not None
    gated.gate.clear()  # the next login is held until every thread is blocked
    hi.clock.set(info.expires_at + 1)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(auth.get_token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: auth.stats.waits == 8)  # the leader and the seven waiting for its login
    finally:
        gated.gate.set()
    for thread in threads:
        thread.join(20)
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert (auth.stats.waits, hi.server.stats.logins) == (8, 2)


def test_stats_belong_to_the_auth_object_not_the_identity(hi: Harness) -> None:
    first, second = hi.auth(), hi.auth()  # one identity: one token, one login between them
    assert first.get_token() == second.get_token()
    assert (first.stats.logins, second.stats.logins) == (1, 0)
    assert (first.stats.cache_hits, second.stats.cache_hits) == (0, 1)


# -- typed events --------------------------------------------------------------------------------------------------

def test_event_kinds_and_outcomes_are_the_literals_and_compare_as_strings(hi: Harness) -> None:
    assert set(get_args(EventKind)) == {"login", "adopt", "failure", "invalidate", "rejection", "replay", "snapshot"}
    outcomes = set(get_args(EventOutcome))
    assert {kind.value for kind in RejectionKind} <= outcomes
    assert {name for name in error_names if name.endswith("Error")} <= outcomes
    events: list[TokenEvent] = []
    auth = hi.auth(on_event=events.append)
    with hi.client(auth) as client:
        hi.get_config(client)
        hi.server.rotate_secret()
        hi.get_config(client)
        auth.invalidate()
    seen: set[Any] = {(e.kind, e.outcome) for e in events}
    assert {("login", "ok"), ("rejection", "token"), ("replay", "sent"), ("invalidate", "dropped")} <= seen
    for event in events:
        assert event.kind in get_args(EventKind) and event.outcome in outcomes
        assert isinstance(event.kind, str) and isinstance(event.outcome, str)  # plain strings, as before
        assert json.loads(json.dumps({"kind": event.kind}))["kind"] == event.kind

