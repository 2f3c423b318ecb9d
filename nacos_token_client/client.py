"""``NacosTokenClient`` and ``AsyncNacosTokenClient``: httpx clients with ``NacosTokenAuth``, config and naming.

Each **is** an ``httpx.Client`` / ``httpx.AsyncClient`` (a subclass, as Authlib's OAuth clients are), not a facade
around one. Why: every request method httpx has (``request``, ``get`` … ``options``, ``stream``, ``send``,
``build_request``) then exists with httpx's own typed signatures and behaviour, the client can be handed to any
library that takes an httpx client, and nothing has to be re-declared (and kept in step) here. What the subclass
adds is small and goes through public hooks: the constructor (explicit keyword-only options, split between the auth
object and httpx), ``base_url`` (the current server, moved on fail-over), ``send`` (server fail-over), ``close``
(watches, heartbeats and the auth object too; a user's transports are used, never closed) and the config and naming
helpers.

Paths are relative to the current server's context path (``client.get("/v1/cs/configs", params=…)``), or to
``base_url`` under it; a connection that cannot be made moves on to the next server. Every helper is a request
description (``Call``) or a flow of I/O commands from :mod:`~nacos_token_client.config` and
:mod:`~nacos_token_client.naming`; the two shells here (:class:`_SyncShell` on threads, :class:`_AsyncShell` on the
client's event loop) carry the commands out and differ only in the lines that do so.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import math
import os
import queue
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx._client import UseClientDefault
from httpx._config import DEFAULT_LIMITS, DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT_CONFIG
from httpx._types import AuthTypes, CookieTypes, HeaderTypes, ProxyTypes, QueryParamTypes

from .auth import NacosTokenAuth, TokenPlacement
from .config import (
    DEFAULT_GROUP,
    INTERRUPTED,
    Call,
    Command,
    ConfigChange,
    ConfigWatch,
    Deliver,
    Emit,
    Flow,
    Key,
    Load,
    Poll,
    Save,
    Send,
    Sleep,
    SnapshotStore,
    WatchSettings,
    WatchState,
    get_config_flow,
    publish_config_call,
    remove_config_call,
    watch_flow,
)
from .errors import ConfigurationError
from .events import AuthStats, EventHooks, TokenEvent
from .lifecycle import TokenInfo
from .naming import (
    DEFAULT_CLUSTER,
    HeartbeatState,
    Instance,
    InstanceSpec,
    NamingApi,
    deregister_call,
    heartbeat_flow,
    list_call,
    register_call,
)
from .protocol import ApiVersion, RejectionClassifier, ServerAddress
from .stores.base import TokenStore

__all__ = ["AsyncNacosTokenClient", "AsyncRegistration", "NacosTokenClient", "Registration"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")
EventHook = Callable[..., Any]
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # the request never left: safe for any method
_MAYBE_SENT = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)  # safe for idempotent methods only
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED_OPTIONS = ("verify", "timeout", "trust_env")  # requests and logins both use them
_HTTP_ONLY_OPTIONS = ("params", "headers", "cookies", "follow_redirects", "max_redirects", "limits", "proxy", "http1",
                      "http2", "default_encoding")
_JOIN_SECONDS = 5.0  # how long close() waits for a background thread to end
_QUEUE_TICK = 1.0  # the callback thread looks at its client this often when idle


#: where a request goes: (index of the configured server or None for another address, the request)
_Attempt = tuple[int | None, httpx.Request]


class _Default(enum.Enum):
    """``timeout`` not given: requests keep httpx's default and logins NacosTokenAuth's (``None`` is a choice:
    no timeout)."""

    DEFAULT = "default"


_DEFAULT = _Default.DEFAULT


def _advance(flow: Flow[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """One step of a flow: ``(False, command)`` or ``(True, result)``."""
    try:
        return False, (flow.throw(error) if error is not None else flow.send(value))
    except StopIteration as stop:
        return True, stop.value


class _Borrowed(httpx.BaseTransport):
    """A transport the user made: the client sends through it but never closes it (whoever made it does)."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.transport.handle_request(request)


