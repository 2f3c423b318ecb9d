"""The token state machine: every rule about when a token is used, refreshed, waited for or dropped.

Sans-IO: nothing here opens a socket, starts a thread or sleeps. The caller passes the wall-clock time and tells
the machine what happened (a login finished, a token was rejected, the user invalidated); the machine answers
with a :class:`Decision`. The sync and async drivers in ``refresher.py`` only carry decisions out, which is why
they cannot drift apart.

Zones of a token whose life is ``L = expires_at - issued_at`` (``issued_at`` = just before the login was sent)::

    issued_at        refresh_at                 mandatory_at          usable_until  expires_at
       |---- fresh ------|------ advisory ---------|---- mandatory ------|-- expired --|
       use it, no lock    use it + one background   wait for the one      never sent
                          refresh (backs off on     in-flight login
                          failure)

* ``refresh_at = issued_at + (ratio + U(0, jitter)) * L`` with ratio 0.9 by default — never earlier, because a
  Nacos server with its token cache on hands back the same token until 90 % of its life has passed, and the
  jitter spreads a fleet whose tokens all share one expiry.
* ``mandatory_at = expires_at - min(60 s, 5 % of L)``; ``usable_until = expires_at - min(2 s, 2 % of L)``.
* ``expires_at = min(issued_at + tokenTtl, exp)`` when the token is a JWT with an ``exp`` claim.
* A login that returns the token already held does not extend its life (the server's cache did that).
* With a store shared between processes, at most once per ``store_sync_interval`` a fresh-zone request also
  starts a background look at the store (SYNC_IN_BACKGROUND), and a token adopted from the store gets this
  process's own jittered refresh point.

Methods that change state must be called with the driver's lock held; :meth:`TokenLifecycle.fast_token` is the
lock-free read used by every request in the fresh zone.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import AuthenticationError, ConfigurationError, NacosTokenError

__all__ = [
    "Action",
    "Decision",
    "RefreshPolicy",
    "RefreshReason",
    "Token",
    "TokenInfo",
    "TokenLifecycle",
    "Zone",
    "fingerprint",
]


def fingerprint(secret: str) -> str:
    """First 8 hex digits of the SHA-256 of ``secret``: enough to tell tokens apart in logs, useless to replay."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class Zone(enum.Enum):
    """Where a token is in its life, relative to a given time."""

    ABSENT = "absent"
    FRESH = "fresh"
    ADVISORY = "advisory"
    MANDATORY = "mandatory"
    EXPIRED = "expired"


class RefreshReason(enum.Enum):
    """Why a login was started."""

    ABSENT = "absent"  # no token yet
    ADVISORY = "advisory"  # past the refresh point: background refresh
    MANDATORY = "mandatory"  # close to expiry: requests wait
    EXPIRED = "expired"  # the cached token is too old to send
    REJECTED = "rejected"  # the server refused the token
    FORCED = "forced"  # invalidate() was called


