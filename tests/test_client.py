"""NacosTokenClient / AsyncNacosTokenClient: config helpers, typed errors, server fail-over."""

from __future__ import annotations

import httpx
import pytest

from nacos_token_client import (
    AsyncNacosTokenClient,
    MemoryTokenStore,
    NacosTokenClient,
    PermissionDeniedError,
    RequestFailedError,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness


def test_config_helpers(h: Harness) -> None:
    with NacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store) as client:
        assert client.publish_config("c.yaml", "a: 1") is True
        assert client.publish_config("c.yaml", "dev", tenant="dev", type="yaml") is True
        assert client.get_config("c.yaml") == "a: 1"
        assert client.get_config("c.yaml", tenant="dev") == "dev"
        assert client.get_config("missing.yaml") is None
        assert client.remove_config("c.yaml") is True
        assert client.get_config("c.yaml") is None
        assert client.get("/v1/console/health/liveness").text == "OK"
        assert client.token_info() is not None and client.invalidate() is True
        assert client.get_config("missing.yaml") is None  # logs in again
        assert "nacos" in repr(client) and "password" not in repr(client)
    assert h.server.stats.logins == 2


def test_helper_errors_are_typed(h: Harness) -> None:
    h.server.deny("secret.yaml")
    with NacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store) as client:
        with pytest.raises(PermissionDeniedError) as denied:
            client.get_config("secret.yaml")
        assert denied.value.status_code == 403 and denied.value.server_message == "authorization failed!"
        with pytest.raises(RequestFailedError) as bad:
            client.publish_config("x.yaml", "   ")  # blank content: the server answers 400
        assert bad.value.status_code == 400 and not isinstance(bad.value, PermissionDeniedError)


def test_connection_failures_move_to_the_next_server() -> None:
    server = MockNacosServer()
    server.set_config("f.yaml", "found")
    with MockNacosServer().run() as dead:
        pass  # now nothing listens there
    with server.run() as alive, NacosTokenClient([dead, alive], "nacos", "nacos", store=MemoryTokenStore(),
                                                 login_backoff=(0.01, 0.02)) as client:
        assert client.get_config("f.yaml") == "found"
        assert client._current == 1  # the live server is current from now on
        assert client.publish_config("g.yaml", "posted") is True  # a POST that never left may go elsewhere


def test_a_request_that_may_have_been_sent_is_not_repeated_elsewhere() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.host}{'' if 'auth' not in request.url.path else ' auth'}")
        if request.url.path.endswith("/auth/login"):
            return httpx.Response(200, json={"accessToken": "t", "tokenTtl": 100})
        raise httpx.ReadError("connection reset after the request was sent", request=request)

    transport = httpx.MockTransport(handler)
    with NacosTokenClient("a:1,b:2", "nacos", "nacos", transport=transport, store=MemoryTokenStore()) as client:
        with pytest.raises(httpx.ReadError):
            client.post("/v1/cs/configs", data={"dataId": "d", "group": "g", "content": "c"})
        assert [c for c in calls if "auth" not in c] == ["POST a"]  # not repeated on b
        calls.clear()
        with pytest.raises(httpx.ReadError):
            client.get("/v1/cs/configs")  # idempotent: tried on every server
        assert calls == ["GET a", "GET b"]


async def test_async_client(h: Harness) -> None:
    async with AsyncNacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store) as client:
        assert await client.publish_config("a.yaml", "async") is True
        assert await client.get_config("a.yaml") == "async"
        assert await client.get_config("nope.yaml") is None
        h.server.rotate_secret()
        assert await client.get_config("a.yaml") == "async"  # healed and replayed
        assert await client.remove_config("a.yaml") is True
        assert (await client.get("/v1/console/health/liveness")).text == "OK"
        assert await client.get_token()
    assert h.server.stats.logins == 2