class _AsyncBorrowed(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`_Borrowed`."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)


def _given(**options: Any) -> dict[str, Any]:
    """The options the caller gave (None means "NacosTokenAuth's default"), so defaults live in one place."""
    return {name: value for name, value in options.items() if value is not None and value is not _DEFAULT}


def _sync_side(transport: httpx.AsyncBaseTransport | None) -> httpx.BaseTransport | None:
    """An async client's transport serves the auth's sync logins too when it can (the mock server's does)."""
    return transport if isinstance(transport, httpx.BaseTransport) else None


def _check_backoff(owner: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        first, longest = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{owner}: heartbeat_backoff must be (first, max) seconds, not {value!r}") from None
    if not (math.isfinite(first) and math.isfinite(longest) and 0 < first <= longest <= 3600):
        raise ConfigurationError(f"{owner}: heartbeat_backoff must be (first, max) seconds with "
                                 f"0 < first <= max <= 3600, not {value!r}")
    return first, longest


def _check_base_path(owner: str, base_url: str) -> str:
    if not isinstance(base_url, str) or httpx.URL(base_url).scheme or "?" in base_url or "#" in base_url:
        raise ConfigurationError(f"{owner}: base_url is a path under each server's context path (like '/v1/cs'); "
                                 f"put servers in server_addresses, not {base_url!r}")
    return "/" + base_url.strip("/") if base_url.strip("/") else ""


class _Base:
    """What the sync and async clients share: the auth, the server list, which server is current, fail-over, and
    the watch/naming/snapshot settings."""

    # set by httpx.Client / httpx.AsyncClient, which come after this class in the MRO
    _event_hooks: dict[str, list[EventHook]]
    base_url: httpx.URL

    def _configure(self, options: dict[str, Any], borrow: Callable[[Any], Any]) -> dict[str, Any]:
        """Split the constructor's options (its ``locals()``): check the wrapper's own, make the auth object from
        the ones it takes (by name: left out, each keeps NacosTokenAuth's default); what httpx's constructor gets."""
        owner = type(self).__name__
        options = {k: v for k, v in options.items() if k not in ("self", "__class__")}
        self._prefix = _check_base_path(owner, options.pop("base_url"))
        snapshot_dir = options.pop("snapshot_dir")
        self._snapshots = SnapshotStore(snapshot_dir) if snapshot_dir is not None else None
        watch = options.pop("watch")
        watch = WatchSettings() if watch is None else watch
        if not isinstance(watch, WatchSettings):
            raise ConfigurationError(f"{owner}: watch must be a WatchSettings, not {type(watch).__name__}")
        self._watch_settings = watch
        self._heartbeat_backoff = _check_backoff(owner, options.pop("heartbeat_backoff"))
        http = {name: options.pop(name) for name in _HTTP_ONLY_OPTIONS}
        transport, mounts, hooks = options.pop("transport"), options.pop("mounts") or {}, options.pop("event_hooks")
        http.update({name: options[name] for name in _SHARED_OPTIONS})
        if http["timeout"] is _DEFAULT:
            http["timeout"] = DEFAULT_TIMEOUT_CONFIG
        logins = {"transport": transport}
        if isinstance(self, httpx.AsyncClient):
            logins = {"async_transport": transport, "transport": _sync_side(transport)}
        server_addresses, username, password = (options.pop(k) for k in ("server_addresses", "username", "password"))
        auth_options = _given(**options, **logins)
        self._naming_api: NamingApi = "v3" if auth_options.get("api") == "v3" else "v1"
        self._events = EventHooks(auth_options.get("on_event"))
        self._nacos_auth = NacosTokenAuth(server_addresses, username, password, **auth_options)
        self._homes = [(httpx.URL(s.url("/")), s) for s in self.servers]
        self._current = 0
        self._registrations: list[HeartbeatState] = []
        self._guard = guard = self._guard_hook()
        hooks = hooks or {}
        return {**http, "auth": self._nacos_auth, "base_url": self._base_for(0),
                "transport": borrow(transport) if transport is not None else None,
                "mounts": {pattern: borrow(m) if m is not None else None for pattern, m in mounts.items()},
                "event_hooks": {"request": [*hooks.get("request", []), guard],
                                "response": list(hooks.get("response", []))}}

    def _guard_hook(self) -> EventHook:
        """The auth's redirect guard, sync or async as the client."""
        raise NotImplementedError

    # -- what httpx.Client has, narrowed or kept safe ----------------------------------------------------------------

    @property
    def auth(self) -> NacosTokenAuth:
        """The :class:`NacosTokenAuth` this client made: ``token_info()``, ``invalidate()``, ``stats``, events.
        (A request can still pass its own ``auth=``.)"""
        return self._nacos_auth

    @auth.setter
    def auth(self, auth: AuthTypes) -> None:
        raise AttributeError(f"{type(self).__name__}.auth is the client's own NacosTokenAuth and cannot be replaced;"
                             " pass auth= to a request instead")

    @property
    def event_hooks(self) -> dict[str, list[EventHook]]:
        """httpx's event hooks; the token's redirect guard always stays the last request hook."""
        return self._event_hooks

    @event_hooks.setter
    def event_hooks(self, event_hooks: dict[str, list[EventHook]]) -> None:
        self._event_hooks = {
            "request": [h for h in event_hooks.get("request", []) if h != self._guard] + [self._guard],
            "response": list(event_hooks.get("response", [])),
        }

    @property
    def http(self) -> _Base:
        """The client itself (kept for code written when the httpx client was a separate attribute)."""
        return self

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        """The configured servers, in fail-over order."""
        return self._nacos_auth.servers

    @property
    def stats(self) -> AuthStats:
        """This client's auth counters (logins, waits, rejections, replays …): ``self.auth.stats``."""
        return self._nacos_auth.stats

    # -- fail-over ---------------------------------------------------------------------------------------------------

    def _base_for(self, index: int) -> str:
        return self.servers[index].url(self._prefix + "/")

    def _home(self, url: httpx.URL) -> int | None:
        """Which configured server ``url`` lies under (same origin, under its context path), if any."""
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        for index, (home, _server) in enumerate(self._homes):
            if (url.scheme, url.host, port) == (home.scheme, home.host, home.port or _DEFAULT_PORTS.get(home.scheme)) \
                    and url.raw_path.startswith(home.raw_path):
                return index
        return None

    def _attempts(self, request: httpx.Request) -> Iterator[_Attempt]:
        """The request (and the server it goes to), then, made only when asked for, the same request as each other
        server would get it: what a connection failure moves on to. One attempt for an address outside the list."""
        index = 0 if len(self.servers) == 1 else self._home(request.url)
        if index is None or len(self.servers) == 1:
            yield index, request
            return
        headers = request.headers.copy()  # before the auth adds a token
        tail = request.url.raw_path[len(self._homes[index][0].raw_path):]
        yield index, request
        for step in range(1, len(self.servers)):
            other = (index + step) % len(self.servers)
            home = self._homes[other][0]
            url = home.copy_with(raw_path=home.raw_path + tail)
            headers["Host"] = url.netloc.decode("ascii")  # httpx sets Host only for a request it encodes itself
            yield other, httpx.Request(request.method, url, headers=headers.copy(), stream=request.stream,
                                       extensions=request.extensions)

    def _next_attempt(self, attempts: Iterator[_Attempt], failed: _Attempt, exc: Exception) -> _Attempt | None:
        """Where a request that failed with ``exc`` goes next, or None (the error goes to the caller)."""
        index, request = failed
        movable = isinstance(exc, _NOT_SENT) or (
            request.method.upper() in _IDEMPOTENT and isinstance(exc, _MAYBE_SENT)
            and isinstance(request.stream, httpx.ByteStream))  # sent, maybe: only an idempotent, resendable one
        following = next(attempts, None) if movable else None
        if following is not None:
            log.warning("%s unreachable (%s); trying the next server", self.servers[index or 0], type(exc).__name__)
        return following

    def _answered(self, index: int | None) -> None:
        """A server that answered becomes current: relative paths go to it from now on."""
        if index is not None and index != self._current:
            self._current = index
            self.base_url = httpx.URL(self._base_for(index))

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _helper_url(self, call: Call[Any]) -> str:
        """Helper calls ignore ``base_url``'s path: their paths are under the context path."""
        return self.servers[self._current].url(call.path)

    @staticmethod
    def _request_options(call: Call[Any]) -> dict[str, Any]:
        options: dict[str, Any] = {"params": call.params, "data": call.data, "headers": call.headers}
        if call.timeout is not None:
            options["timeout"] = call.timeout
        return options

    def _spec(self, service_name: str, ip: str, port: int, *, group_name: str, cluster_name: str,
              weight: float = 1.0, metadata: Mapping[str, str] | None = None, ephemeral: bool = True) -> InstanceSpec:
        try:
            return InstanceSpec(service_name, ip, port, group_name, cluster_name, weight, dict(metadata or {}),
                                ephemeral, self._nacos_auth.namespace)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def _stop_heartbeats(self, spec: InstanceSpec | None = None) -> list[HeartbeatState]:
        """Stop the heartbeats of ``spec``'s instance (all of them when None); the stopped ones."""
        stopped = [s for s in self._registrations if spec is None or (
            s.spec.grouped, s.spec.ip, s.spec.port, s.spec.cluster_name) == (
            spec.grouped, spec.ip, spec.port, spec.cluster_name)]
        for state in stopped:
            state.stopped = True
            self._registrations.remove(state)
        return stopped

    def invalidate(self, token: str | None = None) -> bool:
        """Drop the cached token so the next request logs in (see ``NacosTokenAuth.invalidate``)."""
        return self._nacos_auth.invalidate(token)

    def token_info(self) -> TokenInfo | None:
        """A secret-free snapshot of the cached token (expiry, refresh time, fingerprint), or None."""
        return self._nacos_auth.token_info()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(servers={[str(s) for s in self.servers]!r}, "
                f"username={self._nacos_auth.username!r})")


class _Registration:
    """What both registration handles share: the instance and whether its heartbeat still runs."""

    def __init__(self, spec: InstanceSpec, heartbeat: HeartbeatState | None) -> None:
        self.service_name = spec.service_name
        self.ip, self.port = spec.ip, spec.port
        self.group_name, self.cluster_name = spec.group_name, spec.cluster_name
        self.ephemeral = spec.ephemeral
        self._spec = spec
        self._heartbeat = heartbeat

    @property
    def active(self) -> bool:
        """True while the heartbeat runs (always False for a persistent instance, which needs none)."""
        return self._heartbeat is not None and not self._heartbeat.stopped

    @property
    def interval(self) -> float | None:
        """The heartbeat interval the server asked for (``clientBeatInterval``), in seconds."""
        return self._heartbeat.interval if self._heartbeat is not None else None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(service_name={self.service_name!r}, ip={self.ip!r}, port={self.port}, "
                f"group_name={self.group_name!r}, cluster_name={self.cluster_name!r}, active={self.active})")


class Registration(_Registration):
    """A registered instance, kept alive by heartbeats until :meth:`deregister` or the client's ``close()``.
    Returned by :meth:`NacosTokenClient.register_instance`, never made directly (it belongs to that client's
    heartbeats)."""

    def __init__(self, spec: InstanceSpec, heartbeat: HeartbeatState | None, client: NacosTokenClient) -> None:
        super().__init__(spec, heartbeat)
        self._client = client

    def deregister(self) -> None:
        """Stop the heartbeats and remove the instance from the server."""
        self._client.deregister_instance(self.service_name, self.ip, self.port, group_name=self.group_name,
                                         cluster_name=self.cluster_name, ephemeral=self.ephemeral)


class AsyncRegistration(_Registration):
    """The asyncio twin of :class:`Registration`: ``await registration.deregister()``. Returned by
    :meth:`AsyncNacosTokenClient.register_instance`."""

    def __init__(self, spec: InstanceSpec, heartbeat: HeartbeatState | None,
                 client: AsyncNacosTokenClient) -> None:
        super().__init__(spec, heartbeat)
        self._client = client

    async def deregister(self) -> None:
        """Stop the heartbeats and remove the instance from the server."""
        await self._client.deregister_instance(self.service_name, self.ip, self.port, group_name=self.group_name,
                                               cluster_name=self.cluster_name, ephemeral=self.ephemeral)


def _deliver(change: ConfigChange, listeners: Sequence[ConfigWatch]) -> list[Awaitable[Any]]:
    """Call each still-active listener; a callback that raises is logged and the watch goes on. Returns the
    awaitables async callbacks gave back (the async shell awaits them in order)."""
    pending: list[Awaitable[Any]] = []
    for watch in listeners:
        if not watch.active:
            continue
        try:
            result = watch.callback(change)
        except Exception:
            log.exception("config listener for %s raised; the watch goes on", change.data_id)
            continue
        if inspect.isawaitable(result):
            pending.append(result)
    return pending


class _SyncShell:
    """Carries out flow commands on threads: requests on the calling thread, long polls on a daemon thread that
    can be abandoned, changes on the client's one callback thread (in order)."""

    def __init__(self, client: NacosTokenClient) -> None:
        self.client = client
        self.cond = threading.Condition()
        self.closed = False
        self.deliveries: queue.Queue[tuple[ConfigChange, tuple[ConfigWatch, ...]] | None] = queue.Queue()
        self.callback_thread: threading.Thread | None = None

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def run(self, flow: Flow[T]) -> T:
        done, out = _advance(flow, None, None)
        while not done:
            try:
                value, error = self.execute(out), None
            except Exception as exc:
                value, error = None, exc
            done, out = _advance(flow, value, error)
        return out  # type: ignore[no-any-return]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate() or self.closed, timeout=timeout)

    def execute(self, command: Command) -> Any:
        if isinstance(command, Send):
            return self.client._send(command.call)
        if isinstance(command, Poll):
            box: list[tuple[bool, Any]] = []

            def work(call: Call[Any] = command.call) -> None:
                try:
                    box.append((True, self.client._send(call)))
                except BaseException as exc:
                    box.append((False, exc))
                self.notify()

            threading.Thread(target=work, name="nacos-config-poll", daemon=True).start()
            self.wait_for(lambda: bool(box) or command.interrupted(), command.deadline)
            return _poll_outcome(box[0] if box else None, command)
        if isinstance(command, Sleep):
            self.wait_for(command.interrupted, command.seconds)
            return None
        if isinstance(command, Deliver):
            self._start_callbacks()
            self.deliveries.put((command.change, command.listeners))
            return None
        return _store_command(self.client, command)

    def _start_callbacks(self) -> None:
        with self.cond:
            if self.callback_thread is None:
                self.callback_thread = threading.Thread(target=self._callbacks, name="nacos-config-callbacks",
                                                        daemon=True)
                self.callback_thread.start()

    def _callbacks(self) -> None:
        while not self.closed:
            try:
                item = self.deliveries.get(timeout=_QUEUE_TICK)
            except queue.Empty:
                continue
            if item is not None:
                _deliver(*item)

    def start(self, flow: Flow[None], name: str) -> threading.Thread:
        def main() -> None:
            try:
                self.run(flow)
            except Exception:
                log.exception("%s ended by an unexpected error", name)

        thread = threading.Thread(target=main, name=name, daemon=True)
        thread.start()
        return thread

    def close(self, threads: Sequence[threading.Thread]) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.deliveries.put(None)
        for thread in [*threads, *([self.callback_thread] if self.callback_thread else [])]:
            if thread is not threading.current_thread():
                thread.join(_JOIN_SECONDS)


class _AsyncShell:
    """Carries out flow commands on the client's event loop: long polls are tasks cancelled when interrupted,
    changes go through one delivery task (plain or async callbacks, in order), file I/O goes to a worker thread."""

    def __init__(self, client: AsyncNacosTokenClient) -> None:
        self.client = client
        self.loop: asyncio.AbstractEventLoop | None = None
        self.changed: asyncio.Event | None = None
        self.closed = False
        self.deliveries: asyncio.Queue[tuple[ConfigChange, tuple[ConfigWatch, ...]] | None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def _bind(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self.loop is None or self.changed is None:
            self.loop, self.changed = loop, asyncio.Event()
        elif self.loop is not loop:
            raise RuntimeError("an AsyncNacosTokenClient's watches and heartbeats live on one event loop")
        return self.changed

    def notify(self) -> None:
        loop, changed = self.loop, self.changed
        if loop is None or changed is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            changed.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    async def run(self, flow: Flow[T]) -> T:
        done, out = _advance(flow, None, None)
        while not done:
            try:
                value, error = await self.execute(out), None
            except Exception as exc:
                value, error = None, exc
            done, out = _advance(flow, value, error)
        return out  # type: ignore[no-any-return]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        changed = self._bind()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (predicate() or self.closed):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed.clear()
            if predicate() or self.closed:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    async def execute(self, command: Command) -> Any:
        if isinstance(command, Send):
            return await self.client._send(command.call)
        if isinstance(command, Poll):
            task = asyncio.ensure_future(self.client._send(command.call))
            task.add_done_callback(lambda _task: self.notify())
            await self.wait_for(lambda: task.done() or command.interrupted(), command.deadline)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return _poll_outcome(None, command)
            exc = task.exception()
            return _poll_outcome((exc is None, task.result() if exc is None else exc), command)
        if isinstance(command, Sleep):
            await self.wait_for(command.interrupted, command.seconds)
            return None
        if isinstance(command, Deliver):
            self._start_callbacks().put_nowait((command.change, command.listeners))
            return None
        if isinstance(command, (Save, Load)):
            return await asyncio.to_thread(_store_command, self.client, command)
        return _store_command(self.client, command)

    def _start_callbacks(self) -> asyncio.Queue[tuple[ConfigChange, tuple[ConfigWatch, ...]] | None]:
        if self.deliveries is None:
            self.deliveries = asyncio.Queue()
            self.start(self._callbacks(self.deliveries), "nacos-config-callbacks")
        return self.deliveries

    async def _callbacks(self, deliveries: asyncio.Queue[tuple[ConfigChange, tuple[ConfigWatch, ...]] | None]
                         ) -> None:
        while (item := await deliveries.get()) is not None:
            for pending in _deliver(*item):
                try:
                    await pending
                except Exception:
                    log.exception("async config listener for %s raised; the watch goes on", item[0].data_id)

    def start(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        self._bind()

        async def main() -> None:
            try:
                await work
            except Exception:
                log.exception("%s ended by an unexpected error", name)

        task = asyncio.ensure_future(main())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self) -> None:
        self.closed = True
        self.notify()
        if self.deliveries is not None:
            self.deliveries.put_nowait(None)
        tasks = [t for t in self.tasks if t is not asyncio.current_task()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=_JOIN_SECONDS)
            for task in pending:
                task.cancel()


def _poll_outcome(box: tuple[bool, Any] | None, command: Poll) -> Any:
    """A finished poll's response (or its error), else INTERRUPTED, else the deadline passed."""
    if box is not None:
        ok, value = box
        if ok:
            return value
        raise value
    if command.interrupted():
        return INTERRUPTED
    raise TimeoutError(f"long poll still unanswered after {command.deadline:.0f} s")


def _store_command(client: _Base, command: Command) -> Any:
    """Snapshots and events: the same on both shells (the async shell runs file I/O on a worker thread)."""
    if isinstance(command, Save):
        if client._snapshots is not None:
            try:
                client._snapshots.save(command.key, command.content)
            except OSError as exc:
                log.warning("config snapshot for %s not written: %s", command.key[0], exc)
        return None
    if isinstance(command, Load):
        return client._snapshots.load(command.key) if client._snapshots is not None else (False, None)
    if isinstance(command, Emit):
        client._events.emit(command.event)
        return None
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


class NacosTokenClient(_Base, httpx.Client):  # type: ignore[misc]  # .auth: narrowed to NacosTokenAuth
    """An ``httpx.Client`` with Nacos token auth, server fail-over, config (read, publish, watch) and naming
    (register with heartbeats, list). A context manager; every ``httpx.Client`` method works, with paths relative
    to the current server.

    ``server_addresses``, ``username`` and ``password`` are NacosTokenAuth's (the servers, in fail-over order; no
    username: requests go out without a token; a password may be a callable, asked before each login).

    Options (keyword-only):

    * ``NacosTokenAuth``'s — ``namespace``, ``context_path``, ``api``, ``token_placement``, ``refresh_ratio``,
      ``refresh_jitter``, ``login_timeout``, ``login_attempts``, ``login_backoff``, ``negative_cache_seconds``,
      ``store``, ``store_sync_interval``, ``clock``, ``timer``, ``rejection_classifier``, ``relogin_on_replaced``,
      ``on_event`` — passed to it by name; left out (None), each keeps NacosTokenAuth's default.
    * For requests and logins alike: ``transport`` (used, never closed by the client), ``verify``, ``timeout`` (not
      given: httpx's 5 s for requests, NacosTokenAuth's default for logins), ``trust_env``.
    * For requests (httpx's meaning): ``base_url`` — a path under each server's context path that relative paths
      are joined to (``base_url="/v1/cs"``, then ``get("configs")``); ``client.base_url`` shows the current
      server's. ``params``, ``headers``, ``cookies``, ``follow_redirects``, ``max_redirects``, ``limits``,
      ``event_hooks`` (the token's redirect guard is added as the last request hook), ``mounts`` (their transports
      are never closed by the client either), ``proxy`` (requests only: logins use ``trust_env``'s environment
      proxies), ``http1``, ``http2`` (needs ``httpx[http2]``), ``default_encoding``.
    * This client's: ``snapshot_dir`` (keep every config read or change on disk and answer ``get_config`` from it
      when no server can be reached), ``watch`` (:class:`WatchSettings`), ``heartbeat_backoff`` ((first, max)
      seconds between retries of a failed beat).

    A mistyped option is a ``TypeError`` naming this class (and an error for mypy).
    """

    def __init__(
        self,
        server_addresses: str | Sequence[str],
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        *,
        namespace: str | None = None,
        context_path: str | None = None,
        api: ApiVersion | None = None,
        token_placement: TokenPlacement | None = None,
        refresh_ratio: float | None = None,
        refresh_jitter: float | None = None,
        login_timeout: float | None = None,
        login_attempts: int | None = None,
        login_backoff: tuple[float, float] | None = None,
        negative_cache_seconds: float | None = None,
        store_sync_interval: float | None = None,
        store: TokenStore | None = None,
        clock: Callable[[], float] | None = None,
        timer: Callable[[], float] | None = None,
        rejection_classifier: RejectionClassifier | None = None,
        relogin_on_replaced: bool | None = None,
        on_event: Callable[[TokenEvent], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float | httpx.Timeout | _Default | None = _DEFAULT,
        trust_env: bool = True,
        base_url: str = "",
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        follow_redirects: bool = False,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        limits: httpx.Limits = DEFAULT_LIMITS,
        event_hooks: Mapping[str, list[EventHook]] | None = None,
        mounts: Mapping[str, httpx.BaseTransport | None] | None = None,
        proxy: ProxyTypes | None = None,
        http1: bool = True,
        http2: bool = False,
        default_encoding: str | Callable[[bytes], str] = "utf-8",
        snapshot_dir: str | os.PathLike[str] | None = None,
        watch: WatchSettings | None = None,
        heartbeat_backoff: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        super().__init__(**self._configure(locals(), _Borrowed))
        self._shell = _SyncShell(self)
        self._watch_state = WatchState(on_change=self._shell.notify)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _guard_hook(self) -> EventHook:
        return self._nacos_auth.redirect_guard

    def send(self, request: httpx.Request, *, stream: bool = False,
             auth: AuthTypes | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
             follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        """``httpx.Client.send``, moving on to the next server when a configured server cannot be reached (any
        request that never left; an idempotent one with a resendable body that may have)."""
        attempts = self._attempts(request)
        attempt: _Attempt | None = next(attempts)
        while attempt is not None:
            try:
                response = super().send(attempt[1], stream=stream, auth=auth, follow_redirects=follow_redirects)
            except httpx.TransportError as exc:
                attempt = self._next_attempt(attempts, attempt, exc)
                if attempt is None:
                    raise
                continue
            self._answered(attempt[0])
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, call: Call[Any]) -> httpx.Response:
        return self.request(call.method, self._helper_url(call), **self._request_options(call))

    def _call(self, call: Call[T]) -> T:
        return call.read(self._send(call))

    # -- config ------------------------------------------------------------------------------------------------------

    def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """The config's content, or None when it does not exist (from the snapshot when no server answers)."""
        return self._shell.run(get_config_flow((data_id, group, tenant), snapshots=self._snapshots is not None))

    def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                       type: str | None = None) -> bool:
        """Create or replace the config (``type``: its format, such as ``"yaml"``, shown in the console). True
        when the server stored it; a refused or failed request raises, so a write is never silently lost."""
        return self._call(publish_config_call(data_id, content, group, tenant, type))

    def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        """Delete the config; True when the server says so (Nacos also answers True for one that did not
        exist)."""
        return self._call(remove_config_call(data_id, group, tenant))

    def add_config_listener(self, data_id: str, callback: Callable[[ConfigChange], Any],
                            group: str = DEFAULT_GROUP, tenant: str = "") -> ConfigWatch:
        """Call ``callback(change)`` once per change of the config from now on, on the client's callback thread, in
        order. All of the client's keys share one long poll. ``ConfigWatch.cancel()`` or ``close()`` stops it."""
        key: Key = (data_id, group, tenant)
        baseline = self.get_config(data_id, group, tenant) if self._watch_state.needs_baseline(key) else None
        watch = ConfigWatch(key, callback, self._watch_state)
        self._watch_state.add(watch, baseline)
        with self._lock:
            if not any(t.name == "nacos-config-watch" for t in self._threads):
                flow = watch_flow(self._watch_state, self._watch_settings, snapshots=self._snapshots is not None)
                self._threads.append(self._shell.start(flow, "nacos-config-watch"))
        return watch

    # -- naming ------------------------------------------------------------------------------------------------------

    def register_instance(self, service_name: str, ip: str, port: int, *, group_name: str = DEFAULT_GROUP,
                          cluster_name: str = DEFAULT_CLUSTER, weight: float = 1.0,
                          metadata: Mapping[str, str] | None = None, ephemeral: bool = True) -> Registration:
        """Register an instance; an ephemeral one is kept alive by heartbeats (at the server's
        ``clientBeatInterval``) until ``Registration.deregister()`` or ``close()``."""
        spec = self._spec(service_name, ip, port, group_name=group_name, cluster_name=cluster_name, weight=weight,
                          metadata=metadata, ephemeral=ephemeral)
        self._call(register_call(spec, self._naming_api))
        heartbeat = None
        if ephemeral:
            heartbeat = HeartbeatState(spec, self._naming_api)
            with self._lock:
                self._stop_heartbeats(spec)
                self._registrations.append(heartbeat)
                flow = heartbeat_flow(heartbeat, backoff=self._heartbeat_backoff)
                heartbeat.runner = self._shell.start(flow, f"nacos-heartbeat-{service_name}-{ip}:{port}")
                self._threads.append(heartbeat.runner)
        return Registration(spec, heartbeat, self)

    def deregister_instance(self, service_name: str, ip: str, port: int, *, group_name: str = DEFAULT_GROUP,
                            cluster_name: str = DEFAULT_CLUSTER, ephemeral: bool = True) -> bool:
        """Stop this instance's heartbeats (if this client sends them) and remove it from the server
        (``ephemeral=False`` for a persistent instance: Nacos keeps the two kinds apart)."""
        spec = self._spec(service_name, ip, port, group_name=group_name, cluster_name=cluster_name,
                          ephemeral=ephemeral)
        with self._lock:
            stopped = self._stop_heartbeats(spec)
        self._shell.notify()
        for state in stopped:  # a beat in flight must not re-register the instance after the DELETE
            state.runner.join(_JOIN_SECONDS)
        return self._call(deregister_call(spec, self._naming_api))

    def list_instances(self, service_name: str, *, group_name: str = DEFAULT_GROUP,
                       healthy_only: bool = False) -> list[Instance]:
        """The service's enabled instances (only the healthy ones with ``healthy_only``)."""
        return self._call(list_call(service_name, group_name, self._nacos_auth.namespace, healthy_only,
                                    self._naming_api))

    def get_token(self) -> str:
        """The current token (logging in if needed), for a request this client does not send itself — a gRPC
        call, another HTTP library. Requests through this client need no call: the auth adds the token."""
        return self._nacos_auth.get_token()


    def close(self) -> None:
        """Stop every watch and heartbeat (an instance then expires on the server), close the connections and the
        auth object this client made. A transport you passed stays open."""
        self._stop_background()
        super().close()
        self._nacos_auth.close()

    def _stop_background(self) -> None:
        with self._lock:
            self._stop_heartbeats()
            threads, self._threads = self._threads, []
        self._watch_state.close()
        self._shell.close(threads)

    def __exit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                 traceback: TracebackType | None = None) -> None:
        self._stop_background()
        super().__exit__(exc_type, exc_value, traceback)
        self._nacos_auth.close()


class AsyncNacosTokenClient(_Base, httpx.AsyncClient):  # type: ignore[misc]  # .auth: as above
    """The asyncio twin of :class:`NacosTokenClient`: an ``httpx.AsyncClient`` and an async context manager.
    Watches and heartbeats run as tasks on the event loop that first started one.

    It takes the same options, with the same meaning and defaults (see :class:`NacosTokenClient`), so code moves
    between the two unchanged; only ``transport`` and ``mounts`` take async transports (an async ``transport`` that
    is also a sync one, like ``httpx.MockTransport``, serves the auth's sync logins too):

    * ``server_addresses``, ``username``, ``password``;
    * NacosTokenAuth's, None meaning its default: ``namespace``, ``context_path``, ``api``, ``token_placement``,
      ``refresh_ratio``, ``refresh_jitter``, ``login_timeout``, ``login_attempts``, ``login_backoff``,
      ``negative_cache_seconds``, ``store_sync_interval``, ``store``, ``clock``, ``timer``,
      ``rejection_classifier``, ``relogin_on_replaced``, ``on_event``;
    * for requests and logins: ``transport``, ``verify``, ``timeout``, ``trust_env``;
    * httpx's, for requests: ``base_url`` (a path under each server's context path), ``params``, ``headers``,
      ``cookies``, ``follow_redirects``, ``max_redirects``, ``limits``, ``event_hooks``, ``mounts``, ``proxy``,
      ``http1``, ``http2``, ``default_encoding``;
    * this client's: ``snapshot_dir``, ``watch``, ``heartbeat_backoff``.
    """

    def __init__(
        self,
        server_addresses: str | Sequence[str],
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        *,
        namespace: str | None = None,
        context_path: str | None = None,
        api: ApiVersion | None = None,
        token_placement: TokenPlacement | None = None,
        refresh_ratio: float | None = None,
        refresh_jitter: float | None = None,
        login_timeout: float | None = None,
        login_attempts: int | None = None,
        login_backoff: tuple[float, float] | None = None,
        negative_cache_seconds: float | None = None,
        store_sync_interval: float | None = None,
        store: TokenStore | None = None,
        clock: Callable[[], float] | None = None,
        timer: Callable[[], float] | None = None,
        rejection_classifier: RejectionClassifier | None = None,
        relogin_on_replaced: bool | None = None,
        on_event: Callable[[TokenEvent], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float | httpx.Timeout | _Default | None = _DEFAULT,
        trust_env: bool = True,
        base_url: str = "",
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        follow_redirects: bool = False,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        limits: httpx.Limits = DEFAULT_LIMITS,
        event_hooks: Mapping[str, list[EventHook]] | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport | None] | None = None,
        proxy: ProxyTypes | None = None,
        http1: bool = True,
        http2: bool = False,
        default_encoding: str | Callable[[bytes], str] = "utf-8",
        snapshot_dir: str | os.PathLike[str] | None = None,
        watch: WatchSettings | None = None,
        heartbeat_backoff: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        super().__init__(**self._configure(locals(), _AsyncBorrowed))
        self._shell = _AsyncShell(self)
        self._watch_state = WatchState(on_change=self._shell.notify)
        self._watch_task: asyncio.Task[None] | None = None
        self._iterators: set[asyncio.Queue[ConfigChange | None]] = set()

    def _guard_hook(self) -> EventHook:
        return self._nacos_auth.async_redirect_guard

    async def send(self, request: httpx.Request, *, stream: bool = False,
                   auth: AuthTypes | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
                   follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        """``httpx.AsyncClient.send`` with the same server fail-over as :meth:`NacosTokenClient.send`."""
        attempts = self._attempts(request)
        attempt: _Attempt | None = next(attempts)
        while attempt is not None:
            try:
                response = await super().send(attempt[1], stream=stream, auth=auth, follow_redirects=follow_redirects)
            except httpx.TransportError as exc:
                attempt = self._next_attempt(attempts, attempt, exc)
                if attempt is None:
                    raise
                continue
            self._answered(attempt[0])
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, call: Call[Any]) -> httpx.Response:
        return await self.request(call.method, self._helper_url(call), **self._request_options(call))

    async def _call(self, call: Call[T]) -> T:
        return call.read(await self._send(call))

    # -- config ------------------------------------------------------------------------------------------------------

    async def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """The config's content, or None when it does not exist (from the snapshot when no server answers)."""
        return await self._shell.run(get_config_flow((data_id, group, tenant),
                                                     snapshots=self._snapshots is not None))

    async def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                             type: str | None = None) -> bool:
        """:meth:`NacosTokenClient.publish_config`, awaited."""
        return await self._call(publish_config_call(data_id, content, group, tenant, type))

    async def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        """:meth:`NacosTokenClient.remove_config`, awaited."""
        return await self._call(remove_config_call(data_id, group, tenant))

    async def add_config_listener(self, data_id: str, callback: Callable[[ConfigChange], Any],
                                  group: str = DEFAULT_GROUP, tenant: str = "") -> ConfigWatch:
        """Call ``callback(change)`` (plain or async) once per change of the config from now on, on this loop, in
        order. ``ConfigWatch.cancel()`` or ``aclose()`` stops it."""
        key: Key = (data_id, group, tenant)
        baseline = await self.get_config(data_id, group, tenant) if self._watch_state.needs_baseline(key) else None
        watch = ConfigWatch(key, callback, self._watch_state)
        self._watch_state.add(watch, baseline)
        if self._watch_task is None or self._watch_task.done():
            flow = watch_flow(self._watch_state, self._watch_settings, snapshots=self._snapshots is not None)
            self._watch_task = self._shell.start(self._shell.run(flow), "nacos-config-watch")
        return watch

    async def watch_config(self, data_id: str, group: str = DEFAULT_GROUP,
                           tenant: str = "") -> AsyncIterator[ConfigChange]:
        """``async for change in client.watch_config("app.yaml")``: each change from the first iteration on, until
        the loop breaks or the client closes."""
        changes: asyncio.Queue[ConfigChange | None] = asyncio.Queue()
        watch = await self.add_config_listener(data_id, changes.put_nowait, group, tenant)
        self._iterators.add(changes)
        try:
            while (change := await changes.get()) is not None:
                yield change
        finally:
            watch.cancel()
            self._iterators.discard(changes)

    # -- naming ------------------------------------------------------------------------------------------------------

    async def register_instance(self, service_name: str, ip: str, port: int, *, group_name: str = DEFAULT_GROUP,
                                cluster_name: str = DEFAULT_CLUSTER, weight: float = 1.0,
                                metadata: Mapping[str, str] | None = None,
                                ephemeral: bool = True) -> AsyncRegistration:
        """Register an instance; an ephemeral one is kept alive by heartbeats (a task on this loop) until
        ``await registration.deregister()`` or ``aclose()``."""
        spec = self._spec(service_name, ip, port, group_name=group_name, cluster_name=cluster_name, weight=weight,
                          metadata=metadata, ephemeral=ephemeral)
        await self._call(register_call(spec, self._naming_api))
        heartbeat = None
        if ephemeral:
            heartbeat = HeartbeatState(spec, self._naming_api)
            self._stop_heartbeats(spec)
            self._registrations.append(heartbeat)
            flow = heartbeat_flow(heartbeat, backoff=self._heartbeat_backoff)
            heartbeat.runner = self._shell.start(self._shell.run(flow), f"nacos-heartbeat-{service_name}-{ip}:{port}")
        return AsyncRegistration(spec, heartbeat, self)

    async def deregister_instance(self, service_name: str, ip: str, port: int, *, group_name: str = DEFAULT_GROUP,
                                  cluster_name: str = DEFAULT_CLUSTER, ephemeral: bool = True) -> bool:
        """Stop this instance's heartbeats (if this client sends them) and remove it from the server
        (``ephemeral=False`` for a persistent instance: Nacos keeps the two kinds apart)."""
        spec = self._spec(service_name, ip, port, group_name=group_name, cluster_name=cluster_name,
                          ephemeral=ephemeral)
        stopped = self._stop_heartbeats(spec)
        self._shell.notify()
        if stopped:  # a beat in flight must not re-register the instance after the DELETE
            await asyncio.wait([s.runner for s in stopped], timeout=_JOIN_SECONDS)
        return await self._call(deregister_call(spec, self._naming_api))

    async def list_instances(self, service_name: str, *, group_name: str = DEFAULT_GROUP,
                             healthy_only: bool = False) -> list[Instance]:
        """The service's enabled instances (only the healthy ones with ``healthy_only``)."""
        return await self._call(list_call(service_name, group_name, self._nacos_auth.namespace, healthy_only,
                                          self._naming_api))

    async def get_token(self) -> str:
        """:meth:`NacosTokenClient.get_token`, awaited on the running loop (a login never blocks it)."""
        return await self._nacos_auth.aget_token()


    async def aclose(self) -> None:
        """Stop every watch, iterator and heartbeat (an instance then expires on the server), close the connections
        and the auth object this client made. A transport you passed stays open."""
        await self._stop_background()
        await super().aclose()
        self._nacos_auth.close()

    async def _stop_background(self) -> None:
        self._stop_heartbeats()
        self._watch_state.close()
        for changes in list(self._iterators):
            changes.put_nowait(None)
        await self._shell.close()

    async def __aexit__(self, exc_type: type[BaseException] | None = None, exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self._stop_background()
        await super().__aexit__(exc_type, exc_value, traceback)
        self._nacos_auth.close()
