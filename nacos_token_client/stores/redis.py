"""A token store for a fleet: Redis (redis-py, the ``redis`` extra) — one server, a Redis Cluster, or a master
managed by Sentinel; sync and ``redis.asyncio`` clients.

* Keys: one identity's keys share a hash tag, so they live in one Cluster slot: the token ``{<prefix><key>}``,
  its login lock ``{<prefix><key>}:login-lock`` and its fleet back-off ``{<prefix><key>}:backoff``. Every command
  and script touches one key, so nothing is ever cross-slot.
* The token is a hash written by one Lua script (delete, set, ``PEXPIRE`` = the token's remaining life), so a
  reader never sees half a token and the entry expires with the token.
* Compare-and-delete is one Lua script, so "drop it only if it is still the rejected token" is atomic.
* The login lock is redis-py's lock: ``SET NX PX`` with a random owner token and a fenced (Lua) release, expiring
  on its own if its holder dies, and releasable from any thread. The async lock is redis-py's asyncio lock.
* A fleet back-off is a JSON string set with ``PXAT`` = its end: it expires on its own.
* Each operation is written once, as a generator of client calls, and run by a sync or an async driver.
* Async callers: a store with an async client (:meth:`RedisTokenStore.__init__` ``asyncio=True``, a
  ``redis.asyncio`` client, or :meth:`RedisTokenStore.from_sentinel` ``asyncio=True``) serves them on their own
  event loop (the :class:`~nacos_token_client.stores.base.AsyncTokenStore` protocol), with no worker thread.
  Without one, they are served by the sync client on worker threads, as any other store.
* Availability first: if Redis cannot be reached, reads find nothing, writes are skipped and the lock is not had;
  the client logs in by itself, and a warning is logged (at most every 30 s).
"""

from __future__ import annotations

import asyncio as _asyncio
import contextlib
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import ConfigurationError, StoreError
from ..lifecycle import Token
from .base import MAX_FLEET_BACKOFF, FleetBackOff, backoff_from_dict, backoff_to_dict, token_from_dict, token_to_dict

