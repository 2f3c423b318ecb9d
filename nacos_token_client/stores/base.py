"""The TokenStore protocol: where tokens live beyond one auth object.

The core reads a store only when its own copy is missing, rejected or due for refresh, never per request, so a
slow store costs nothing on the hot path. A store that other processes can see (file, Redis) also provides a
login lock, so a whole fleet logs in once per refresh cycle: the leader takes the lock, re-reads the store (another
process may have just logged in), and only then logs in and writes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from ..lifecycle import Token

__all__ = ["TokenStore"]


@runtime_checkable
class TokenStore(Protocol):
    """What the client needs from a token store. Keys identify a login identity (servers, user, namespace)."""

    #: True when every call returns at once without I/O (an in-memory store): async callers then skip the
    #: thread hop that file and network stores need.
    local: bool

    def get(self, key: str) -> Token | None:
        """The stored token, or None (missing, expired, unreadable)."""
        ...

    def put(self, key: str, token: Token) -> None:
        """Store ``token``; a store that can expire entries expires it with the token."""
        ...

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token — only if it is still ``value`` when given (compare-and-delete). True if dropped."""
        ...

    def lock(self, key: str, timeout: float) -> AbstractContextManager[bool]:
        """Hold the login lock for ``key`` while logging in; yields False if it could not be had in time (the
        caller then logs in anyway: availability first). A lock whose holder died must expire."""
        ...
