"""The default store: tokens in this process's memory, bounded, expiring with the tokens (cachetools)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cachetools import TLRUCache

from ..lifecycle import Token

__all__ = ["MemoryTokenStore", "default_store"]


def _until_expiry(_key: str, token: Token, _now: float) -> float:
    return token.expires_at


class MemoryTokenStore:
    """A bounded, thread-safe, in-process token store; entries vanish when their token expires.

    Its login lock is a no-op: within a process the client's single flight already makes one login per identity.
    ``maxsize`` (16384) bounds the number of identities kept (least recently used go first); ``timer``: the
    wall-clock seconds that token expiry is measured on, for tests.
    """

    local = True

    def __init__(self, maxsize: int = 16_384, *, timer: Callable[[], float] = time.time) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._cache: TLRUCache[str, Token] = TLRUCache(maxsize=maxsize, ttu=_until_expiry, timer=timer)
        self._lock = threading.Lock()

    def get(self, key: str) -> Token | None:
        """The cached token, or None (never stored, evicted, or expired)."""
        with self._lock:
            return self._cache.get(key)

    def put(self, key: str, token: Token) -> None:
        """Keep ``token`` until it expires (or is evicted by newer identities)."""
        with self._lock:
            self._cache[key] = token

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token — only if it is still ``value`` when given; True if dropped."""
        with self._lock:
            current = self._cache.get(key)
            if current is None or (value is not None and current.value != value):
                return False
            del self._cache[key]
            return True

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """Always had at once: other processes cannot see this store, so there is no one to exclude."""
        yield True

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def __repr__(self) -> str:
        return f"MemoryTokenStore(maxsize={self._cache.maxsize}, entries={len(self)})"


_default: MemoryTokenStore | None = None
_default_lock = threading.Lock()


def default_store() -> MemoryTokenStore:
    """The process-wide store every auth object uses unless given another."""
    global _default  # noqa: PLW0603 - one store per process is the point
    with _default_lock:
        if _default is None:
            _default = MemoryTokenStore()
        return _default
