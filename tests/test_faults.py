"""The core under real faults (issue #8): each defect the fault probe found, reproduced as a user would meet it.

Numbered as in the issue. Every test here failed before the fix, for the reason the issue gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nacos_token_client import (
    AuthenticationError,
    FileTokenStore,
    LoginResponseError,
    LoginUnavailableError,
    MemoryTokenStore,
    NacosTokenAuth,
    TokenEvent,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import FakeClock, Harness
from .helpers import GatedTransport, is_login, token_of, wait_until
from .test_concurrency import thread_herd

PARAMS = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}


class AnswerHoldingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Logins reach the server at once, but their answers are held until ``gate`` is set (when ``holding``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.holding = False
        self.held = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = self.inner.handle_request(request)
        if is_login(request) and self.holding:
            self.held.set()
            assert self.gate.wait(20)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = await self.inner.handle_async_request(request)
        if is_login(request) and self.holding:
            self.held.set()
            await asyncio.to_thread(self.gate.wait, 20)
        return response


# -- 1. a failed background refresh must not fail requests that still have budget -------------------------------

@pytest.mark.parametrize("server_options", [{"token_ttl": 4}])
def test_1_failed_background_refresh_does_not_fail_waiters_with_budget(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    gated.gate.set()
    auth = hi.auth(transport=gated, login_attempts=1)
    with hi.client(auth) as client:
        assert hi.get_config(client).status_code == 200
        gated.gate.clear()
        gated.login_started.clear()
        info = auth.token_info()
        assert info is not None
        hi.clock.set(info.mandatory_at - 0.01)  # advisory zone: one background refresh starts, its login hangs
        assert hi.get_config(client).status_code == 200
        assert gated.login_started.wait(5)
        hi.clock.set(info.expires_at + 0.5)  # the token expires while that login is still in flight
        hi.server.fail_logins(1)  # ... and that login will fail with a 503
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(hi.get_config(client).status_code))
                   for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # the eight wait on the failing flight
        gated.gate.set()
        for t in threads:
            t.join(20)
    # the next login (right after the failed one) succeeds, and every request had its own 30 s to wait for it
    assert results == [200] * 8
    assert hi.server.stats.logins == 2


# -- 2. replays with tokens staled by a rotation -------------------------------------------------------------------

def test_2_a_login_in_flight_during_a_rotation_does_not_hand_requests_an_old_key_token(hi: Harness) -> None:
    holding = AnswerHoldingTransport(hi.server.transport())
    auth = hi.auth(transport=holding)
    with hi.client(auth) as client:
        assert hi.get_config(client).status_code == 200
        holding.holding = True
        hi.clock.advance(0.95 * 18000)  # advisory: the background login gets an answer signed with the old key
        assert hi.get_config(client).status_code == 200
        assert holding.held.wait(5)
        hi.server.rotate_secret()  # ... the key rotates while that answer is on its way
        holding.holding = False
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(hi.get_config(client).status_code))
                   for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # the eight are rejected (old key) and wait for a login begun after the rejection
        holding.gate.set()
        for t in threads:
            t.join(20)
    assert statuses == [200] * 8
    assert hi.server.stats.logins == 3  # the first, the one in flight, and one begun after the rejections


class RotateBeforeEach(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Rotates the key just before the first ``n`` config requests: a request queued behind a busy loop (or a
    slow proxy) meets a rotation, and so does its first replay."""

    def __init__(self, server: MockNacosServer, n: int = 2) -> None:
        self.server = server
        self.inner = server.transport()
        self.rotations = n

    def _maybe_rotate(self, request: httpx.Request) -> None:
        if not is_login(request) and self.rotations:
            self.rotations -= 1
            self.server.rotate_secret()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._maybe_rotate(request)
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._maybe_rotate(request)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_2_a_replay_staled_by_the_next_rotation_is_replayed_again(hi: Harness, mode: str) -> None:
    events: list[TokenEvent] = []
    auth = hi.auth(on_event=events.append)
    auth.get_token()
    hi.clock.advance(60)
    transport = RotateBeforeEach(hi.server)
    if mode == "sync":
        with httpx.Client(auth=auth, transport=transport) as client:
            response = hi.get_config(client)
    else:
        async with httpx.AsyncClient(auth=auth, transport=transport) as aclient:
            response = await aclient.get(hi.url("/v1/cs/configs"), params=PARAMS)
    assert response.status_code == 200 and response.text == "greeting: hello"
    assert [e.outcome for e in events if e.kind == "replay"] == ["rejected_again", "sent"]
    assert auth.stats.replays == 2


