"""``NacosTokenClient`` and ``AsyncNacosTokenClient``: httpx clients with ``NacosTokenAuth`` and config helpers.

Paths are relative to the current server's context path (``client.get("/v1/cs/configs", params=…)``); a
connection that cannot be made moves on to the next server. Each config helper is one :class:`_Call` — the
request and how to read its answer — executed by the sync or the async client, so the two cannot drift.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from .auth import NacosTokenAuth
from .errors import PermissionDeniedError, RequestFailedError
from .lifecycle import TokenInfo
from .protocol import RejectionKind, ServerAddress, classify_rejection

__all__ = ["AsyncNacosTokenClient", "NacosTokenClient"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")
DEFAULT_GROUP = "DEFAULT_GROUP"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # the request never left: safe for any method
_MAYBE_SENT = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)  # safe for idempotent methods only
_SHARED_OPTIONS = ("transport", "async_transport", "verify", "timeout", "trust_env")  # logins use them too
_HTTP_ONLY_OPTIONS = ("follow_redirects", "headers", "cookies", "limits", "proxy", "max_redirects", "http1", "http2",
                      "default_encoding")


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    params: dict[str, str] | None
    data: dict[str, str] | None
    read: Callable[[httpx.Response], T]


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])[:300]
    except ValueError:
        pass
    return response.text.strip()[:300]


def _fail(response: httpx.Response) -> RequestFailedError:
    message = _server_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (401, 403) and classify_rejection(response) is RejectionKind.PERMISSION:
        return PermissionDeniedError(f"{where}: permission denied: {message}", status_code=response.status_code,
                                     server_message=message)
    return RequestFailedError(f"{where}: HTTP {response.status_code}: {message}", status_code=response.status_code,
                              server_message=message)


def _read_config(response: httpx.Response) -> str | None:
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise _fail(response)
    return response.text


def _read_true(response: httpx.Response) -> bool:
    if response.status_code != 200:
        raise _fail(response)
    return response.text.strip() == "true"


def _config_key(data_id: str, group: str, tenant: str) -> dict[str, str]:
    params = {"dataId": data_id, "group": group}
    if tenant:
        params["tenant"] = tenant
    return params


def get_config_call(data_id: str, group: str, tenant: str) -> _Call[str | None]:
    return _Call("GET", "/v1/cs/configs", _config_key(data_id, group, tenant), None, _read_config)


def publish_config_call(data_id: str, content: str, group: str, tenant: str, type: str | None) -> _Call[bool]:
    form = {**_config_key(data_id, group, tenant), "content": content}
    if type:
        form["type"] = type
    return _Call("POST", "/v1/cs/configs", None, form, _read_true)


def remove_config_call(data_id: str, group: str, tenant: str) -> _Call[bool]:
    return _Call("DELETE", "/v1/cs/configs", _config_key(data_id, group, tenant), None, _read_true)


class _Base:
    """What the sync and async clients share: the auth, the server list, and which server is current."""

    auth: NacosTokenAuth

    def _setup(self, server_addresses: str | Sequence[str], username: str | None, password: str | None,
               options: dict[str, Any]) -> dict[str, Any]:
        http = {k: options.pop(k) for k in _HTTP_ONLY_OPTIONS if k in options}
        http.update({k: options[k] for k in _SHARED_OPTIONS if k in options})
        self.auth = NacosTokenAuth(server_addresses, username, password, **options)
        self._current = 0
        return http

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        return self.auth.servers

    def _targets(self, path: str) -> list[tuple[int, str]]:
        if "://" in path:
            return [(self._current, path)]
        n = len(self.servers)
        order = [(self._current + i) % n for i in range(n)]
        return [(i, self.servers[i].url(path if path.startswith("/") else "/" + path)) for i in order]

    @staticmethod
    def _fail_over(method: str, exc: Exception) -> bool:
        return isinstance(exc, _NOT_SENT) or (method.upper() in _IDEMPOTENT and isinstance(exc, _MAYBE_SENT))

    def invalidate(self, token: str | None = None) -> bool:
        """Drop the cached token so the next request logs in (see ``NacosTokenAuth.invalidate``)."""
        return self.auth.invalidate(token)

    def token_info(self) -> TokenInfo | None:
        return self.auth.token_info()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(servers={[str(s) for s in self.servers]!r}, username={self.auth.username!r})"


class NacosTokenClient(_Base):
    """An ``httpx.Client`` with Nacos token auth, server fail-over and config helpers. A context manager."""

    def __init__(self, server_addresses: str | Sequence[str], username: str | None = None,
                 password: str | None = None, **options: Any) -> None:
        http = self._setup(server_addresses, username, password, options)
        http.pop("async_transport", None)
        self.http = httpx.Client(auth=self.auth, event_hooks={"request": [self.auth.redirect_guard]}, **http)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        targets = self._targets(path)
        for position, (index, url) in enumerate(targets):
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if position == len(targets) - 1 or not self._fail_over(method, exc):
                    raise
                log.warning("%s unreachable (%s); trying the next server", self.servers[index], type(exc).__name__)
                continue
            self._current = index
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def _call(self, call: _Call[T]) -> T:
        return call.read(self.request(call.method, call.path, params=call.params, data=call.data))

    def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """The config's content, or None when it does not exist."""
        return self._call(get_config_call(data_id, group, tenant))

    def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                       type: str | None = None) -> bool:
        return self._call(publish_config_call(data_id, content, group, tenant, type))

    def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        return self._call(remove_config_call(data_id, group, tenant))

    def get_token(self) -> str:
        return self.auth.get_token()

    def close(self) -> None:
        self.http.close()
        self.auth.close()

    def __enter__(self) -> NacosTokenClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncNacosTokenClient(_Base):
    """The asyncio twin of :class:`NacosTokenClient`. An async context manager."""

    def __init__(self, server_addresses: str | Sequence[str], username: str | None = None,
                 password: str | None = None, **options: Any) -> None:
        http = self._setup(server_addresses, username, password, options)
        sync_transport = http.pop("transport", None)
        transport = http.pop("async_transport", None)
        if transport is None and isinstance(sync_transport, httpx.AsyncBaseTransport):
            transport = sync_transport
        self.http = httpx.AsyncClient(auth=self.auth, transport=transport,
                                      event_hooks={"request": [self.auth.async_redirect_guard]}, **http)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        targets = self._targets(path)
        for position, (index, url) in enumerate(targets):
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if position == len(targets) - 1 or not self._fail_over(method, exc):
                    raise
                log.warning("%s unreachable (%s); trying the next server", self.servers[index], type(exc).__name__)
                continue
            self._current = index
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def _call(self, call: _Call[T]) -> T:
        return call.read(await self.request(call.method, call.path, params=call.params, data=call.data))

    async def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        return await self._call(get_config_call(data_id, group, tenant))

    async def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                             type: str | None = None) -> bool:
        return await self._call(publish_config_call(data_id, content, group, tenant, type))

    async def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        return await self._call(remove_config_call(data_id, group, tenant))

    async def get_token(self) -> str:
        return await self.auth.aget_token()

    async def aclose(self) -> None:
        await self.http.aclose()
        self.auth.close()

    async def __aenter__(self) -> AsyncNacosTokenClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
