"""The TokenStore protocol: where tokens live beyond one auth object.

The core reads a store only when its own copy is missing, rejected or due for refresh, never per request, so a
slow store costs nothing on the hot path. A store that other processes can see (file, Redis) also provides a
login lock, so a whole fleet logs in once per refresh cycle: the leader takes the lock, re-reads the store (another
process may have just logged in), and only then logs in and writes.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..lifecycle import Token
from ..protocol import is_token_value

__all__ = [
    "AsyncFleetBackOffStore",
    "AsyncTokenStore",
    "FleetBackOff",
    "FleetBackOffStore",
    "TokenStore",
    "backoff_from_dict",
    "backoff_to_dict",
    "token_from_dict",
    "token_to_dict",
]


@runtime_checkable
class TokenStore(Protocol):
    """What the client needs from a token store. Keys identify a login identity (servers, user, namespace)."""

    #: True when every call returns at once without I/O (an in-memory store): async callers then skip the
    #: thread hop that file and network stores need (unless they serve the loop natively: :class:`AsyncTokenStore`).
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
        """Hold the login lock for ``key`` while logging in; yields False if it could not be had in time, and
        raises (any exception) if the store cannot be asked — the caller then logs in without it, at once:
        availability first. A lock whose holder died must expire, and it must be releasable from any thread:
        async callers of a store that does not serve their loop natively (see :class:`AsyncTokenStore`) take and
        release it on worker threads, not necessarily the same one."""
        ...


@runtime_checkable
class AsyncTokenStore(Protocol):
    """Optional: a store that async callers can use on their event loop, with no worker thread. The client uses
    these methods instead of running the sync ones on worker threads whenever :meth:`serves_async` says so."""

    def serves_async(self) -> bool:
        """True when the a-methods can be awaited on the running event loop (a store may serve only some loops,
        or none: then async callers use the sync methods on worker threads)."""
        ...

    async def aget(self, key: str) -> Token | None:
        """:meth:`TokenStore.get`, awaited."""
        ...

    async def aput(self, key: str, token: Token) -> None:
        """:meth:`TokenStore.put`, awaited."""
        ...

    async def adelete(self, key: str, value: str | None = None) -> bool:
        """:meth:`TokenStore.delete`, awaited."""
        ...

    def alock(self, key: str, timeout: float) -> AbstractAsyncContextManager[bool]:
        """:meth:`TokenStore.lock`, awaited: yields False if not had within ``timeout``, raises if the store
        cannot be asked. The lock expires if its holder dies (or its event loop goes away before the release)."""
        ...


@dataclass(frozen=True, slots=True)
class FleetBackOff:
    """Logins for one identity are paused, fleet-wide, until ``until`` (wall clock): the ``failures``-th transient
    login failure in a row was recorded by some process. Other processes wait it out instead of adding attempts
    to a server that is already failing; the first successful login clears it."""

    until: float
    failures: int


#: The longest pause a stored back-off may impose (a store is not trusted: a bogus record must not stop logins
#: for long).
MAX_FLEET_BACKOFF = 300.0


@runtime_checkable
class FleetBackOffStore(Protocol):
    """Optional: a shared store that can also hold each identity's :class:`FleetBackOff`. Every method is best
    effort (availability first): one that fails is logged and ignored, and never stops a login."""

    def get_backoff(self, key: str) -> FleetBackOff | None:
        """The recorded back-off for ``key`` (None when there is none, it has passed, or it is malformed)."""
        ...

    def put_backoff(self, key: str, backoff: FleetBackOff) -> None:
        """Record ``backoff`` for ``key``; it expires on its own at ``backoff.until``."""
        ...

    def clear_backoff(self, key: str) -> None:
        """Forget the back-off for ``key`` (a login succeeded)."""
        ...


@runtime_checkable
class AsyncFleetBackOffStore(Protocol):
    """Optional: :class:`FleetBackOffStore`, awaited on the running event loop (when ``serves_async()``)."""

    def serves_async(self) -> bool:
        """As :meth:`AsyncTokenStore.serves_async`."""
        ...

    async def aget_backoff(self, key: str) -> FleetBackOff | None:
        """:meth:`FleetBackOffStore.get_backoff`, awaited."""
        ...

    async def aput_backoff(self, key: str, backoff: FleetBackOff) -> None:
        """:meth:`FleetBackOffStore.put_backoff`, awaited."""
        ...

    async def aclear_backoff(self, key: str) -> None:
        """:meth:`FleetBackOffStore.clear_backoff`, awaited."""
        ...


def backoff_to_dict(backoff: FleetBackOff) -> dict[str, float | int]:
    """What a shared store keeps of a back-off."""
    return {"until": backoff.until, "failures": backoff.failures}


def backoff_from_dict(data: object, now: float) -> FleetBackOff | None:
    """A back-off from stored data: None if malformed, already over, or further away than MAX_FLEET_BACKOFF."""
    if not isinstance(data, dict):
        return None
    until, failures = data.get("until"), data.get("failures")
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until):
        return None
    if isinstance(failures, bool) or not isinstance(failures, int) or not 1 <= failures <= 1000:
        return None
    if not now < until <= now + MAX_FLEET_BACKOFF:
        return None
    return FleetBackOff(float(until), failures)


_FIELDS = ("issued_at", "expires_at", "refresh_at", "mandatory_at", "usable_until")


def token_to_dict(token: Token) -> dict[str, str | float]:
    """What a shared store keeps of a token (never a password)."""
    return {"value": token.value, "source": token.source, **{name: getattr(token, name) for name in _FIELDS}}


def token_from_dict(data: object) -> Token | None:
    """A token from stored data, or None if the data is not a well-formed token (a store is not trusted: its
    value must be one a login answer could hold, its times in order)."""
    if not isinstance(data, dict):
        return None
    value = data.get("value")
    if not is_token_value(value):  # as strict as a login answer: a bad value would break every request
        return None
    times: list[float] = []
    for name in _FIELDS:
        item = data.get(name)
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            return None
        times.append(float(item))
    issued_at, expires_at, refresh_at, mandatory_at, usable_until = times
    if not issued_at <= refresh_at <= mandatory_at <= usable_until <= expires_at:
        return None
    return Token(value, issued_at, expires_at, refresh_at, mandatory_at, usable_until, "store")
