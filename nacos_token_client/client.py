"""``NacosTokenClient`` and ``AsyncNacosTokenClient``: httpx clients with ``NacosTokenAuth``, config and naming.

Paths are relative to the current server's context path (``client.get("/v1/cs/configs", params=…)``); a
connection that cannot be made moves on to the next server. Every helper is a request description (``Call``) or
a flow of I/O commands from :mod:`~nacos_token_client.config` and :mod:`~nacos_token_client.naming`; the two shells
here (:class:`_SyncShell` on threads, :class:`_AsyncShell` on the client's event loop) carry the commands out and
differ only in the lines that do so.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from .auth import NacosTokenAuth
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
from .events import EventHooks
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
from .protocol import ServerAddress

__all__ = ["AsyncNacosTokenClient", "AsyncRegistration", "NacosTokenClient", "Registration"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # the request never left: safe for any method
_MAYBE_SENT = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)  # safe for idempotent methods only
_SHARED_OPTIONS = ("transport", "async_transport", "verify", "timeout", "trust_env")  # logins use them too
_HTTP_ONLY_OPTIONS = ("follow_redirects", "headers", "cookies", "limits", "proxy", "max_redirects", "http1", "http2",
                      "default_encoding")
_JOIN_SECONDS = 5.0  # how long close() waits for a background thread to end
_QUEUE_TICK = 1.0  # the callback thread looks at its client this often when idle


def _advance(flow: Flow[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """One step of a flow: ``(False, command)`` or ``(True, result)``."""
    try:
        return False, (flow.throw(error) if error is not None else flow.send(value))
    except StopIteration as stop:
        return True, stop.value


class _Base:
    """What the sync and async clients share: the auth, the server list, which server is current, and the
    watch/naming/snapshot settings."""

    auth: NacosTokenAuth

    def _setup(self, server_addresses: str | Sequence[str], username: str | None, password: str | None,
               options: dict[str, Any]) -> dict[str, Any]:
        snapshot_dir = options.pop("snapshot_dir", None)
        self._snapshots = SnapshotStore(snapshot_dir) if snapshot_dir is not None else None
        watch = options.pop("watch", None) or WatchSettings()
        if not isinstance(watch, WatchSettings):
            raise ConfigurationError("watch must be a WatchSettings")
        self._watch_settings = watch
        self._heartbeat_backoff: tuple[float, float] = options.pop("heartbeat_backoff", (0.1, 1.0))
        self._naming_api: NamingApi = "v3" if options.get("api") == "v3" else "v1"
        self._events = EventHooks(options.get("on_event"))
        http = {k: options.pop(k) for k in _HTTP_ONLY_OPTIONS if k in options}
        http.update({k: options[k] for k in _SHARED_OPTIONS if k in options})
        self.auth = NacosTokenAuth(server_addresses, username, password, **options)
        self._current = 0
        self._registrations: list[HeartbeatState] = []
        return http

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        """The configured servers, in fail-over order (relative paths go to the current one first)."""
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
                                ephemeral, self.auth.namespace)
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
        return self.auth.invalidate(token)

    def token_info(self) -> TokenInfo | None:
        """A secret-free snapshot of the cached token (when it expires, when it will be refreshed), or None."""
        return self.auth.token_info()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(servers={[str(s) for s in self.servers]!r}, username={self.auth.username!r})"


class _Registration:
    """What both registration handles share: the instance (``service_name``, ``ip``, ``port``, ``group_name``,
    ``cluster_name``, ``ephemeral``) and whether its heartbeat still runs."""

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

    Returned by :meth:`NacosTokenClient.register_instance`; not made directly. Its ``service_name``, ``ip``,
    ``port``, ``group_name``, ``cluster_name`` and ``ephemeral`` say what was registered.
    """

    def __init__(self, spec: InstanceSpec, heartbeat: HeartbeatState | None, client: NacosTokenClient) -> None:
        super().__init__(spec, heartbeat)
        self._client = client

    def deregister(self) -> None:
        """Stop the heartbeats and remove the instance from the server."""
        self._client.deregister_instance(self.service_name, self.ip, self.port, group_name=self.group_name,
                                         cluster_name=self.cluster_name, ephemeral=self.ephemeral)


