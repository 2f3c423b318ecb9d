"""Observability: frozen event records, counters, and stdlib logging — never a token or a password.

Pass ``on_event=callable`` to ``NacosTokenAuth`` to receive every :class:`TokenEvent`; read ``auth.stats`` for
counters. A hook that raises is logged and ignored: observability must never break a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .lifecycle import RefreshReason

__all__ = ["AuthStats", "EventHooks", "TokenEvent"]

log = logging.getLogger("nacos_token_client")


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Something that happened to a token.

    ``kind``: ``login`` (outcome ``ok``, ``same_token``, ``from_store``, or ``superseded``: a login begun before
    a rejection was seen, whose token is not used), ``adopt`` (a token another process
    put in a shared store), ``failure`` (outcome: the error type; ``error``: its message), ``invalidate``
    (``dropped``/``kept``), ``rejection`` (outcome: the rejection kind; ``error``: the server's message),
    ``replay`` (``sent``, ``rejected_again``, ``not_replayable``, ``gave_up`` after two replays, or
    ``backing_off``: fresh tokens keep being rejected, so the rejected response goes back as it is; ``duration``
    is then the back-off left), ``snapshot`` (``served``: a wrapper client with
    ``snapshot_dir`` answered ``get_config`` from disk because no server could be reached; ``error``: why).
    ``duration`` is in seconds where it applies. ``reason`` (a :class:`~nacos_token_client.RefreshReason`) says
    why a login started; ``fingerprint`` identifies the token involved (never the token itself); ``server`` is the
    server a login went to, ``attempts`` how many login attempts (or replays) it took.
    """

    kind: str
    reason: RefreshReason | None = None
    outcome: str = ""
    fingerprint: str | None = None
    server: str | None = None
    attempts: int | None = None
    duration: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AuthStats:
    """Counters of one auth object (a snapshot: read ``auth.stats`` again for fresh numbers).

    Per auth object, not per identity: auth objects with the same identity share one token, and a login counts
    in the stats of the object whose request led it. ``logins``: logins the server answered with a token
    (superseded ones included; a token adopted from a shared store is not one); ``failures``: logins that failed
    after their retries; ``cache_hits``: requests served the
    cached token on the lock-free path; ``waits``: requests that waited for a login in flight (or a pause between
    logins) and ``wait_seconds`` their total wait; ``rejections``: 401/403 answers classified (token problems and
    permission denials alike); ``replays``: rejected requests sent again with a fresh token; ``invalidations``:
    ``invalidate()`` calls that dropped a token.
    """

    logins: int = 0
    failures: int = 0
    cache_hits: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    rejections: int = 0
    replays: int = 0
    invalidations: int = 0


class EventHooks:
    """Counts and forwards events for one auth object (internal plumbing, exported for custom drivers).

    ``on_event`` receives every :class:`TokenEvent`; a hook that raises is logged and ignored, so observability
    never breaks a request.
    """

    _names = ("logins", "failures", "cache_hits", "waits", "rejections", "replays", "invalidations")

    def __init__(self, on_event: Callable[[TokenEvent], None] | None = None) -> None:
        self.on_event = on_event
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._names, 0)
        self._wait_seconds = 0.0

    def count(self, name: str) -> None:
        """Add one to the :class:`AuthStats` counter ``name`` (thread-safe)."""
        # dict item increments are not atomic; the lock is uncontended and costs ~50 ns.
        with self._lock:
            self._counts[name] += 1

    def observe_wait(self, seconds: float) -> None:
        """Add a finished wait to ``wait_seconds``."""
        with self._lock:
            self._wait_seconds += seconds

    def emit(self, event: TokenEvent) -> None:
        """Log ``event`` (logins at INFO, failures at WARNING, the rest at DEBUG) and pass it to ``on_event``."""
        if event.kind == "invalidate" and event.outcome == "dropped":
            self.count("invalidations")
        if event.kind in ("login", "failure"):
            level = logging.INFO if event.kind == "login" else logging.WARNING
            log.log(level, "token %s: reason=%s outcome=%s fingerprint=%s server=%s attempts=%s",
                    event.kind, event.reason.value if event.reason else None, event.outcome, event.fingerprint,
                    event.server, event.attempts)
        else:
            log.debug("token %s: outcome=%s fingerprint=%s", event.kind, event.outcome, event.fingerprint)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("on_event hook raised; ignored")

    def snapshot(self) -> AuthStats:
        """The counters now, as a frozen :class:`AuthStats`."""
        with self._lock:
            return AuthStats(wait_seconds=self._wait_seconds, **self._counts)