__all__ = ["RedisTokenStore"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")

_PUT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_COMPARE_AND_DELETE = """
if redis.call('HGET', KEYS[1], 'value') == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class _Side:
    """One redis-py client (sync, or async on one event loop) with the store's scripts registered on it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.put = client.register_script(_PUT)
        self.compare_and_delete = client.register_script(_COMPARE_AND_DELETE)


#: One client call of an operation: given the client, its result (sync) or an awaitable of it (async).
Step = Callable[[_Side], Any]
Op = Generator[Step, Any, T]


def _token_from_hash(raw: dict[bytes, bytes]) -> Token | None:
    if not raw:
        return None
    data: dict[str, Any] = {}
    for name, value in raw.items():
        field, text = name.decode("utf-8", "replace"), value.decode("utf-8", "replace")
        if field in ("value", "source"):
            data[field] = text
        else:
            try:
                data[field] = float(text)
            except ValueError:
                return None
    return token_from_dict(data)


class RedisTokenStore:
    """Tokens (and fleet back-offs) shared by every process that can reach one Redis, a Redis Cluster or a
    Sentinel-managed master. Never holds a password.

    ``url_or_client``: a URL (``redis://``, ``rediss://``, ``unix://``; ``redis+cluster://host:port`` or
    ``cluster=True`` for a Redis Cluster), or a redis-py client: ``redis.Redis`` (a Sentinel ``master_for``
    client too), ``redis.cluster.RedisCluster``, ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``.

    ``asyncio=True`` (with a URL): async callers get a ``redis.asyncio`` client per event loop, made from the same
    URL. A ``redis.asyncio`` client given directly serves the event loop it is first used on (redis-py binds its
    connections to one loop; other loops use the sync client on worker threads), and needs ``sync_client=`` (the
    same server through a sync client) for sync callers and ``invalidate()``: redis-py has no public way to copy an
    async client's settings (Sentinel pools, credential providers, TLS contexts) into a sync one, and a guessed copy
    could reach another server or drop TLS without a word.

    ``prefix`` (``"nacos-token:"``) namespaces the keys, so several applications can share one Redis; it may not
    contain braces (the store puts each identity's keys in one hash tag). ``lock_ttl`` (60 s) is how long a login
    lock outlives a holder that died, so a crashed process never stops the fleet's logins for longer.
    ``socket_timeout`` (1 s; URL and Sentinel stores: a client you pass keeps its own settings) bounds every Redis call,
    so an unreachable Redis costs a second and a warning, not a hang. ``clock`` (``time.time``): the wall clock
    token and back-off expiry are measured on, for tests. ``cluster`` (False): the URL names a Redis Cluster node
    (as a ``redis+cluster://`` URL does).
    """

    local = False

    def __init__(self, url_or_client: str | Any, *, prefix: str = "nacos-token:", lock_ttl: float = 60.0,
                 socket_timeout: float = 1.0, clock: Callable[[], float] = time.time, cluster: bool = False,
                 asyncio: bool = False, sync_client: Any = None) -> None:
        try:
            import redis  # noqa: PLC0415 - an optional dependency
            import redis.asyncio  # noqa: PLC0415
            import redis.asyncio.cluster  # noqa: PLC0415
            import redis.cluster  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError("RedisTokenStore needs redis-py: pip install 'nacos-token-client[redis]'") from exc
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError("the prefix of a RedisTokenStore may not contain '{' or '}' (the store puts "
                                     "each identity's keys in one hash tag)")
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError, redis.exceptions.RedisClusterException, OSError, _asyncio.TimeoutError)
        self._lock_error: type[BaseException] = redis.exceptions.LockError
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.clock = clock
        self._last_warning = 0.0
        self._warning_lock = threading.Lock()
        self._sides_lock = threading.Lock()
        self._sync: _Side | None = None
        self._make_sync: Callable[[], Any]
        #: makes an async client for the running loop (URL or Sentinel stores built with asyncio=True)
        self._async_factory: Callable[[], Any] | None = None
        self._async_sides: weakref.WeakKeyDictionary[_asyncio.AbstractEventLoop, _Side] = \
            weakref.WeakKeyDictionary()
        self._async_fixed: _Side | None = None  # an async client given by the caller, bound to its first loop
        self._async_fixed_loop: weakref.ref[_asyncio.AbstractEventLoop] | None = None
        async_types = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
        sync_types = (redis.Redis, redis.cluster.RedisCluster)
        if isinstance(url_or_client, str):
            url = url_or_client
            scheme, sep, rest = url.partition("://")
            if sep and scheme.lower() in _CLUSTER_SCHEMES:
                url, cluster = f"{_CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
            options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
                                       "retry": _quick_retry()}
            sync_class = redis.cluster.RedisCluster if cluster else redis.Redis
            async_class = redis.asyncio.cluster.RedisCluster if cluster else redis.asyncio.Redis
            self._make_sync = lambda: sync_class.from_url(url, **options)
            if asyncio:
                self._async_factory = lambda: async_class.from_url(url, **{**options, "retry": _quick_retry(True)})
            self._describe = f"{'cluster ' if cluster else ''}{_host_of(rest)}"
        elif isinstance(url_or_client, async_types):
            if not isinstance(sync_client, sync_types):
                raise ConfigurationError(
                    "a RedisTokenStore built on a redis.asyncio client also needs sync_client= (a redis.Redis or "
                    "RedisCluster for the same server), for sync callers and invalidate(); or build it from a URL: "
                    "RedisTokenStore(url, asyncio=True), or RedisTokenStore.from_sentinel(..., asyncio=True)")
            self._async_fixed = _Side(url_or_client)
            self._make_sync = lambda: sync_client
            self._describe = _describe_client(sync_client)
        elif isinstance(url_or_client, sync_types):
            if asyncio:
                raise ConfigurationError("asyncio=True needs a URL (a store built on a sync client serves async "
                                         "callers on worker threads); or pass a redis.asyncio client")
            client = url_or_client
            self._make_sync = lambda: client
            self._describe = _describe_client(client)
        else:
            raise ConfigurationError(f"RedisTokenStore takes a URL or a redis-py client, not "
                                     f"{type(url_or_client).__name__}")

    @classmethod
    def from_sentinel(cls, sentinels: Sequence[tuple[str, int]], service_name: str, *, asyncio: bool = False,
                      sentinel_kwargs: dict[str, Any] | None = None, prefix: str = "nacos-token:",
                      lock_ttl: float = 60.0, socket_timeout: float = 1.0, clock: Callable[[], float] = time.time,
                      **connection_kwargs: Any) -> RedisTokenStore:
        """A store on the master Sentinel names ``service_name``; it follows fail-overs (redis-py asks the
        Sentinels again when the master stops answering). ``connection_kwargs`` (``password=``, ``db=``, ``ssl=``,
        ...) go to the master's connections, ``sentinel_kwargs`` to the Sentinels'. ``asyncio=True`` also serves
        async callers natively, with a ``redis.asyncio`` Sentinel client per event loop."""
        import redis.asyncio.sentinel  # noqa: PLC0415 - an optional dependency
        import redis.sentinel  # noqa: PLC0415

        sync_sentinel: Any = redis.sentinel.Sentinel  # (untyped in redis-py)
        async_sentinel: Any = redis.asyncio.sentinel.Sentinel
        nodes = [(str(host), int(port)) for host, port in sentinels]
        quick = _quick_retry()
        options = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout, "retry": quick,
                   **connection_kwargs}
        towards_sentinels = dict(sentinel_kwargs) if sentinel_kwargs is not None else {
            "socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout, "retry": quick}
        client = sync_sentinel(nodes, sentinel_kwargs=towards_sentinels, **options).master_for(service_name)
        store = cls(client, prefix=prefix, lock_ttl=lock_ttl, socket_timeout=socket_timeout, clock=clock)
        store._describe = f"sentinel {service_name}"
        if asyncio:
            def async_options(given: dict[str, Any]) -> dict[str, Any]:
                return {**given, "retry": _quick_retry(True)} if given.get("retry") is quick else given

            store._async_factory = lambda: async_sentinel(
                nodes, sentinel_kwargs=async_options(towards_sentinels), **async_options(options)).master_for(
                service_name)
        return store

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._describe}, prefix={self.prefix!r})"

    # -- keys: one hash tag per identity, so one Cluster slot ---------------------------------------------------------

    def token_key(self, key: str) -> str:
        """The Redis key of ``key``'s token (a hash)."""
        return "{" + self.prefix + key + "}"

    def lock_key(self, key: str) -> str:
        """The Redis key of ``key``'s login lock."""
        return self.token_key(key) + ":login-lock"

    def backoff_key(self, key: str) -> str:
        """The Redis key of ``key``'s fleet back-off."""
        return self.token_key(key) + ":backoff"

    # -- clients ----------------------------------------------------------------------------------------------------

    @property
    def redis(self) -> Any:
        """The sync client (made on first use: a Cluster client connects as it is made)."""
        return self._sync_side().client

    def _sync_side(self) -> _Side:
        with self._sides_lock:
            if self._sync is None:
                self._sync = _Side(self._make_sync())
            return self._sync

    def _async_side(self) -> _Side | None:
        """The async client for the running loop, if this store has one for it."""
        try:
            loop = _asyncio.get_running_loop()
        except RuntimeError:
            return None
        with self._sides_lock:
            if self._async_fixed is not None:
                if self._async_fixed_loop is None:
                    self._async_fixed_loop = weakref.ref(loop)
                return self._async_fixed if self._async_fixed_loop() is loop else None
            if self._async_factory is None:
                return None
            side = self._async_sides.get(loop)
            if side is None:
                side = self._async_sides[loop] = _Side(self._async_factory())
            return side

    def serves_async(self) -> bool:
        """True when this store has an async client for the running event loop (see the class docstring)."""
        return self._async_side() is not None

    async def aclose(self) -> None:
        """Close the async client of the running loop (a URL or Sentinel store's; a client given by the caller
        is the caller's to close)."""
        try:
            loop = _asyncio.get_running_loop()
        except RuntimeError:
            return
        with self._sides_lock:
            side = self._async_sides.pop(loop, None)
        if side is not None:
            await side.client.aclose()

    def close(self) -> None:
        """Close the sync client's connections."""
        with self._sides_lock:
            side, self._sync = self._sync, None
        if side is not None:
            side.client.close()

    # -- running an operation ---------------------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> None:
        with self._warning_lock:
            now = time.monotonic()
            if now - self._last_warning < 30.0:
                return
            self._last_warning = now
        log.warning("Redis token store unreachable during %s (%s); logging in without it", what, type(exc).__name__)

    def _run(self, what: str, op: Op[T], default: T) -> T:
        """Carry out ``op`` with the sync client; ``default`` if Redis cannot be reached."""
        try:
            side = self._sync_side()
            step = next(op)
            while True:
                step = op.send(step(side))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except self._errors as exc:
            self._unavailable(what, exc)
            return default

    async def _arun(self, what: str, op: Op[T], default: T) -> T:
        """Carry out ``op`` with the running loop's async client; ``default`` if Redis cannot be reached."""
        side = self._require_async_side()
        try:
            step = next(op)
            while True:
                result: Awaitable[Any] = step(side)
                step = op.send(await result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except self._errors as exc:
            self._unavailable(what, exc)
            return default

    def _require_async_side(self) -> _Side:
        side = self._async_side()
        if side is None:
            raise ConfigurationError(f"{self!r} has no async client for this event loop (see serves_async())")
        return side

    # -- the operations, written once -------------------------------------------------------------------------------

    def _get_op(self, key: str) -> Op[Token | None]:
        raw = yield lambda side: side.client.hgetall(self.token_key(key))
        return _token_from_hash(raw)

    def _put_op(self, key: str, token: Token) -> Op[None]:
        life_ms = int((token.expires_at - self.clock()) * 1000)
        if life_ms <= 0:
            return
        fields: list[Any] = [life_ms]
        for name, value in token_to_dict(token).items():
            fields += [name, value if isinstance(value, str) else repr(float(value))]
        yield lambda side: side.put(keys=[self.token_key(key)], args=fields)

    def _delete_op(self, key: str, value: str | None) -> Op[bool]:
        if value is None:
            dropped = yield lambda side: side.client.delete(self.token_key(key))
        else:
            dropped = yield lambda side: side.compare_and_delete(keys=[self.token_key(key)], args=[value])
        return bool(dropped)

    def _get_backoff_op(self, key: str) -> Op[FleetBackOff | None]:
        raw = yield lambda side: side.client.get(self.backoff_key(key))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return backoff_from_dict(data, self.clock())

    def _put_backoff_op(self, key: str, backoff: FleetBackOff) -> Op[None]:
        now = self.clock()
        if not now < backoff.until <= now + MAX_FLEET_BACKOFF:
            return  # over already, or more than a store may impose (a reader would ignore it)
        text = json.dumps(backoff_to_dict(backoff))
        yield lambda side: side.client.set(self.backoff_key(key), text, pxat=math.ceil(backoff.until * 1000))

    def _clear_backoff_op(self, key: str) -> Op[None]:
        yield lambda side: side.client.delete(self.backoff_key(key))

    # -- the TokenStore and FleetBackOffStore protocols -------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        """The stored token, or None (missing, expired, malformed, or Redis unreachable)."""
        return self._run("get", self._get_op(key), None)

    def put(self, key: str, token: Token) -> None:
        """Store ``token`` as one hash that expires with it (skipped if it has already expired, or Redis is
        unreachable)."""
        self._run("put", self._put_op(key, token), None)

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token — atomically only if it is still ``value`` when given, so an ``invalidate()`` never drops
        the token another process just logged in for. True if dropped."""
        return self._run("delete", self._delete_op(key, value), False)

    def get_backoff(self, key: str) -> FleetBackOff | None:
        """The fleet's recorded login back-off for ``key``, or None (none, over, malformed, or Redis
        unreachable)."""
        return self._run("get_backoff", self._get_backoff_op(key), None)

    def put_backoff(self, key: str, backoff: FleetBackOff) -> None:
        """Record a failed login's back-off; Redis expires it at ``backoff.until`` (one already over, or longer than
        a reader would accept, is not written)."""
        self._run("put_backoff", self._put_backoff_op(key, backoff), None)

    def clear_backoff(self, key: str) -> None:
        """Forget the back-off for ``key``: a login succeeded, so the fleet may log in again at once."""
        self._run("clear_backoff", self._clear_backoff_op(key), None)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """The fleet's login lock; raises :class:`StoreError` if Redis cannot be asked (the caller then logs in
        without it), yields False if another process held it for ``timeout`` seconds."""
        try:
            # thread_local=False: async callers without an async client take and release it on different threads
            lock = self.redis.lock(self.lock_key(key), timeout=self.lock_ttl, sleep=0.02,
                                   blocking_timeout=max(timeout, 0.0), thread_local=False)
            acquired = bool(lock.acquire())
        except self._errors as exc:
            raise self._lock_unavailable(exc) from None
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    lock.release()
                except self._errors as exc:
                    self._release_failed(exc)

    # -- the AsyncTokenStore and AsyncFleetBackOffStore protocols ---------------------------------------------------

    async def aget(self, key: str) -> Token | None:
        """:meth:`get` on the running loop's async client."""
        return await self._arun("get", self._get_op(key), None)

    async def aput(self, key: str, token: Token) -> None:
        """:meth:`put` on the running loop's async client."""
        await self._arun("put", self._put_op(key, token), None)

    async def adelete(self, key: str, value: str | None = None) -> bool:
        """:meth:`delete` on the running loop's async client."""
        return await self._arun("delete", self._delete_op(key, value), False)

    async def aget_backoff(self, key: str) -> FleetBackOff | None:
        """:meth:`get_backoff` on the running loop's async client."""
        return await self._arun("get_backoff", self._get_backoff_op(key), None)

    async def aput_backoff(self, key: str, backoff: FleetBackOff) -> None:
        """:meth:`put_backoff` on the running loop's async client."""
        await self._arun("put_backoff", self._put_backoff_op(key, backoff), None)

    async def aclear_backoff(self, key: str) -> None:
        """:meth:`clear_backoff` on the running loop's async client."""
        await self._arun("clear_backoff", self._clear_backoff_op(key), None)

    @contextlib.asynccontextmanager
    async def alock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        """:meth:`lock` on the running loop's async client (redis-py's asyncio lock: it sleeps, never blocks)."""
        side = self._require_async_side()
        try:
            lock = side.client.lock(self.lock_key(key), timeout=self.lock_ttl, sleep=0.02,
                                    blocking_timeout=max(timeout, 0.0), thread_local=False)
            acquired = bool(await lock.acquire())
        except self._errors as exc:
            raise self._lock_unavailable(exc) from None
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    await lock.release()
                except self._errors as exc:
                    self._release_failed(exc)

    def _lock_unavailable(self, exc: BaseException) -> StoreError:
        self._unavailable("lock", exc)
        return StoreError(f"Redis unreachable while taking the login lock ({type(exc).__name__})")

    def _release_failed(self, exc: BaseException) -> None:
        if isinstance(exc, self._lock_error):
            log.warning("the Redis login lock expired before its release; the login took over %.0f s", self.lock_ttl)
        else:
            self._unavailable("unlock", exc)


def _quick_retry(asynchronous: bool = False) -> Any:
    """One quick retry (redis-py's default backs off for seconds): a store is never worth waiting for, the client
    logs in without it. An async client needs redis-py's async Retry (it sleeps without blocking the loop)."""
    import redis.asyncio.retry  # noqa: PLC0415 - an optional dependency
    import redis.retry  # noqa: PLC0415
    from redis.backoff import ExponentialWithJitterBackoff  # noqa: PLC0415

    retry_class: Any = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    return retry_class(ExponentialWithJitterBackoff(base=0.02, cap=0.1), 1)


def _host_of(rest: str) -> str:
    """host:port of a URL's remainder, without credentials, path or query."""
    return rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0] or "?"


def _describe_client(client: Any) -> str:
    pool = getattr(client, "connection_pool", None)
    name = getattr(pool, "service_name", None)
    if name is not None:
        return f"sentinel {name}"
    if pool is None:  # a Cluster client
        nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", {}) or {}
        return f"cluster {next(iter(nodes), '?')}"
    kwargs = pool.connection_kwargs
    return f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")
