"""Shared fixtures: a fake wall clock, the mock server, and a harness that runs a test over the in-process
transport and over real loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from nacos_token_client import MemoryTokenStore, NacosTokenAuth
from nacos_token_client.testing import MockNacosServer

START = 1_800_000_000.25  # a fractional wall-clock start, as real time is


class FakeClock:
    """A wall clock that moves only when told to; shared by the mock server and the client."""

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, value: float) -> None:
        with self._lock:
            self._now = value


@dataclass
class Harness:
    """One mock server, one clock, and how a client reaches the server (``inprocess`` or ``loopback``)."""

    server: MockNacosServer
    clock: FakeClock
    mode: str
    address: str = ""
    store: MemoryTokenStore = field(default_factory=MemoryTokenStore)

    @property
    def transport(self) -> Any:
        return self.server.transport() if self.mode == "inprocess" else None

    def url(self, path: str) -> str:
        return f"{self.address}{self.server.context_path}{path}"

    def auth(self, username: str | None = "nacos", password: str | Callable[[], str] | None = "nacos",
             **options: Any) -> NacosTokenAuth:
        options.setdefault("store", self.store)
        options.setdefault("clock", self.clock)
        options.setdefault("login_backoff", (0.01, 0.05))
        if self.transport is not None:
            options.setdefault("transport", self.transport)
        return NacosTokenAuth(self.address, username, password, **options)

    def client(self, auth: httpx.Auth | None = None, **options: Any) -> httpx.Client:
        if self.transport is not None:
            options.setdefault("transport", self.transport)
        return httpx.Client(auth=auth if auth is not None else self.auth(), **options)

    def async_client(self, auth: httpx.Auth | None = None, **options: Any) -> httpx.AsyncClient:
        if self.transport is not None:
            options.setdefault("transport", self.transport)
        return httpx.AsyncClient(auth=auth if auth is not None else self.auth(), **options)

    def get_config(self, client: httpx.Client, data_id: str = "app.yaml") -> httpx.Response:
        return client.get(self.url("/v1/cs/configs"), params={"dataId": data_id, "group": "DEFAULT_GROUP"})


def _harness(mode: str, server_options: dict[str, Any]) -> Iterator[Harness]:
    clock = FakeClock()
    options = {"token_ttl": 18000, "poll_min_hold": 0.0, **server_options}
    server = MockNacosServer(clock=clock, **options)
    server.set_config("app.yaml", "greeting: hello")
    address = server.start() if mode == "loopback" else "http://nacos.test:8848"
    try:
        yield Harness(server, clock, mode, address)
    finally:
        server.stop()


@pytest.fixture
def server_options() -> dict[str, Any]:
    """Override in a test module (or parametrise) to change the mock server's options."""
    return {}


@pytest.fixture(params=["inprocess", "loopback"])
def h(request: pytest.FixtureRequest, server_options: dict[str, Any]) -> Iterator[Harness]:
    """A harness over both transports."""
    yield from _harness(request.param, server_options)


@pytest.fixture
def hi(server_options: dict[str, Any]) -> Iterator[Harness]:
    """A harness over the in-process transport only (fast, for the large matrices)."""
    yield from _harness("inprocess", server_options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- real Redis servers, one set per test session (tests/redis_servers.py) -------------------------------------------

def _started(factory: Callable[[], Any]) -> Any:
    from .redis_servers import RedisMissing

    try:
        return factory()
    except RedisMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One redis-server."""
    from .redis_servers import RedisServer

    server = _started(lambda: RedisServer(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 3-master Redis Cluster (``.url`` is a ``redis+cluster://`` URL)."""
    from .redis_servers import RedisCluster

    cluster = _started(lambda: RedisCluster(tmp_path_factory.mktemp("redis-cluster")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A redis-server and a Sentinel that names it (``.sentinels``, ``.service``)."""
    from .redis_servers import RedisSentinel

    sentinel = _started(lambda: RedisSentinel(tmp_path_factory.mktemp("redis-sentinel")))
    yield sentinel
    sentinel.stop()
