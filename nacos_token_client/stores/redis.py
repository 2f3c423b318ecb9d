"""A token store for a fleet: Redis (redis-py, the ``redis`` extra).

* The token is a hash that expires with the token (``PEXPIRE`` = its remaining life).
* Compare-and-delete is one Lua script, so "drop it only if it is still the rejected token" is atomic.
* The login lock is redis-py's lock: ``SET NX PX`` with a random owner token and a fenced (Lua) release, expiring
  on its own if its holder dies, and releasable from any thread (async callers run store calls on worker threads).
* Availability first: if Redis cannot be reached, reads find nothing, writes are skipped and the lock is not had;
  the client logs in by itself, and a warning is logged (at most every 30 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, StoreError
from ..lifecycle import Token
from .base import token_from_dict, token_to_dict

if TYPE_CHECKING:
    import redis

__all__ = ["RedisTokenStore"]

log = logging.getLogger("nacos_token_client")

_COMPARE_AND_DELETE = """
if redis.call('HGET', KEYS[1], 'value') == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisTokenStore:
    """Tokens shared by every process that can reach one Redis. Never holds a password.

    ``url_or_client``: a ``redis://`` URL, or a sync ``redis.Redis`` you configured yourself (TLS, Sentinel …;
    async callers are served on worker threads, so no ``redis.asyncio`` client). ``prefix`` (``nacos-token:``)
    namespaces the keys; ``lock_ttl`` (60 s) is how long a login lock outlives a holder that died;
    ``socket_timeout`` (1 s, URL only) bounds every Redis call, so an unreachable Redis costs a second, not a hang;
    ``clock``: wall-clock seconds, for tests. Needs the ``redis`` extra.
    """

    local = False

    def __init__(self, url_or_client: str | redis.Redis, *, prefix: str = "nacos-token:", lock_ttl: float = 60.0,
                 socket_timeout: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        try:
            import redis  # noqa: PLC0415 - an optional dependency
            import redis.asyncio  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError("RedisTokenStore needs redis-py: pip install 'nacos-token-client[redis]'") from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._lock_error: type[BaseException] = redis.exceptions.LockError
        if isinstance(url_or_client, redis.asyncio.Redis):
            raise ConfigurationError("RedisTokenStore takes a URL or a sync redis.Redis client; async callers are "
                                     "served on a worker thread, so no redis.asyncio client is needed")
        if isinstance(url_or_client, str):
            self.redis: redis.Redis = redis.Redis.from_url(url_or_client, socket_timeout=socket_timeout,
                                                           socket_connect_timeout=socket_timeout)
        else:
            self.redis = url_or_client
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.clock = clock
        self._compare_and_delete = self.redis.register_script(_COMPARE_AND_DELETE)
        self._last_warning = 0.0
        self._warning_lock = threading.Lock()

    def __repr__(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        return f"RedisTokenStore({kwargs.get('host', '?')}:{kwargs.get('port', '?')}, prefix={self.prefix!r})"

    def _unavailable(self, what: str, exc: BaseException) -> None:
        with self._warning_lock:
            now = time.monotonic()
            if now - self._last_warning < 30.0:
                return
            self._last_warning = now
        log.warning("Redis token store unreachable during %s (%s); logging in without it", what, type(exc).__name__)

    # -- the TokenStore protocol ------------------------------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        """The stored token, or None (missing, expired, malformed, or Redis unreachable: logged, not raised)."""
        try:
            raw: dict[bytes, bytes] = self.redis.hgetall(self.prefix + key)  # type: ignore[assignment]
        except self._errors as exc:
            self._unavailable("get", exc)
            return None
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

    def put(self, key: str, token: Token) -> None:
        """Store ``token`` (atomically, expiring with it); skipped with a warning when Redis is unreachable."""
        life_ms = int((token.expires_at - self.clock()) * 1000)
        if life_ms <= 0:
            return
        mapping: dict[Any, Any] = {name: str(value) if not isinstance(value, str) else value
                   for name, value in token_to_dict(token).items()}
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.prefix + key)
                pipe.hset(self.prefix + key, mapping=mapping)
                pipe.pexpire(self.prefix + key, life_ms)
                pipe.execute()
        except self._errors as exc:
            self._unavailable("put", exc)

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token (only if it is still ``value``, atomically in one Lua script); True if dropped."""
        try:
            if value is None:
                return bool(self.redis.delete(self.prefix + key))
            return bool(self._compare_and_delete(keys=[self.prefix + key], args=[value]))
        except self._errors as exc:
            self._unavailable("delete", exc)
            return False

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """The fleet's login lock; raises :class:`StoreError` if Redis cannot be asked (the caller then logs in
        without it), yields False if another process held it for ``timeout`` seconds."""
        # thread_local=False: async callers take and release the lock on different worker threads.
        lock = self.redis.lock(self.prefix + key + ":login-lock", timeout=self.lock_ttl, sleep=0.02,
                               blocking_timeout=max(timeout, 0.0), thread_local=False)
        try:
            acquired = bool(lock.acquire())
        except self._errors as exc:
            self._unavailable("lock", exc)
            raise StoreError(f"Redis unreachable while taking the login lock ({type(exc).__name__})") from None
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    lock.release()
                except self._lock_error:
                    log.warning("the Redis login lock expired before its release; the login took over %.0f s",
                                self.lock_ttl)
                except self._errors as exc:
                    self._unavailable("unlock", exc)
