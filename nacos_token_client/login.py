"""Sending logins: one attempt per server, tenacity for the retries, the server list walked on failures.

Every login has a hard deadline (monotonic). It bounds the retries and each attempt — connect, send and reading
the answer — and the answer is streamed and abandoned past 1 MiB or the deadline, whichever comes first:

* async: the attempt runs under ``asyncio.wait_for``, which cancels it at the deadline;
* sync: each phase timeout is capped at the time left, the body is read chunk by chunk against the deadline, and
  a watchdog shuts the attempt's socket down at the deadline (a server that trickles its headers one byte at a
  time is cut off too). Login requests ask for ``Connection: close`` so that every attempt has its own socket
  for the watchdog to reach; logins are rare, so the lost keep-alive costs nothing measurable.

The sync and async paths share the retry policy, the server rotation and every parsing rule (``protocol.py``);
they differ only in how a request is sent and how the back-off sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
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

__all__ = ["LoginClient", "LoginResult", "PasswordSource", "RetrySettings"]

log = logging.getLogger("nacos_token_client")

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
        self._client_options: dict[str, Any] = {"verify": verify, "timeout": self._timeout,
                                                "trust_env": trust_env, "follow_redirects": False}
        self._sync_client: httpx.Client | None = None
        self._client_lock = threading.Lock()
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

    def _client(self) -> httpx.Client:
        with self._client_lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(transport=self._transport, **self._client_options)
            return self._sync_client

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
            response = self._client().send(request, stream=True)
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
        # One client per login: an AsyncClient is bound to the event loop that first used it, and logins are rare.
        # A user-supplied transport is not closed (closing the client would close it).
        client = httpx.AsyncClient(transport=self._async_transport, **self._client_options)
        steps = self._attempt(server, deadline)
        try:
            request = next(steps)
            while True:
                try:
                    answer = await asyncio.wait_for(self._send_async(client, request, deadline),
                                                    max(deadline - self.timer(), 0.0))
                except asyncio.TimeoutError:
                    raise _DeadlinePassed(f"login to {server} did not finish by its deadline") from None
                request = steps.send(answer)
        except StopIteration as done:
            result: LoginResult = done.value
            return result
        except (httpx.TransportError, TransientLoginError) as exc:
            raise self._failed(server, exc, deadline) from None
        finally:
            if self._async_transport is None:
                await client.aclose()

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
        """Close the sync connection pool (a user-supplied transport is left open)."""
        with self._client_lock:
            client, self._sync_client = self._sync_client, None
        if client is not None and self._transport is None:
            client.close()

    def reset_after_fork(self) -> None:
        """A child must not share the parent's pooled connections; drop them without closing the parent's."""
        self._sync_client = None
        self._client_lock = threading.Lock()


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
