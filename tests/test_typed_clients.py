"""The wrapper clients are complete httpx clients: every request method, typed options, base_url, event hooks,
stats, relative URLs, and closing only what they made."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from nacos_token_client import (
    AsyncNacosTokenClient,
    ConfigurationError,
    MemoryTokenStore,
    NacosTokenClient,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness
from .helpers import RecordingTransport, is_login, token_of

CONFIG = "/v1/cs/configs?dataId=app.yaml&group=DEFAULT_GROUP"
FORM = {"dataId": "m.yaml", "group": "DEFAULT_GROUP", "content": "m: 1"}
# what the mock server answers each method on the config route (it allows GET, POST and DELETE there)
EXPECTED = {"GET": 200, "POST": 200, "DELETE": 200, "PUT": 405, "PATCH": 405, "HEAD": 405, "OPTIONS": 405}
METHODS = ["request", "get", "post", "put", "patch", "delete", "head", "options", "stream", "send", "build_request"]


class ClosingCounter(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A user's transport that remembers being closed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = self.inner.handle_request(request)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = await self.inner.handle_async_request(request)
        return response

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.closed += 1


def _sync_call(client: NacosTokenClient, method: str) -> httpx.Response:
    """One call of ``method``, as a user would make it; the HTTP method it sent is the response's."""
    if method == "request":
        return client.request("GET", CONFIG)
    if method in ("get", "head", "options"):
        return getattr(client, method)(CONFIG)  # type: ignore[no-any-return]
    if method in ("put", "patch"):
        return getattr(client, method)(CONFIG, content=b"x")  # type: ignore[no-any-return]
    if method == "post":
        return client.post("/v1/cs/configs", data=FORM)
    if method == "delete":
        return client.delete("/v1/cs/configs?dataId=m.yaml&group=DEFAULT_GROUP")
    if method == "stream":
        with client.stream("GET", CONFIG) as response:
            response.read()
            return response
    request = client.build_request("GET", CONFIG)
    assert request.url.host == "nacos.test" and request.url.path == "/nacos/v1/cs/configs"
    return client.send(request)


async def _async_call(client: AsyncNacosTokenClient, method: str) -> httpx.Response:
    if method == "request":
        return await client.request("GET", CONFIG)
    if method in ("get", "head", "options"):
        return await getattr(client, method)(CONFIG)  # type: ignore[no-any-return]
    if method in ("put", "patch"):
        return await getattr(client, method)(CONFIG, content=b"x")  # type: ignore[no-any-return]
    if method == "post":
        return await client.post("/v1/cs/configs", data=FORM)
    if method == "delete":
        return await client.delete("/v1/cs/configs?dataId=m.yaml&group=DEFAULT_GROUP")
    if method == "stream":
        async with client.stream("GET", CONFIG) as response:
            await response.aread()
            return response
    request = client.build_request("GET", CONFIG)
    assert request.url.host == "nacos.test" and request.url.path == "/nacos/v1/cs/configs"
    return await client.send(request)


def _check(recorder: RecordingTransport, response: httpx.Response, token: str) -> None:
    sent = [r for r in recorder.requests if not is_login(r)]
    assert len(sent) == 1 and token_of(sent[0]) == token  # it went out, with the token
    assert sent[0].url.host == "nacos.test" and sent[0].url.path == "/nacos/v1/cs/configs"
    assert response.status_code == EXPECTED[sent[0].method], response.text
    if sent[0].method == "GET":
        assert response.text == "greeting: hello"


@pytest.mark.parametrize("method", METHODS)
def test_every_httpx_method_works_sync(hi: Harness, method: str) -> None:
    hi.server.set_config("m.yaml", "old")
    recorder = RecordingTransport(hi.server.transport())
    with NacosTokenClient(hi.address, "nacos", "nacos", transport=recorder, store=hi.store) as client:
        assert isinstance(client, httpx.Client)
        token = client.get_token()
        _check(recorder, _sync_call(client, method), token)


