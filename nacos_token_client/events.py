"""Observability: frozen event records, counters, and stdlib logging — never a token or a password.

Pass ``on_event=callable`` to ``NacosTokenAuth`` to receive every :class:`TokenEvent`; read ``auth.stats`` for
counters. A hook that raises is logged and ignored: observability must never break a request.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import ErrorName
from .lifecycle import RefreshReason
from .redaction import redact

__all__ = ["AuthStats", "EventHooks", "EventKind", "EventOutcome", "TokenEvent"]

log = logging.getLogger("nacos_token_client")

# Literal aliases rather than Enums: the values stay plain ``str``, so ``event.kind == "login"``, hashing, JSON,
# f-strings and ``match`` on strings behave exactly as before, while mypy checks what is built and (with
# ``strict_equality``) flags a comparison with a value that can never occur. ``typing.get_args`` lists them.

EventKind = Literal["login", "adopt", "failure", "invalidate", "rejection", "replay", "snapshot"]
"""What happened: see :class:`TokenEvent`."""
LoginOutcome = Literal["ok", "same_token", "from_store", "superseded"]
InvalidateOutcome = Literal["dropped", "kept"]
ReplayOutcome = Literal["sent", "rejected_again", "not_replayable", "gave_up", "backing_off"]
#: The values of :class:`~nacos_token_client.protocol.RejectionKind`.
RejectionOutcome = Literal["none", "token", "permission", "missing", "replaced", "kicked_out"]
EventOutcome = Literal[LoginOutcome, InvalidateOutcome, ReplayOutcome, RejectionOutcome, ErrorName, "served",
                       "fleet_backoff", ""]
"""How it ended, by kind: a login's, an invalidation's, a replay's, a rejection's kind, ``served`` (snapshot), the
error's class in the error tree or ``fleet_backoff`` (failure: another process's failed login is waited out), or
``""``."""


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Something that happened to a token.

    ``kind``: ``login`` (outcome ``ok``, ``same_token``, ``from_store``, or ``superseded``: a login begun before
    a rejection was seen, whose token is not used), ``adopt`` (a token another process
    put in a shared store), ``failure`` (outcome: the error's class in the error tree; ``error``: its message),
    ``invalidate`` (``dropped``/``kept``), ``rejection`` (outcome: the rejection kind; ``error``: the server's
    message), ``replay`` (``sent``, ``rejected_again``, ``not_replayable``, ``gave_up`` after two replays, or
    ``backing_off``: fresh tokens keep being rejected, so the rejected response goes back as it is; ``duration``
    is then the back-off left), ``snapshot`` (``served``: a wrapper client with
    ``snapshot_dir`` answered ``get_config`` from disk because no server could be reached; ``error``: why).
    ``duration`` is in seconds where it applies. ``reason`` (a :class:`~nacos_token_client.RefreshReason`) says
    why a login started; ``fingerprint`` identifies the token involved (never the token itself); ``server`` is the
    server a login went to, ``attempts`` how many login attempts (or replays) it took. ``error`` holds server text
    with the password, the token and token-like strings redacted.
    """

    kind: EventKind
    reason: RefreshReason | None = None
    outcome: EventOutcome = ""
    fingerprint: str | None = None
    server: str | None = None
    attempts: int | None = None
    duration: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AuthStats:
    """Counters of **one auth object** (a snapshot), not of its identity: auth objects that share an identity
    share its token and its logins, and each counts what its own requests did — a login is counted by the
    object whose request (or background refresh) led it; the others count a wait or a cache hit.

    ``logins``/``failures``: logins this object led that succeeded / failed as a whole (retries included);
    ``cache_hits``: requests that found a usable token at once; ``waits``: requests that blocked before they had
    a token — waiting for a login in flight or a back-off, or leading a login themselves because the cached token
    had expired (or neared expiry), was dropped or refused; a request leading the very first login is counted
    only in ``logins`` — and ``wait_seconds`` the time they spent blocked; ``rejections``, ``replays``,
    ``invalidations`` (tokens dropped).
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
        self._hits = itertools.count()  # cache_hits, counted without the lock (see hit())
        self._hit_reads = 0

    def count(self, name: str) -> None:
        """Add one to the :class:`AuthStats` counter ``name`` (thread-safe)."""
        # dict item increments are not atomic; the lock is uncontended and costs ~50 ns.
        with self._lock:
            self._counts[name] += 1

    def hit(self) -> None:
        """Add one to ``cache_hits``: the hot path's counter, so lock-free (``next()`` on an ``itertools.count`` is
        one atomic step; a read takes one too, which :meth:`snapshot` subtracts)."""
        next(self._hits)

    def observe_wait(self, seconds: float) -> None:
        """Add a finished wait to ``wait_seconds``."""
        with self._lock:
            self._wait_seconds += seconds

    def emit(self, event: TokenEvent) -> None:
        """Log ``event`` (logins at INFO, failures at WARNING, the rest at DEBUG) and pass it to ``on_event``."""
        if event.kind == "invalidate" and event.outcome == "dropped":
            self.count("invalidations")
        if event.kind in ("login", "failure"):
            # a failure is a login that failed as a whole (every retry spent): the one WARNING of a failed login
            level = logging.INFO if event.kind == "login" else logging.WARNING
            detail = f" error={redact(event.error)}" if event.error else ""
            log.log(level, "token %s: reason=%s outcome=%s fingerprint=%s server=%s attempts=%s%s",
                    event.kind, event.reason.value if event.reason else None, event.outcome, event.fingerprint,
                    event.server, event.attempts, detail)
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
            hits = next(self._hits) - self._hit_reads
            self._hit_reads += 1
            return AuthStats(wait_seconds=self._wait_seconds, **{**self._counts, "cache_hits": hits})