def test_2_replays_stop_after_two(hi: Harness) -> None:
    auth = hi.auth()
    auth.get_token()
    hi.clock.advance(60)
    transport = RotateBeforeEach(hi.server, n=10)
    with httpx.Client(auth=auth, transport=transport) as client:
        response = hi.get_config(client)
    assert response.status_code == 403  # never a loop: the third rejection goes back as it is
    assert auth.stats.replays == 2 and transport.rotations == 7


# -- 3. a closed event loop must not wedge an identity -----------------------------------------------------------

def test_3_a_refresh_task_on_a_closed_loop_does_not_wedge_the_identity(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    gated.gate.set()
    auth = hi.auth(transport=gated, login_timeout=5.0)
    auth.get_token()
    gated.gate.clear()
    gated.login_started.clear()
    hi.clock.advance(0.95 * 18000)

    def app_thread() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(auth.aget_token())  # starts the background refresh task
        loop.run_until_complete(asyncio.sleep(0.05))  # ... whose login hangs
        loop.close()  # closed without cancelling it; the thread then exits

    thread = threading.Thread(target=app_thread)
    thread.start()
    thread.join(5)
    assert gated.login_started.wait(5)
    gated.gate.set()
    hi.clock.advance(0.06 * 18000)  # expired: every request needs the login the dead loop never finishes
    started = time.monotonic()
    token = auth.get_token()
    assert time.monotonic() - started < 2.0
    assert token and hi.server.stats.logins == 2
    # and from another thread, another auth object with the same identity
    assert hi.auth(transport=gated).get_token() == token


# -- 4. a cancelled store look must not stop later looks -----------------------------------------------------------

def test_4_a_cancelled_store_look_does_not_stop_later_looks(tmp_path: Path, clock: FakeClock) -> None:
    server = MockNacosServer(clock=clock)
    path = tmp_path / "tokens.json"
    # Two stores on one file behave like two processes: each has its own token state.
    a = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=FileTokenStore(path), clock=clock,
                       transport=server.transport())
    b = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=FileTokenStore(path), clock=clock,
                       transport=server.transport())
    first = a.get_token()
    assert b.get_token() == first  # b finds a's token in the store
    clock.advance(1.5)

    async def main() -> None:
        await a.aget_token()  # starts a background store look; asyncio.run cancels it on the way out

    asyncio.run(main())
    clock.advance(2)
    b.invalidate()
    second = b.get_token()  # "another process" logs in again and stores the new token
    assert second != first
    clock.advance(1.5)
    a.get_token()  # the next fresh-zone request looks at the store again, in the background ...
    expected = b.token_info()
    assert expected is not None
    assert wait_until(lambda: getattr(a.token_info(), "fingerprint", None) == expected.fingerprint, 5)
    assert a.get_token() == second


# -- 5. login_timeout bounds the login itself ----------------------------------------------------------------------

