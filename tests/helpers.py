"""Transports that record or hold requests, for tests that must observe what the client sent and when."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx


def is_login(request: httpx.Request) -> bool:
    return request.url.path.endswith(("/auth/login", "/auth/user/login", "/auth/users/login"))


def token_of(request: httpx.Request) -> str | None:
    """The token a request carries, wherever the placement put it (bearer, ``accessToken`` header or query)."""
    bearer: str = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return bearer[len("Bearer "):]
    found: str | None = request.headers.get("accessToken") or request.url.params.get("accessToken")
    return found


class RecordingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Delegates to ``inner`` and keeps every request it saw."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        assert isinstance(self.inner, httpx.AsyncBaseTransport)
        return await self.inner.handle_async_request(request)

    def tokens_sent(self) -> list[str | None]:
        return [token_of(r) for r in self.requests if not is_login(r)]

    def logins(self) -> int:
        return sum(1 for r in self.requests if is_login(r))


class GatedTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Holds every login until ``gate`` is set; ``login_started`` tells that one is being held."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.login_started = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if is_login(request):
            self.login_started.set()
            assert self.gate.wait(20), "the test never opened the gate"
        return self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if is_login(request):
            self.login_started.set()
            await asyncio.to_thread(self.gate.wait, 20)
        assert isinstance(self.inner, httpx.AsyncBaseTransport)
        return await self.inner.handle_async_request(request)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll for a condition another thread brings about (not a stand-in for a clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