@pytest.mark.parametrize("method", METHODS)
async def test_every_httpx_method_works_async(hi: Harness, method: str) -> None:
    hi.server.set_config("m.yaml", "old")
    recorder = RecordingTransport(hi.server.transport())
    async with AsyncNacosTokenClient(hi.address, "nacos", "nacos", transport=recorder, store=hi.store) as client:
        assert isinstance(client, httpx.AsyncClient)
        token = await client.get_token()
        _check(recorder, await _async_call(client, method), token)


def test_stats_base_url_and_event_hooks(h: Harness) -> None:
    seen: list[str] = []
    hooks = {"request": [lambda r: seen.append(f"> {r.url.path}")],
             "response": [lambda r: seen.append(f"< {r.status_code}")]}
    with NacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store, base_url="/v1/cs/",
                          event_hooks=hooks) as client:
        assert client.base_url == httpx.URL(f"{h.address}/nacos/v1/cs/")
        response = client.get("configs", params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"})
        assert response.text == "greeting: hello"
        assert client.get_config("app.yaml") == "greeting: hello"  # helpers are not moved under base_url
        assert client.stats.logins == 1 and client.stats == client.auth.stats
        assert seen[-4:] == ["> /nacos/v1/cs/configs", "< 200", "> /nacos/v1/cs/configs", "< 200"]
        # hooks set later keep the token's redirect guard, last
        client.event_hooks = {"request": [lambda r: seen.append("new")]}
        assert client.event_hooks["request"][-1] == client.auth.redirect_guard
        client.get("configs", params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"})
        assert seen[-1] == "new"


async def test_async_stats_base_url_and_event_hooks(hi: Harness) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with AsyncNacosTokenClient(hi.address, "nacos", "nacos", transport=hi.transport, store=hi.store,
                                     base_url="v1/cs", event_hooks={"request": [on_request]}) as client:
        response = await client.get("configs", params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"})
        assert response.text == "greeting: hello"
        assert seen == ["/nacos/v1/cs/configs"] and client.stats.logins == 1


@pytest.mark.parametrize("query", ["next=http://x", "next=http%3A%2F%2Fevil.test%2F", "u=https://a.b/c?d=e"])
def test_a_relative_url_whose_query_holds_a_url_stays_relative(hi: Harness, query: str) -> None:
    recorder = RecordingTransport(hi.server.transport())
    with NacosTokenClient(hi.address, "nacos", "nacos", transport=recorder, store=hi.store) as client:
        response = client.get(f"{CONFIG}&{query}")
        assert response.text == "greeting: hello"
        sent = next(r for r in recorder.requests if not is_login(r))
        assert sent.url.host == "nacos.test" and token_of(sent) == client.get_token()


async def test_async_relative_url_with_a_url_in_its_query(hi: Harness) -> None:
    async with AsyncNacosTokenClient(hi.address, "nacos", "nacos", transport=hi.transport, store=hi.store) as client:
        response = await client.get(f"{CONFIG}&next=http://x")
        assert response.text == "greeting: hello" and response.request.url.host == "nacos.test"


def test_fail_over_moves_base_url_and_keeps_the_query() -> None:
    server = MockNacosServer()
    server.set_config("f.yaml", "found")
    with MockNacosServer().run() as dead:
        pass
    with server.run() as alive, NacosTokenClient([dead, alive], "nacos", "nacos", store=MemoryTokenStore(),
                                                 login_backoff=(0.01, 0.02)) as client:
        response = client.get("/v1/cs/configs?dataId=f.yaml&group=DEFAULT_GROUP&next=http://x")
        assert response.text == "found" and str(response.url).startswith(alive)
        assert client.base_url == httpx.URL(f"{alive}/nacos/")


def test_closing_closes_what_it_made_never_a_users_transport(h: Harness) -> None:
    inner = h.server.transport() if h.transport is not None else httpx.HTTPTransport()
    mine, mounted = ClosingCounter(inner), ClosingCounter(inner)
    client = NacosTokenClient(h.address, "nacos", "nacos", transport=mine, store=h.store,
                              mounts={"http://other.test": mounted})
    assert client.get_config("app.yaml") == "greeting: hello"
    client.close()
    client.close()  # twice is fine
    assert client.is_closed and mine.closed == 0 and mounted.closed == 0
    with NacosTokenClient(h.address, "nacos", "nacos", transport=mine, store=h.store) as again:
        assert again.get_config("app.yaml") == "greeting: hello"  # the transport still works
    assert mine.closed == 0
    if h.transport is not None:
        inner.close()  # the user closes what they made
        return
    # over loopback: the connection pool the client made is closed
    client = NacosTokenClient(h.address, "nacos", "nacos", store=h.store)
    assert client.get_config("app.yaml") == "greeting: hello"
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1
    client.close()
    assert pool.connections == []
    with pytest.raises(RuntimeError, match="closed"):
        client.get("/v1/console/health/liveness")
    inner.close()


async def test_async_closing_leaves_a_users_transport_open(hi: Harness) -> None:
    mine = ClosingCounter(hi.server.transport())
    async with AsyncNacosTokenClient(hi.address, "nacos", "nacos", transport=mine, store=hi.store) as client:
        assert await client.get_config("app.yaml") == "greeting: hello"
    await client.aclose()
    assert mine.closed == 0 and client.is_closed


def test_a_mistyped_option_is_a_type_error_naming_the_wrapper() -> None:
    options: dict[str, Any] = {"refresh_ration": 0.5}
    with pytest.raises(TypeError, match=r"NacosTokenClient\.__init__\(\) got an unexpected keyword.*refresh_ration"):
        NacosTokenClient("127.0.0.1:8848", "nacos", "nacos", **options)
    with pytest.raises(TypeError, match=r"AsyncNacosTokenClient\.__init__\(\) got an unexpected keyword"):
        AsyncNacosTokenClient("127.0.0.1:8848", "nacos", "nacos", **options)


@pytest.mark.parametrize(("option", "value", "match"), [
    ("base_url", "http://other:8848/nacos", "NacosTokenClient: base_url is a path"),
    ("base_url", "/v1?x=1", "base_url is a path"),
    ("heartbeat_backoff", (5, 1), "NacosTokenClient: heartbeat_backoff"),
    ("heartbeat_backoff", (0, 1), "heartbeat_backoff"),
    ("heartbeat_backoff", "fast", "heartbeat_backoff"),
    ("watch", {"hold": 1}, "NacosTokenClient: watch must be a WatchSettings"),
])
def test_the_wrappers_own_options_are_checked(option: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        NacosTokenClient("127.0.0.1:8848", "nacos", "nacos", store=MemoryTokenStore(), **{option: value})


def test_auth_is_typed_and_fixed(hi: Harness) -> None:
    with NacosTokenClient(hi.address, "nacos", "nacos", transport=hi.transport, store=hi.store) as client:
        assert client.http is client
        with pytest.raises(AttributeError, match="cannot be replaced"):
            client.auth = httpx.BasicAuth("a", "b")
        response = client.get("/v1/console/health/liveness", auth=None)  # a request may still opt out
        assert token_of(response.request) is None


def test_mypy_rejects_a_mistyped_option(tmp_path: Path) -> None:
    """``refresh_ration=0.5`` used to type-check (``**options: Any``)."""
    from mypy import api

    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent("""
        from nacos_token_client import AsyncNacosTokenClient, NacosTokenClient

        NacosTokenClient("127.0.0.1:8848", "nacos", "nacos", refresh_ration=0.5)
        AsyncNacosTokenClient("127.0.0.1:8848", "nacos", "nacos", login_timeout="30")
        NacosTokenClient("127.0.0.1:8848", "nacos", "nacos").get("/x", parms={})
    """))
    out, _err, status = api.run(["--strict", "--no-error-summary", "--hide-error-context",
                                 "--cache-dir", str(Path(__file__).parent.parent / ".mypy_cache"), str(snippet)])
    assert status == 1, out
    assert 'Unexpected keyword argument "refresh_ration" for "NacosTokenClient"' in out
    assert 'Argument "login_timeout" to "AsyncNacosTokenClient" has incompatible type "str"' in out
    assert 'Unexpected keyword argument "parms" for "get" of "Client"' in out