@contextlib.contextmanager
def trickling_server(byte_every: float = 0.3) -> Iterator[str]:
    """A loopback server that answers every request one byte at a time, forever (until stopped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 10_000
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in answer:
                if stop.wait(byte_every):
                    return
                conn.sendall(bytes([byte]))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()


def test_5_a_trickling_server_cannot_hold_a_sync_login_past_login_timeout() -> None:
    with trickling_server() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore(), login_timeout=1.5, timeout=10.0)
        started = time.monotonic()
        with pytest.raises(LoginUnavailableError):
            auth.get_token()
        assert time.monotonic() - started < 1.5 + 0.7


async def test_5_a_trickling_server_cannot_hold_an_async_login_past_login_timeout() -> None:
    with trickling_server() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore(), login_timeout=1.5, timeout=10.0)
        started = time.monotonic()
        with pytest.raises(LoginUnavailableError):
            await auth.aget_token()
        assert time.monotonic() - started < 1.5 + 0.7


def test_5_in_the_mandatory_window_requests_wait_login_timeout_not_until_expiry(clock: FakeClock) -> None:
    server = MockNacosServer(clock=clock)
    with server.run() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore(), clock=clock, login_timeout=1.0,
                              timeout=10.0)
        token = auth.get_token()
        server.login_delay = 5.0  # the next login hangs for 5 s, far more than login_timeout
        clock.advance(18000 - 59)  # the mandatory window: ~57 s before the token can no longer be sent
        started = time.monotonic()
        tokens = thread_herd(8, auth.get_token)
        assert time.monotonic() - started < 2.5
        assert tokens == [token] * 8  # the login failed by its deadline; the still-valid token is served
        server.login_delay = 0.0


# -- 6. login answers are streamed and capped ----------------------------------------------------------------------

class HugeLoginAnswers(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers logins with 200 and a body of ``size`` bytes, counting what the client actually pulled."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pulled = 0

    def _chunks(self) -> Iterator[bytes]:
        chunk = b"x" * 65536
        sent = 0
        while sent < self.size:
            self.pulled += len(chunk)
            sent += len(chunk)
            yield chunk

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(self._chunks()))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(self._chunks()))


class _Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_6_a_huge_login_answer_is_abandoned_at_one_mib(mode: str) -> None:
    transport = HugeLoginAnswers(100 * 1024 * 1024)
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=MemoryTokenStore(), transport=transport)
    with pytest.raises(LoginResponseError, match="larger than 1048576 bytes"):
        if mode == "sync":
            auth.get_token()
        else:
            await auth.aget_token()
    assert transport.pulled <= 2 * 1024 * 1024


# -- 7. rejection storms -------------------------------------------------------------------------------------------

def test_7_a_proxy_that_always_answers_401_does_not_turn_requests_into_logins(hi: Harness) -> None:
    inner = hi.server.transport()

    def proxy(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            return inner.handle_request(request)
        return httpx.Response(401, json={"status": 401, "message": "Unauthorized"})

    events: list[TokenEvent] = []
    auth = hi.auth(transport=httpx.MockTransport(proxy), on_event=events.append)
    with httpx.Client(auth=auth, transport=httpx.MockTransport(proxy)) as client:
        statuses = [client.get(hi.url("/v1/cs/configs"), params=PARAMS).status_code for _ in range(1000)]
    assert statuses == [401] * 1000  # the responses go back as they are
    assert hi.server.stats.logins <= 6  # a handful, not one per request
    assert any(e.kind == "replay" and e.outcome == "backing_off" for e in events)


def test_7_two_nodes_with_different_keys_do_not_cause_a_login_storm(clock: FakeClock) -> None:
    a, b = MockNacosServer(clock=clock), MockNacosServer(clock=clock)
    for server in (a, b):
        server.set_config("app.yaml", "x: 1")
    routes = {"a.test": a.transport(), "b.test": b.transport()}

    class Balancer(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return routes[request.url.host].handle_request(request)

    auth = NacosTokenAuth(["http://a.test:8848", "http://b.test:8848"], "nacos", "nacos", clock=clock,
                          store=MemoryTokenStore(), transport=Balancer())
    with httpx.Client(auth=auth, transport=Balancer()) as client:
        statuses = [client.get(f"http://{host}:8848/nacos/v1/cs/configs", params=PARAMS).status_code
                    for _ in range(500) for host in ("a.test", "b.test")]
    assert statuses.count(403) >= 450  # b rejects a's tokens: those answers go back
    assert a.stats.logins + b.stats.logins <= 6


def test_7_a_healthy_rotation_after_a_storm_still_heals(hi: Harness) -> None:
    auth = hi.auth()
    with hi.client(auth) as client:
        assert hi.get_config(client).status_code == 200
        for _ in range(3):  # a rotation every few minutes is no storm: each heals with one login
            hi.clock.advance(300)
            hi.server.rotate_secret()
            assert hi.get_config(client).status_code == 200
    assert hi.server.stats.logins == 4


# -- 8. a multipart upload is replayed only if it can be sent again whole --------------------------------------------

class UploadServer(httpx.BaseTransport):
    """Rejects the first token it sees (token expired!) and records the uploads it accepts."""

    def __init__(self, server: MockNacosServer) -> None:
        self.inner = server.transport()
        self.first_token: str | None = None
        self.accepted: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if is_login(request):
            return self.inner.handle_request(request)
        token = token_of(request)
        if self.first_token is None:
            self.first_token = token
        if token == self.first_token:
            return httpx.Response(403, json={"status": 403, "message": "token expired!"})
        body = request.read()
        self.accepted.append(body)
        return httpx.Response(200, text="true")


def test_8_a_read_once_file_part_is_not_replayed_empty(hi: Harness) -> None:
    upload = UploadServer(hi.server)
    auth = hi.auth(transport=upload)
    auth.get_token()
    hi.clock.advance(1)  # the mock mints the same bytes within one second
    read_end, write_end = os.pipe()
    os.write(write_end, b"PAYLOAD-" * 100)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, httpx.Client(auth=auth, transport=upload) as client:
        response = client.post(hi.url("/v1/cs/configs"), files={"file": ("app.yaml", pipe)})
    assert response.status_code == 403  # not replayed: the answer the server gave goes back
    assert upload.accepted == []  # ... and no body without its payload was ever accepted
    assert hi.server.stats.logins == 2  # the token was renewed all the same


def test_8_a_seekable_file_part_is_replayed_whole(hi: Harness) -> None:
    upload = UploadServer(hi.server)
    auth = hi.auth(transport=upload)
    auth.get_token()
    hi.clock.advance(1)
    with httpx.Client(auth=auth, transport=upload) as client:
        response = client.post(hi.url("/v1/cs/configs"), files={"file": ("app.yaml", io.BytesIO(b"PAYLOAD" * 50))})
    assert response.status_code == 200
    assert len(upload.accepted) == 1 and b"PAYLOAD" * 50 in upload.accepted[0]


# -- 9. async code never blocks its loop on the store ------------------------------------------------------------------

@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers (a Redis that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()
    listener.settimeout(0.1)

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


async def test_9_a_hanging_store_never_blocks_the_event_loop(clock: FakeClock) -> None:
    from nacos_token_client import RedisTokenStore

    server = MockNacosServer(clock=clock)
    with silent_server() as port:
        store = RedisTokenStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0)
        auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=store, clock=clock,
                              transport=server.transport(), login_timeout=10.0)
        async with httpx.AsyncClient(auth=auth, transport=server.transport()) as client:
            url = "http://nacos.test:8848/nacos/v1/cs/configs"
            server.set_config("app.yaml", "x")
            assert (await client.get(url, params=PARAMS)).status_code == 200
            gaps: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                last = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            clock.advance(5)
            server.rotate_secret()
            assert (await client.get(url, params=PARAMS)).status_code == 200  # a rejection, a store delete, a login
            auth.invalidate()  # sync invalidate on a running loop: the store's copy goes on a worker thread
            await asyncio.sleep(0.05)
            blocked = max(gaps)
            assert blocked < 0.25, f"the loop was blocked for {blocked:.2f} s"
            await auth.ainvalidate()  # waits for the store off the loop
            stop.set()
            await tick
        assert max(gaps) < 0.25, f"ainvalidate blocked the loop for {max(gaps):.2f} s"


# -- 10. async + RedisTokenStore: the login lock is released ----------------------------------------------------------

@pytest.fixture
def redis_url(redis_single: Any) -> str:
    return str(redis_single.url)


async def test_10_async_logins_release_the_redis_lock(redis_url: str, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import redis

    from nacos_token_client import RedisTokenStore

    prefix = f"faults:{time.monotonic_ns()}:"
    server = MockNacosServer(clock=clock)
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=RedisTokenStore(redis_url, prefix=prefix),
                          clock=clock, transport=server.transport())
    client = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nacos_token_client"):
        for _ in range(40):
            auth.invalidate()
            await asyncio.sleep(0.01)
            clock.advance(1.0)  # a distinct token each time
            await auth.aget_token()
            assert client.keys("{" + prefix + "*login-lock") == []
            assert client.keys("{" + prefix + "*")  # the token is there: the pattern matches the store's keys
    assert time.monotonic() - started < 10
    assert server.stats.logins == 40
    assert not [r for r in caplog.records if "unlock failed" in r.getMessage()]


# -- 11. a cancelled async request stops waiting for the file lock ----------------------------------------------------

async def test_11_a_cancelled_request_stops_waiting_for_the_file_lock(tmp_path: Path, clock: FakeClock,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl


    attempts: list[float] = []
    real_flock = fcntl.flock

    def counting_flock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX:
            attempts.append(time.monotonic())
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", counting_flock)  # the module file.py uses
    server = MockNacosServer(clock=clock)
    path = tmp_path / "tokens.json"
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=FileTokenStore(path), clock=clock,
                          transport=server.transport())
    other_process = FileTokenStore(path)
    holder = other_process.lock(auth.identity_key, 1.0)
    assert holder.__enter__()  # "another process" holds the login lock
    try:
        task = asyncio.create_task(auth.aget_token())
        await asyncio.sleep(0.3)
        assert attempts  # the request is trying for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.monotonic()
        await asyncio.sleep(1.0)
        late = [t for t in attempts if t > cancelled_at + 0.3]
        assert late == [], f"{len(late)} lock attempts after the request was cancelled"
    finally:
        holder.__exit__(None, None, None)
    await asyncio.sleep(0.2)
    assert server.stats.logins == 0  # nothing went on to log in after the request was cancelled


# -- credentials that change ------------------------------------------------------------------------------------------

def test_a_password_callable_is_asked_again_after_refused_credentials(hi: Harness) -> None:
    secret = {"value": "nacos"}
    calls: list[str] = []

    def password() -> str:
        calls.append(secret["value"])
        return secret["value"]

    auth = hi.auth(password=password)
    first = auth.get_token()
    hi.server.add_user("nacos", "rotated")  # the secret manager and the server rotate the password
    secret["value"] = "rotated"
    auth.invalidate()
    hi.clock.advance(1)
    assert auth.get_token() != first
    assert "rotated" in calls


def test_a_password_callable_that_keeps_the_old_password_is_refused_once(hi: Harness) -> None:
    auth = hi.auth(password=lambda: "old")
    with pytest.raises(AuthenticationError):
        auth.get_token()
    with pytest.raises(AuthenticationError):
        auth.get_token()
    assert hi.server.stats.login_attempts == 1  # refused, negative-cached: the server is not asked again
