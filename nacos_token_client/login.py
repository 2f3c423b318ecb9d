"""Sending logins: one attempt per server, tenacity for the retries, the server list walked on failures.

Every login has a hard deadline (monotonic). It bounds the retries and each attempt — connect, send and reading
the answer — and the answer is streamed and abandoned past 1 MiB or the deadline, whichever comes first:

* async: the attempt runs under ``asyncio.timeout`` in the caller's own task (``asyncio.wait_for`` on 3.10),
  which cancels it at the deadline;
* sync: each phase timeout is capped at the time left, the body is read chunk by chunk against the deadline, and
  a watchdog shuts the attempt's socket down at the deadline (a server that trickles its headers one byte at a
  time is cut off too). Login requests ask for ``Connection: close`` so that every attempt has its own socket
  for the watchdog to reach; logins are rare, so the lost keep-alive costs nothing measurable.

The sync and async paths share the retry policy, the server rotation and every parsing rule (``protocol.py``);
they differ only in how a request is sent and how the back-off sleeps.

HTTP machinery is shared, because identities are many and logins rare (:class:`SharedClients`): one SSL context
and one sync ``httpx.Client`` per distinct set of HTTP settings in the process, and one ``httpx.AsyncClient`` per
event loop per settings, reused by every login on that loop and closed when the loop shuts down its async
generators (``asyncio.run`` does). Ten thousand identities with default settings cost one SSL context, not ten
thousand. A user-supplied transport is used as given and never closed by us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import sys
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from cachetools import LRUCache
from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from .errors import AuthenticationError, ConfigurationError, LoginResponseError, LoginUnavailableError
from .protocol import (
    MAX_LOGIN_BODY,
    ApiVersion,
    LoginAnswer,
    LoginEndpointMissing,
    ServerAddress,
    TransientLoginError,
    login_request,
    parse_login_response,
)

__all__ = ["LoginClient", "LoginResult", "PasswordSource", "RetrySettings", "SharedClients", "shared_clients"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")

#: A password, or a zero-argument callable returning the current one (for secrets that rotate).
PasswordSource = str | Callable[[], str]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Transient login failures: at least ``attempts`` tries (and one per server), full-jitter exponential
    back-off from ``backoff_initial`` up to ``backoff_max`` seconds, never past the login's deadline."""

    attempts: int = 3
    backoff_initial: float = 0.2
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 100:
            raise ConfigurationError(f"login_attempts must be an int from 1 to 100, got {self.attempts!r}")
        for name in ("backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ConfigurationError(f"login_backoff {name} must be a number from 0 to 3600, got {value!r}")
        if self.backoff_initial > self.backoff_max:
            raise ConfigurationError("login_backoff must be (first, max) with first <= max")


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the parsed answer, when it was sent (wall clock), where, after how many attempts."""

    answer: LoginAnswer
    sent_at: float  # wall clock just before the successful request was sent
    server: ServerAddress
    attempts: int


class _DeadlinePassed(TransientLoginError):
    """The login's deadline passed during an attempt."""


# -- shared HTTP machinery ---------------------------------------------------------------------------------------

_SettingsKey = tuple[Any, ...]


@dataclass(eq=False)
class _LoopClients:
    """The async clients of one event loop, and the async generator that closes them when the loop shuts down."""

    loop: weakref.ref[asyncio.AbstractEventLoop]
    clients: dict[_SettingsKey, httpx.AsyncClient] = field(default_factory=dict)
    owned: list[httpx.AsyncClient] = field(default_factory=list)
    closer: AsyncGenerator[None, None] | None = None


class SharedClients:
    """The process's login HTTP clients: per settings (sync), per event loop and settings (async).

    Login requests set their own per-phase timeouts (capped at the login's deadline), so a client's settings are
    only what changes a connection: ``verify``, ``trust_env`` and the transports. Bounded: at most ``max_settings``
    sync clients; one evicted is not closed (a login may be using it) and goes with its last user.
    """

    def __init__(self, *, max_settings: int = 64) -> None:
        self._lock = threading.Lock()
        self._ssl: LRUCache[_SettingsKey, ssl.SSLContext] = LRUCache(maxsize=max_settings)
        self._sync: LRUCache[_SettingsKey, httpx.Client] = LRUCache(maxsize=max_settings)
        self._loops: dict[int, _LoopClients] = {}
        #: How many clients were built (sync, async): the measure of sharing, for tests and benchmarks.
        self.built = [0, 0]

    def sync_client(self, verify: Any, trust_env: bool, transport: httpx.BaseTransport | None) -> httpx.Client:
        """The shared sync client for these settings (built on first use)."""
        key = (_verify_key(verify), trust_env, transport)
        with self._lock:
            client = self._sync.get(key)
            if client is None:
                client = httpx.Client(transport=transport, **self._options(verify, trust_env))
                self._sync[key] = client
                self.built[0] += 1
            return client

    async def async_client(self, verify: Any, trust_env: bool,
                           transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        """The running loop's client for these settings (built on first use, closed with the loop)."""
        loop = asyncio.get_running_loop()
        key = (_verify_key(verify), trust_env, transport)
        with self._lock:
            entry = self._loops.get(id(loop))
            if entry is None or entry.loop() is not loop:
                self._sweep()
                entry = self._loops[id(loop)] = _LoopClients(weakref.ref(loop))
            client = entry.clients.get(key)
            if client is not None:
                return client
            client = httpx.AsyncClient(transport=transport, **self._options(verify, trust_env))
            entry.clients[key] = client
            self.built[1] += 1
            if transport is None:
                entry.owned.append(client)
            start_closer = entry.closer is None
            if start_closer:
                entry.closer = _close_with_loop(entry)
        if start_closer:
            assert entry.closer is not None
            await entry.closer.__anext__()  # the loop now tracks it: shutdown_asyncgens() closes the clients
        return client

    def _options(self, verify: Any, trust_env: bool) -> dict[str, Any]:
        """Called with the lock held. One SSL context per ``verify``/``trust_env``, shared by sync and async."""
        if isinstance(verify, bool):
            key = (verify, trust_env)
            context = self._ssl.get(key)
            if context is None:
                context = self._ssl[key] = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
            verify = context
        return {"verify": verify, "trust_env": trust_env, "follow_redirects": False}

    def _sweep(self) -> None:
        """Forget the clients of loops that are closed or gone (called with the lock held, when a loop is new)."""
        for loop_id, entry in list(self._loops.items()):
            loop = entry.loop()
            if loop is None or loop.is_closed():
                del self._loops[loop_id]

    def reset_after_fork(self) -> None:
        """A child must not share the parent's connections: forget every client without closing it."""
        self._lock = threading.Lock()
        self._ssl.clear()
        self._sync.clear()
        self._loops = {}


async def _close_with_loop(entry: _LoopClients) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; ``loop.shutdown_asyncgens()`` resumes it to close the loop's clients."""
    try:
        yield
    finally:
        for client in entry.owned:
            with contextlib.suppress(Exception):
                await client.aclose()


def _verify_key(verify: Any) -> Any:
    return verify if isinstance(verify, (bool, str)) else ("object", id(verify), verify)


_shared = SharedClients()


def shared_clients() -> SharedClients:
    """The process-wide login clients."""
    return _shared


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_shared.reset_after_fork)


class LoginClient:
    """Logs one identity in, through the user's HTTP settings (transport, TLS, timeouts)."""

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        username: str,
        password: PasswordSource,
        *,
        api: ApiVersion = "v1",
        clock: Callable[[], float],
        timer: Callable[[], float] = time.monotonic,
        retry: RetrySettings | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        timeout: Any = 10.0,
        trust_env: bool = True,
    ) -> None:
        if api not in ("v1", "v3", "auto"):
            raise ConfigurationError(f"api must be 'v1', 'v3' or 'auto', got {api!r}")
        self.servers = tuple(servers)
        self.username = username
        self._password_source = password
        self.api = api
        self.clock = clock
        self.timer = timer
        self.retry = retry or RetrySettings()
        self._transport = transport
        if async_transport is None and isinstance(transport, httpx.AsyncBaseTransport):
            async_transport = transport  # e.g. httpx.MockTransport serves both
        self._async_transport = async_transport
        self._timeout = httpx.Timeout(timeout)
        self._verify = verify
        self._trust_env = trust_env
        self._next_server = 0
        self._api_of: dict[ServerAddress, Literal["v1", "v3"]] = {}

    def __repr__(self) -> str:
        return f"LoginClient(servers={[str(s) for s in self.servers]}, username={self.username!r}, api={self.api!r})"

    # -- shared policy -----------------------------------------------------------------------------------------

    def password(self) -> str:
        """The current password (a callable source is asked each time)."""
        source = self._password_source
        if isinstance(source, str):
            return source
        try:
            value = source()
        except Exception as exc:
            raise TransientLoginError(f"the password callable raised {type(exc).__name__}") from None
        if not isinstance(value, str):
            raise TransientLoginError(f"the password callable returned {type(value).__name__}, not str")
        return value

    def _retry_kwargs(self, deadline: float) -> dict[str, Any]:
        attempts = max(self.retry.attempts, len(self.servers))
        return {
            "stop": stop_after_attempt(attempts) | stop_before_delay(max(deadline - self.timer(), 0.0)),
            "wait": wait_random_exponential(multiplier=self.retry.backoff_initial, max=self.retry.backoff_max),
            "retry": retry_if_exception_type(TransientLoginError),
            "reraise": False,
        }

    def _server(self) -> ServerAddress:
        return self.servers[self._next_server % len(self.servers)]

    def _apis(self, server: ServerAddress) -> tuple[Literal["v1", "v3"], ...]:
        if self.api == "auto":
            known = self._api_of.get(server)
            return (known,) if known else ("v3", "v1")
        return (self.api,)

    def _failed(self, server: ServerAddress, exc: BaseException, deadline: float) -> TransientLoginError:
        self._next_server += 1  # the next attempt goes to the next server
        if self.timer() >= deadline and not isinstance(exc, _DeadlinePassed):
            exc = _DeadlinePassed(f"login to {server} did not finish by its deadline")
        # INFO, not WARNING: another attempt (or server) may still succeed; a login that fails as a whole is
        # reported once, at WARNING, by its failure event. ``server`` is the one that just failed.
        log.info("nacos login attempt to %s failed: %s", server, _describe(exc))
        if isinstance(exc, TransientLoginError):
            return exc
        return TransientLoginError(f"login to {server} failed: {type(exc).__name__}")

    @staticmethod
    def _give_up(error: RetryError, attempts: int) -> LoginUnavailableError:
        last = error.last_attempt.exception()
        detail = str(last) if last is not None else "no attempt finished"
        return LoginUnavailableError(f"no login succeeded after {attempts} attempt(s); last: {detail}",
                                     attempts=attempts)

    def _request(self, server: ServerAddress, api: Literal["v1", "v3"], password: str,
                 deadline: float) -> httpx.Request:
        remaining = deadline - self.timer()
        if remaining <= 0:
            raise _DeadlinePassed(f"login to {server} not started: its deadline passed")
        request = login_request(server, api, self.username, password)
        request.headers["Connection"] = "close"
        request.extensions["timeout"] = {
            phase: min(_or_inf(getattr(self._timeout, phase)), remaining) for phase in ("connect", "read", "write",
                                                                                       "pool")}
        return request

    def _accept(self, server: ServerAddress, api: Literal["v1", "v3"], status: int, body: bytes,
                sent_at: float, *, password: str) -> LoginResult | None:
        """A login answer as a result, or None when ``api="auto"`` should fall back from v3 to v1. Error text
        the server sent back has ``password`` redacted (a proxy may echo the form)."""
        try:
            answer = parse_login_response(status, body, server=str(server), secrets=(password,))
        except LoginEndpointMissing:
            if self.api == "auto" and api == "v3":
                return None
            raise
        self._api_of[server] = api
        return LoginResult(answer, sent_at, server, 0)

    def _changed_password(self, used: str, retried: bool) -> str | None:
        """After refused credentials: a callable source is asked again, and a changed password is tried once
        more before the refusal stands. None: the refusal stands."""
        if retried or isinstance(self._password_source, str):
            return None
        fresh = self.password()
        return None if fresh == used else fresh

    def _attempt(self, server: ServerAddress, deadline: float) -> Generator[httpx.Request, tuple[int, bytes],
                                                                             LoginResult]:
        """One login attempt on ``server``, written once: yields each request to send and receives its status and
        body. Tries v3 then v1 for ``api="auto"``, and a changed password once after refused credentials."""
        for api in self._apis(server):
            password, retried = self.password(), False
            while True:
                sent_at = self.clock()
                status, body = yield self._request(server, api, password, deadline)
                try:
                    result = self._accept(server, api, status, body, sent_at, password=password)
                except AuthenticationError:
                    fresh = self._changed_password(password, retried)
                    if fresh is None:
                        raise
                    password, retried = fresh, True
                    continue
                break
            if result is not None:
                return result
        raise LoginEndpointMissing(f"no login endpoint on {server}", server=str(server))

    # -- sync ---------------------------------------------------------------------------------------------------

    def _send_sync(self, request: httpx.Request, deadline: float) -> tuple[int, bytes]:
        sockets: list[Any] = []

        def trace(name: str, info: dict[str, Any]) -> None:
            if name == "connection.connect_tcp.complete" and info.get("return_value") is not None:
                sockets.append(info["return_value"].get_extra_info("socket"))

        def cut_off() -> None:
            for sock in sockets:
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)

        request.extensions["trace"] = trace
        watchdog = threading.Timer(max(deadline - self.timer(), 0.0), cut_off)
        watchdog.daemon = True
        watchdog.start()
        try:
            client = _shared.sync_client(self._verify, self._trust_env, self._transport)
            response = client.send(request, stream=True)
            try:
                return response.status_code, _read_capped(response.iter_bytes(), deadline, self.timer)
            finally:
                response.close()
        finally:
            watchdog.cancel()

    def _attempt_sync(self, deadline: float) -> LoginResult:
        server = self._server()
        steps = self._attempt(server, deadline)
        try:
            request = next(steps)
            while True:
                request = steps.send(self._send_sync(request, deadline))
        except StopIteration as done:
            result: LoginResult = done.value
            return result
        except (httpx.TransportError, TransientLoginError) as exc:
            raise self._failed(server, exc, deadline) from None

    def login_sync(self, deadline: float) -> LoginResult:
        """Log in, retrying transient failures until ``deadline`` (monotonic seconds)."""
        retrying = Retrying(**self._retry_kwargs(deadline))
        try:
            result: LoginResult = retrying(self._attempt_sync, deadline)
        except RetryError as exc:
            raise self._give_up(exc, retrying.statistics.get("attempt_number", 0)) from None
        return _with_attempts(result, retrying.statistics.get("attempt_number", 1))

    # -- async --------------------------------------------------------------------------------------------------

    async def _send_async(self, client: httpx.AsyncClient, request: httpx.Request, deadline: float) -> tuple[
            int, bytes]:
        response = await client.send(request, stream=True)
        try:
            return response.status_code, await _aread_capped(response.aiter_bytes(), deadline, self.timer)
        finally:
            await response.aclose()

    async def _attempt_async(self, deadline: float) -> LoginResult:
        server = self._server()
        if self._async_transport is None and self._transport is not None:
            raise ConfigurationError("transport= serves sync requests only; pass async_transport= for async logins")
        client = await _shared.async_client(self._verify, self._trust_env, self._async_transport)
        steps = self._attempt(server, deadline)
        try:
            request = next(steps)
            while True:
                try:
                    answer = await _within(self._send_async(client, request, deadline),
                                           max(deadline - self.timer(), 0.0))
                except asyncio.TimeoutError:
                    raise _DeadlinePassed(f"login to {server} did not finish by its deadline") from None
                request = steps.send(answer)
        except StopIteration as done:
            result: LoginResult = done.value
            return result
        except (httpx.TransportError, TransientLoginError) as exc:
            raise self._failed(server, exc, deadline) from None

    async def login_async(self, deadline: float) -> LoginResult:
        """Log in, retrying transient failures until ``deadline`` (monotonic seconds)."""
        retrying = AsyncRetrying(sleep=asyncio.sleep, **self._retry_kwargs(deadline))
        try:
            result: LoginResult = await retrying(self._attempt_async, deadline)
        except RetryError as exc:
            raise self._give_up(exc, retrying.statistics.get("attempt_number", 0)) from None
        return _with_attempts(result, retrying.statistics.get("attempt_number", 1))

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the HTTP clients are shared by the process (logins ask for ``Connection: close``,
        so no connection outlives its login), and a user-supplied transport is never closed by us."""

    def reset_after_fork(self) -> None:
        """The shared clients reset themselves in a forked child; nothing of this identity's to drop."""


