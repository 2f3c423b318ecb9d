"""Sending logins: one attempt per server, tenacity for the retries, the server list walked on failures.

The sync and async paths share the retry policy, the server rotation and every parsing rule (``protocol.py``);
they differ only in how a request is sent and how the back-off sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
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

from .errors import ConfigurationError, LoginUnavailableError
from .protocol import (
    ApiVersion,
    LoginAnswer,
    LoginEndpointMissing,
    ServerAddress,
    TransientLoginError,
    login_request,
    parse_login_response,
)

__all__ = ["LoginClient", "LoginResult", "RetrySettings"]

log = logging.getLogger("nacos_token_client")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Transient login failures: at least ``attempts`` tries (and one per server), full-jitter exponential
    back-off from ``backoff_initial`` up to ``backoff_max`` seconds, never past the caller's time budget."""

    attempts: int = 3
    backoff_initial: float = 0.2
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError("login attempts must be at least 1")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ConfigurationError("back-off times must not be negative")


@dataclass(frozen=True, slots=True)
class LoginResult:
    answer: LoginAnswer
    sent_at: float  # wall clock just before the successful request was sent
    server: ServerAddress
    attempts: int


class LoginClient:
    """Logs one identity in, through the user's HTTP settings (transport, TLS, timeouts)."""

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        username: str,
        password: str,
        *,
        api: ApiVersion = "v1",
        clock: Callable[[], float],
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
        self._password = password
        self.api = api
        self.clock = clock
        self.retry = retry or RetrySettings()
        self._transport = transport
        if async_transport is None and isinstance(transport, httpx.AsyncBaseTransport):
            async_transport = transport  # e.g. httpx.MockTransport serves both
        self._async_transport = async_transport
        self._client_options: dict[str, Any] = {"verify": verify, "timeout": timeout, "trust_env": trust_env,
                                                "follow_redirects": False}
        self._sync_client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._next_server = 0
        self._api_of: dict[ServerAddress, Literal["v1", "v3"]] = {}

    def __repr__(self) -> str:
        return f"LoginClient(servers={[str(s) for s in self.servers]}, username={self.username!r}, api={self.api!r})"

    # -- shared policy -----------------------------------------------------------------------------------------

    def _retry_kwargs(self, budget: float) -> dict[str, Any]:
        attempts = max(self.retry.attempts, len(self.servers))
        return {
            "stop": stop_after_attempt(attempts) | stop_before_delay(max(budget, 0.0)),
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

    def _failed(self, server: ServerAddress, exc: BaseException) -> TransientLoginError:
        self._next_server += 1  # the next attempt goes to the next server
        kind = type(exc).__name__
        log.warning("nacos login to %s failed (%s); trying %s next", server, kind, self._server())
        if isinstance(exc, TransientLoginError):
            return exc
        return TransientLoginError(f"login to {server} failed: {kind}")

    @staticmethod
    def _give_up(error: RetryError, attempts: int) -> LoginUnavailableError:
        last = error.last_attempt.exception()
        detail = str(last) if last is not None else "no attempt finished"
        return LoginUnavailableError(f"no login succeeded after {attempts} attempt(s); last: {detail}",
                                     attempts=attempts)

    def _accept(self, server: ServerAddress, api: Literal["v1", "v3"], response: httpx.Response,
                sent_at: float) -> LoginResult | None:
        """A login answer as a result, or None when ``api="auto"`` should fall back from v3 to v1."""
        try:
            answer = parse_login_response(response.status_code, response.content, server=str(server))
        except LoginEndpointMissing:
            if self.api == "auto" and api == "v3":
                return None
            raise
        self._api_of[server] = api
        return LoginResult(answer, sent_at, server, 0)

    # -- sync ---------------------------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        with self._client_lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(transport=self._transport, **self._client_options)
            return self._sync_client

    def _attempt_sync(self) -> LoginResult:
        server = self._server()
        try:
            for api in self._apis(server):
                sent_at = self.clock()
                response = self._client().send(login_request(server, api, self.username, self._password))
                result = self._accept(server, api, response, sent_at)
                if result is not None:
                    return result
            raise LoginEndpointMissing(f"no login endpoint on {server}", server=str(server))
        except (httpx.TransportError, TransientLoginError) as exc:
            raise self._failed(server, exc) from None

    def login_sync(self, budget: float) -> LoginResult:
        """Log in, retrying transient failures for at most ``budget`` seconds."""
        retrying = Retrying(**self._retry_kwargs(budget))
        try:
            result: LoginResult = retrying(self._attempt_sync)
        except RetryError as exc:
            raise self._give_up(exc, retrying.statistics.get("attempt_number", 0)) from None
        return _with_attempts(result, retrying.statistics.get("attempt_number", 1))

    # -- async --------------------------------------------------------------------------------------------------

    async def _attempt_async(self) -> LoginResult:
        server = self._server()
        if self._async_transport is None and self._transport is not None:
            raise ConfigurationError("transport= serves sync requests only; pass async_transport= for async logins")
        # One client per login: an AsyncClient is bound to the event loop that first used it, and logins are rare.
        # A user-supplied transport is not closed (closing the client would close it).
        client = httpx.AsyncClient(transport=self._async_transport, **self._client_options)
        try:
            for api in self._apis(server):
                sent_at = self.clock()
                response = await client.send(login_request(server, api, self.username, self._password))
                result = self._accept(server, api, response, sent_at)
                if result is not None:
                    return result
            raise LoginEndpointMissing(f"no login endpoint on {server}", server=str(server))
        except (httpx.TransportError, TransientLoginError) as exc:
            raise self._failed(server, exc) from None
        finally:
            if self._async_transport is None:
                await client.aclose()

    async def login_async(self, budget: float) -> LoginResult:
        retrying = AsyncRetrying(sleep=asyncio.sleep, **self._retry_kwargs(budget))
        try:
            result: LoginResult = await retrying(self._attempt_async)
        except RetryError as exc:
            raise self._give_up(exc, retrying.statistics.get("attempt_number", 0)) from None
        return _with_attempts(result, retrying.statistics.get("attempt_number", 1))

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._client_lock:
            client, self._sync_client = self._sync_client, None
        if client is not None and self._transport is None:
            client.close()

    def reset_after_fork(self) -> None:
        """A child must not share the parent's pooled connections; drop them without closing the parent's."""
        self._sync_client = None
        self._client_lock = threading.Lock()


def _with_attempts(result: LoginResult, attempts: int) -> LoginResult:
    return LoginResult(result.answer, result.sent_at, result.server, attempts)