class AsyncRegistration(_Registration):
    """The asyncio twin of :class:`Registration`: ``await registration.deregister()``.

    Returned by :meth:`AsyncNacosTokenClient.register_instance`; not made directly.
    """

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


class NacosTokenClient(_Base):
    """An ``httpx.Client`` with Nacos token auth, server fail-over, config (read, publish, watch) and naming
    (register with heartbeats, list). A context manager.

    Options besides ``NacosTokenAuth``'s and httpx's: ``snapshot_dir`` (keep every config read or change on disk and
    answer ``get_config`` from it when no server can be reached), ``watch`` (:class:`WatchSettings`),
    ``heartbeat_backoff`` ((first, max) seconds between retries of a failed beat; (0.1, 1.0)).

    ``server_addresses``, ``username`` and ``password`` are :class:`NacosTokenAuth`'s. The options it shares with
    httpx (``transport``, ``verify``, ``timeout``, ``trust_env``) go to both, so logins travel the same way as
    requests; httpx-only ones (``headers``, ``cookies``, ``limits``, ``proxy``, ``follow_redirects``,
    ``max_redirects``, ``http1``, ``http2``, ``default_encoding``) go to the client only. ``auth`` is the
    :class:`NacosTokenAuth` in use and ``http`` the underlying ``httpx.Client`` (with ``auth.redirect_guard``
    installed), for anything the helpers do not cover.
    """

    def __init__(self, server_addresses: str | Sequence[str], username: str | None = None,
                 password: str | None = None, **options: Any) -> None:
        http = self._setup(server_addresses, username, password, options)
        http.pop("async_transport", None)
        self.http = httpx.Client(auth=self.auth, event_hooks={"request": [self.auth.redirect_guard]}, **http)
        self._shell = _SyncShell(self)
        self._watch_state = WatchState(on_change=self._shell.notify)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send ``method`` to ``path`` (relative to the current server's context path, or a full URL) with
        ``httpx.Client.request``'s keyword arguments. A connection that cannot be made (and, for idempotent
        methods, one that broke mid-request) moves on to the next server, which then stays current."""
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
        """:meth:`request` with ``GET``: server fail-over and the token included."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``POST``: server fail-over and the token included."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``PUT``: server fail-over and the token included."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``DELETE``: server fail-over and the token included."""
        return self.request("DELETE", path, **kwargs)

    def _send(self, call: Call[Any]) -> httpx.Response:
        return self.request(call.method, call.path, **self._request_options(call))

    def _call(self, call: Call[T]) -> T:
        return call.read(self._send(call))

    # -- config ------------------------------------------------------------------------------------------------------

    def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """The config's content, or None when it does not exist (from the snapshot when no server answers)."""
        return self._shell.run(get_config_flow((data_id, group, tenant), snapshots=self._snapshots is not None))

    def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                       type: str | None = None) -> bool:
        """Create or overwrite the config (``type``: Nacos's content type, e.g. ``yaml``); True when the server
        accepted it. Raises :class:`~nacos_token_client.errors.RequestFailedError` (or ``PermissionDeniedError``)
        on an error answer rather than returning False."""
        return self._call(publish_config_call(data_id, content, group, tenant, type))

    def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        """Delete the config; True when the server accepted (Nacos answers true for a config that did not exist
        too). Raises :class:`~nacos_token_client.errors.RequestFailedError` on an error answer."""
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
        return self._call(list_call(service_name, group_name, self.auth.namespace, healthy_only, self._naming_api))

    def get_token(self) -> str:
        """A usable token (logging in if needed), for a call this client cannot make, e.g. another SDK's."""
        return self.auth.get_token()

    def close(self) -> None:
        """Stop every watch and heartbeat (an instance then expires on the server), close connections."""
        with self._lock:
            self._stop_heartbeats()
            threads, self._threads = self._threads, []
        self._watch_state.close()
        self._shell.close(threads)
        self.http.close()
        self.auth.close()

    def __enter__(self) -> NacosTokenClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncNacosTokenClient(_Base):
    """The asyncio twin of :class:`NacosTokenClient`. An async context manager. Watches and heartbeats run as
    tasks on the event loop that first started one.

    Takes the same ``server_addresses``, ``username``, ``password`` and options as :class:`NacosTokenClient`;
    ``async_transport`` (or a ``transport`` that is an ``httpx.AsyncBaseTransport``) serves its requests. ``http``
    is the underlying ``httpx.AsyncClient`` and ``auth`` the :class:`NacosTokenAuth`.
    """

    def __init__(self, server_addresses: str | Sequence[str], username: str | None = None,
                 password: str | None = None, **options: Any) -> None:
        http = self._setup(server_addresses, username, password, options)
        sync_transport = http.pop("transport", None)
        transport = http.pop("async_transport", None)
        if transport is None and isinstance(sync_transport, httpx.AsyncBaseTransport):
            transport = sync_transport
        self.http = httpx.AsyncClient(auth=self.auth, transport=transport,
                                      event_hooks={"request": [self.auth.async_redirect_guard]}, **http)
        self._shell = _AsyncShell(self)
        self._watch_state = WatchState(on_change=self._shell.notify)
        self._watch_task: asyncio.Task[None] | None = None
        self._iterators: set[asyncio.Queue[ConfigChange | None]] = set()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send ``method`` to ``path`` (relative to the current server's context path, or a full URL) with
        ``httpx.AsyncClient.request``'s keyword arguments, moving on to the next server as
        :meth:`NacosTokenClient.request` does."""
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
        """:meth:`request` with ``GET``: server fail-over and the token included."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``POST``: server fail-over and the token included."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``PUT``: server fail-over and the token included."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """:meth:`request` with ``DELETE``: server fail-over and the token included."""
        return await self.request("DELETE", path, **kwargs)

    async def _send(self, call: Call[Any]) -> httpx.Response:
        return await self.request(call.method, call.path, **self._request_options(call))

    async def _call(self, call: Call[T]) -> T:
        return call.read(await self._send(call))

    # -- config ------------------------------------------------------------------------------------------------------

    async def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """The config's content, or None when it does not exist (from the snapshot when no server answers)."""
        return await self._shell.run(get_config_flow((data_id, group, tenant),
                                                     snapshots=self._snapshots is not None))

    async def publish_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                             type: str | None = None) -> bool:
        """Create or overwrite the config (``type``: Nacos's content type, e.g. ``yaml``); True when the server
        accepted it. Raises :class:`~nacos_token_client.errors.RequestFailedError` (or ``PermissionDeniedError``)
        on an error answer rather than returning False."""
        return await self._call(publish_config_call(data_id, content, group, tenant, type))

    async def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        """Delete the config; True when the server accepted (Nacos answers true for a config that did not exist
        too). Raises :class:`~nacos_token_client.errors.RequestFailedError` on an error answer."""
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
        return await self._call(list_call(service_name, group_name, self.auth.namespace, healthy_only,
                                          self._naming_api))

    async def get_token(self) -> str:
        """A usable token (logging in if needed, without blocking the loop), for a call this client cannot make."""
        return await self.auth.aget_token()

    async def aclose(self) -> None:
        """Stop every watch, iterator and heartbeat (an instance then expires on the server), close connections."""
        self._stop_heartbeats()
        self._watch_state.close()
        for changes in list(self._iterators):
            changes.put_nowait(None)
        await self._shell.close()
        await self.http.aclose()
        self.auth.close()

    async def __aenter__(self) -> AsyncNacosTokenClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