async def _within(awaitable: Coroutine[Any, Any, T], seconds: float) -> T:
    """``awaitable`` cancelled after ``seconds`` (``asyncio.TimeoutError``), run in the calling task: a herd's
    leader starts its login at once instead of behind every task already queued on the loop, as the task that
    ``asyncio.wait_for`` creates before 3.12 would."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - 3.10


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TransientLoginError):
        return str(exc)
    return type(exc).__name__


def _take(body: bytearray, chunk: bytes, deadline: float, timer: Callable[[], float]) -> None:
    """Add one chunk of a login answer: past 1 MiB or past the deadline the answer is abandoned."""
    body += chunk
    if len(body) > MAX_LOGIN_BODY:
        raise LoginResponseError(f"login answer is larger than {MAX_LOGIN_BODY} bytes; not read further")
    if timer() >= deadline:
        raise _DeadlinePassed("the login answer was still arriving at the login's deadline")


def _read_capped(chunks: Iterator[bytes], deadline: float, timer: Callable[[], float]) -> bytes:
    body = bytearray()
    for chunk in chunks:
        _take(body, chunk, deadline, timer)
    return bytes(body)


async def _aread_capped(chunks: AsyncIterator[bytes], deadline: float, timer: Callable[[], float]) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        _take(body, chunk, deadline, timer)
    return bytes(body)


def _with_attempts(result: LoginResult, attempts: int) -> LoginResult:
    return LoginResult(result.answer, result.sent_at, result.server, attempts)