class Action(enum.Enum):
    """What the driver must do for one request."""

    USE = "use"  # send ``decision.token``
    REFRESH_IN_BACKGROUND = "refresh_in_background"  # send ``decision.token`` and start one background login
    LOGIN = "login"  # log in now (this caller leads); on failure fall back to ``decision.token`` if given
    WAIT = "wait"  # another login is in flight: wait for it until ``decision.deadline``
    FAIL = "fail"  # raise ``decision.error``
    SYNC_IN_BACKGROUND = "sync_in_background"  # send ``decision.token``; read the shared store in the background


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and its schedule. Its ``repr`` shows a fingerprint, never the token."""

    value: str = field(repr=False)
    issued_at: float
    expires_at: float
    refresh_at: float
    mandatory_at: float
    usable_until: float
    source: str = "login"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def zone(self, now: float) -> Zone:
        if now < self.refresh_at:
            return Zone.FRESH
        if now < self.mandatory_at:
            return Zone.ADVISORY
        if now < self.usable_until:
            return Zone.MANDATORY
        return Zone.EXPIRED

    def is_usable(self, now: float) -> bool:
        return now < self.usable_until

    def info(self) -> TokenInfo:
        return TokenInfo(
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            refresh_at=self.refresh_at,
            mandatory_at=self.mandatory_at,
            source=self.source,
            fingerprint=self.fingerprint,
        )

    def __str__(self) -> str:
        return f"<token {self.fingerprint}>"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A frozen, secret-free snapshot of the cached token, for ``token_info()``."""

    issued_at: float
    expires_at: float
    refresh_at: float
    mandatory_at: float
    source: str
    fingerprint: str

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def remaining(self, now: float) -> float:
        return self.expires_at - now


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """The numbers behind the zones. Bounded defaults; every one scales with the token's life."""

    refresh_ratio: float = 0.9
    jitter: float = 0.03
    mandatory_max: float = 60.0
    mandatory_fraction: float = 0.05
    expiry_margin_max: float = 2.0
    expiry_margin_fraction: float = 0.02
    #: First delay before retrying a failed background refresh; doubles up to ``retry_backoff_max``.
    retry_backoff_initial: float = 1.0
    retry_backoff_max: float = 60.0
    #: After refused credentials, further requests fail at once for this long instead of re-checking them.
    negative_cache_seconds: float = 5.0
    #: How long a request with no usable token waits for (or spends on) a login.
    login_timeout: float = 30.0
    #: With a store other processes share: how often a process looks there for a token another process put
    #: (after an ``invalidate()`` elsewhere, say). The look happens in the background, never on the request path.
    store_sync_interval: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.refresh_ratio < 1.0:
            raise ConfigurationError(f"refresh_ratio must be between 0 and 1, got {self.refresh_ratio!r}")
        if not 0.0 <= self.jitter < 1.0 - self.refresh_ratio:
            raise ConfigurationError(f"jitter must be in [0, {1.0 - self.refresh_ratio:.3f}), got {self.jitter!r}")
        for name in ("mandatory_fraction", "expiry_margin_fraction"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ConfigurationError(f"{name} must be in [0, 0.5)")
        for name in ("mandatory_max", "expiry_margin_max", "retry_backoff_initial", "retry_backoff_max",
                     "negative_cache_seconds", "login_timeout", "store_sync_interval"):
            value: float = getattr(self, name)
            if not value >= 0.0:
                raise ConfigurationError(f"{name} must be a non-negative number")

    def schedule(
        self,
        value: str,
        *,
        issued_at: float,
        token_ttl: float,
        jwt_exp: float | None,
        source: str = "login",
        rng: Callable[[], float] = random.random,
    ) -> Token:
        """Build a :class:`Token` from a login answer: the expiry rule and every zone boundary."""
        expires_at = issued_at + token_ttl
        if jwt_exp is not None and jwt_exp > issued_at and jwt_exp >= issued_at + token_ttl / 2 - 1:
            # ``exp`` is whole server seconds, so it may cut up to a second off. An ``exp`` far earlier than
            # tokenTtl says is clock skew between us and the server, not a shorter life: trust tokenTtl then.
            expires_at = min(expires_at, jwt_exp)
        life = max(expires_at - issued_at, 0.0)
        usable_until = expires_at - min(self.expiry_margin_max, self.expiry_margin_fraction * life)
        mandatory_at = min(expires_at - min(self.mandatory_max, self.mandatory_fraction * life), usable_until)
        refresh_at = min(issued_at + (self.refresh_ratio + self.jitter * rng()) * life, mandatory_at)
        return Token(
            value=value,
            issued_at=issued_at,
            expires_at=expires_at,
            refresh_at=refresh_at,
            mandatory_at=mandatory_at,
            usable_until=usable_until,
            source=source,
        )

    def rejitter(self, token: Token, *, source: str, rng: Callable[[], float] = random.random) -> Token:
        """The same token with this process's own refresh point: processes sharing one token (and so one expiry)
        spread their refreshes over the jitter window instead of all starting at once."""
        refresh_at = min(token.issued_at + (self.refresh_ratio + self.jitter * rng()) * token.lifetime,
                         token.mandatory_at)
        return Token(token.value, token.issued_at, token.expires_at, max(refresh_at, token.issued_at),
                     token.mandatory_at, token.usable_until, source)

    def retry_delay(self, failures: int, token: Token) -> float:
        """Back-off before the next refresh attempt while a still-valid token is served."""
        base = min(self.retry_backoff_initial, max(token.lifetime * 0.01, 0.05))
        return min(self.retry_backoff_max, base * 2.0 ** max(failures - 1, 0))


@dataclass(frozen=True, slots=True)
class Decision:
    """The core's answer for one request. ``token`` is the token to send (USE, REFRESH_IN_BACKGROUND) or the
    still-valid fallback (LOGIN, WAIT); ``deadline`` bounds a login or a wait (wall-clock time)."""

    action: Action
    token: Token | None = None
    reason: RefreshReason | None = None
    deadline: float | None = None
    error: NacosTokenError | None = None


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """What a finished login changed, for events and logs."""

    token: Token
    same_token: bool  # the server handed back the token already held (or just dropped)


class TokenLifecycle:
    """The state of one identity's token, and the rules that move it."""

    def __init__(self, policy: RefreshPolicy | None = None, *, rng: Callable[[], float] = random.random,
                 shared_store: bool = False) -> None:
        self.policy = policy or RefreshPolicy()
        self._rng = rng
        self.shared_store = shared_store
        #: No look at a shared store before this time (never, without one).
        self._next_sync = 0.0 if shared_store else math.inf
        self._syncing = False
        self.token: Token | None = None
        self._in_flight: RefreshReason | None = None
        self._next_reason: RefreshReason | None = None
        self._dropped_value: str | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._auth_error: AuthenticationError | None = None
        self._auth_error_until = 0.0

    # -- reads -------------------------------------------------------------------------------------------------

    def fast_token(self, now: float) -> Token | None:
        """The cached token if it is fresh at ``now``; safe without the lock (the token is immutable)."""
        token = self.token
        if token is not None and now < token.refresh_at and now < self._next_sync:
            return token
        return None

    def zone(self, now: float) -> Zone:
        return Zone.ABSENT if self.token is None else self.token.zone(now)

    # -- decisions ---------------------------------------------------------------------------------------------

    def decide(self, now: float) -> Decision:
        """What a request at ``now`` must do. LOGIN and REFRESH_IN_BACKGROUND make the caller the leader."""
        token = self.token
        zone = self.zone(now)
        if zone is Zone.FRESH:
            if now >= self._next_sync and not self._syncing and self._in_flight is None:
                self._syncing = True
                self._next_sync = now + self.policy.store_sync_interval
                return Decision(Action.SYNC_IN_BACKGROUND, token)
            return Decision(Action.USE, token)
        if zone is Zone.ADVISORY:
            if self._in_flight is None and now >= self._retry_at:
                return self._lead(Action.REFRESH_IN_BACKGROUND, RefreshReason.ADVISORY, token, now)
            return Decision(Action.USE, token)
        if zone is Zone.MANDATORY:
            assert token is not None
            if self._in_flight is not None:
                return Decision(Action.WAIT, token, deadline=token.usable_until)
            if now < self._retry_at:
                return Decision(Action.USE, token)  # a login just failed; the token is still good, don't hammer
            return self._lead(Action.LOGIN, RefreshReason.MANDATORY, token, now)
        # ABSENT or EXPIRED: nothing can be sent until a login succeeds.
        if self._auth_error is not None and now < self._auth_error_until:
            return Decision(Action.FAIL, error=AuthenticationError(str(self._auth_error),
                                                                  status_code=self._auth_error.status_code,
                                                                  server=self._auth_error.server))
        if self._in_flight is not None:
            return Decision(Action.WAIT, None, deadline=now + self.policy.login_timeout)
        if self._next_reason is not None:
            reason = self._next_reason
        else:
            reason = RefreshReason.ABSENT if token is None else RefreshReason.EXPIRED
        return self._lead(Action.LOGIN, reason, None, now)

    def _lead(self, action: Action, reason: RefreshReason, fallback: Token | None, now: float) -> Decision:
        self._in_flight = reason
        deadline = now + self.policy.login_timeout
        if fallback is not None:
            deadline = min(deadline, fallback.usable_until)
        return Decision(action, fallback, reason=reason, deadline=deadline)

    def after_wait(self, now: float, fallback: Token | None, error: NacosTokenError | None, *,
                   abandoned: bool = False) -> Decision:
        """A waiter woke up. It gets the leader's error (or its still-valid fallback), or the token the leader
        stored; if the leader was abandoned (cancelled) it decides again, and may lead the next login."""
        if error is not None:
            if fallback is not None and fallback.is_usable(now):
                return Decision(Action.USE, fallback)
            return Decision(Action.FAIL, error=error)
        token = self.token
        if not abandoned and token is not None and token.is_usable(now):
            return Decision(Action.USE, token)
        return self.decide(now)

    # -- events ------------------------------------------------------------------------------------------------

    def login_succeeded(self, value: str, *, issued_at: float, token_ttl: float, jwt_exp: float | None,
                        now: float, source: str = "login") -> LoginOutcome:
        current = self.token
        same = value in {current.value if current else None, self._dropped_value}
        if current is not None and current.value == value and current.is_usable(now):
            # The server's token cache handed back what we hold: its life did not grow. Back off, try later.
            # (Were ours already unusable by our clock, the server's tokenTtl below says how long it really lives.)
            self._failures += 1
            self._retry_at = now + self.policy.retry_delay(self._failures, current)
            token = current
        else:
            token = self.policy.schedule(value, issued_at=issued_at, token_ttl=token_ttl, jwt_exp=jwt_exp,
                                         source=source, rng=self._rng)
            self._failures = 0
            self._retry_at = 0.0
        self._finish()
        self.token = token
        self._auth_error = None
        self._synced_at(now)
        return LoginOutcome(token, same)

    def _synced_at(self, now: float) -> None:
        """We just read or wrote the shared store: the next background look is an interval away."""
        if self.shared_store:
            self._next_sync = now + self.policy.store_sync_interval

    def adopt(self, token: Token, now: float) -> bool:
        """Take a token another process stored. Only if it is usable and not the one we just dropped."""
        if not token.is_usable(now) or token.value == self._dropped_value:
            return False
        if self.token is not None and token.value == self.token.value:
            return False  # nothing new: the stored token is ours
        self.token = self.policy.rejitter(token, source="store", rng=self._rng)
        self._failures = 0
        self._retry_at = 0.0
        self._finish()
        self._auth_error = None
        self._synced_at(now)
        return True

    def store_synced(self, stored: Token | None, now: float) -> bool:
        """A background look at the shared store finished: adopt what another process put there if it is newer
        than ours (an ``invalidate()`` elsewhere, or a refresh that beat ours). True if adopted."""
        self._syncing = False
        self._synced_at(now)
        current = self.token
        if stored is None or self._in_flight is not None:
            return False
        if current is not None and stored.issued_at <= current.issued_at:
            return False
        return self.adopt(stored, now)

    def login_failed(self, error: NacosTokenError, now: float) -> None:
        self._finish(keep_reason=True)
        if isinstance(error, AuthenticationError):
            self._auth_error = error
            self._auth_error_until = now + self.policy.negative_cache_seconds
        self._failures += 1
        if self.token is not None:
            self._retry_at = now + self.policy.retry_delay(self._failures, self.token)

    def login_abandoned(self) -> None:
        """The leader was cancelled before finishing: the next request leads again."""
        self._finish(keep_reason=True)

    def _finish(self, *, keep_reason: bool = False) -> None:
        self._in_flight = None
        if not keep_reason:
            self._next_reason = None
            self._dropped_value = None

    def invalidate(self, value: str | None = None) -> bool:
        """Drop the token (only if it is still ``value`` when given). The next request logs in."""
        return self._drop(value, RefreshReason.FORCED, clear_negative_cache=True)

    def rejected(self, value: str) -> bool:
        """The server refused ``value``: compare-and-drop, so many rejections of one token cause one login."""
        return self._drop(value, RefreshReason.REJECTED, clear_negative_cache=False)

    def _drop(self, value: str | None, reason: RefreshReason, *, clear_negative_cache: bool) -> bool:
        if clear_negative_cache:
            self._auth_error = None
        token = self.token
        if token is None or (value is not None and token.value != value):
            return False
        self.token = None
        self._dropped_value = token.value
        self._next_reason = reason
        self._failures = 0
        self._retry_at = 0.0
        return True

    def reset_after_fork(self) -> None:
        """A forked child has no thread to finish the parent's login or store look."""
        self._in_flight = None
        self._syncing = False
