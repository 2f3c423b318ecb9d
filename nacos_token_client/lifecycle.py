"""The token state machine: every rule about when a token is used, refreshed, waited for or dropped.

Sans-IO: nothing here opens a socket, starts a thread or sleeps. The caller passes two clocks — the wall clock
``now`` (token expiry: a suspended laptop's monotonic clock stops, a token's life does not) and a monotonic
``mono`` (how long a request or a login may take) — and tells the machine what happened; the machine answers
with a :class:`Decision`. The drivers in ``refresher.py`` only carry decisions out.

Zones of a token whose life is ``L = expires_at - issued_at`` (``issued_at`` = just before the login was sent)::

    issued_at        refresh_at                 mandatory_at          usable_until  expires_at
       |---- fresh ------|------ advisory ---------|---- mandatory ------|-- expired --|
       use it, no lock    use it + one background   wait for the one      never sent
                          refresh (backs off on     in-flight login
                          failure)

* ``refresh_at = issued_at + (ratio + U(0, jitter)) * L`` with ratio 0.9 — never earlier: a Nacos server with its
  token cache on hands back the same token until 90 % of its life, and the jitter spreads a fleet.
* ``mandatory_at = expires_at - min(60 s, 5 % of L)``; ``usable_until = expires_at - min(2 s, 2 % of L)``.
* ``expires_at = min(issued_at + tokenTtl, exp)`` for a JWT with an ``exp`` claim (unless clock skew).
* A login that returns the token already held does not extend its life (the server's cache did that).

A request's own budget (a :class:`Ticket`):

* A request that holds a usable token never waits past its ``usable_until``; a request with no usable token may
  spend ``login_timeout`` (monotonic seconds, counted from the moment it first had none) getting one.
* A failed login ends a waiter only for a *hard* error (refused credentials, an answer that is no token answer, a
  setting that cannot work: all negative-cached for ``negative_cache_seconds``) or when the waiter's own budget
  is spent; otherwise the
  waiter decides again — backing off briefly, and possibly leading the next attempt.

Leases, not flags: a login in flight and a background store look are :class:`Lease` objects with a monotonic
deadline and an owner. A lease whose deadline passed, or whose owner is gone (a thread that died, an event loop
that was closed), is void: the next request leads instead of waiting for a login nobody will finish. Waits are
sliced (``lease_check_interval``) so a waiter notices a dead owner quickly; a driver holding many waiters may
instead check on their behalf, once a slice, and let the rest wait their whole ``patience``.

Generations and replay: every login (and every token adopted from a shared store) gets the next generation
number. A rejection that drops the cached token (and an ``invalidate()``) raises the *floor*: from then on only a
token from a login that began after it is used — by the rejected request's replay and by everyone else, so a login
that was already in flight when the key rotated cannot hand out an old-key token. Compare-and-drop: a rejection
drops the cached token only if it is still the rejected one, so a hundred rejections of one token cause one login.

Storms: a token rejected within ``min(1 s, 1 % of L)`` of its login is a *strike* (counted once per token). One
strike is forgiven (a key rotation can race a login already in flight); from the second in a row, rejection-driven
logins back off — ``storm_backoff_initial``, doubling with each back-off in a row up to ``storm_backoff_max`` —
and rejected requests go back as they are, at once, while other requests keep using the current token. When a
back-off ends, the next rejection leads one login. A token that outlives its window resets the strikes.

Fleet back-off: a transient login failure returns the wall time until which this identity's logins wait
(:meth:`TokenLifecycle.login_failed`); a driver with a shared store records it for the other processes. A leader
that finds such a record does not add an attempt (:meth:`TokenLifecycle.fleet_backing_off`): the flight ends like a
failure without counting one, waiters wait within their own budgets, a process holding a usable token postpones its
refresh to the record's end, and one with none waits at most its own flight delay. ``invalidate()`` overrides it.

Methods that change state must be called with the driver's lock held; :meth:`TokenLifecycle.fast_token` is the
lock-free read used by every request in the fresh zone.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .errors import AuthenticationError, ConfigurationError, LoginResponseError, LoginUnavailableError, NacosTokenError

__all__ = [
    "Action",
    "Decision",
    "Lease",
    "LoginOutcome",
    "Owner",
    "RefreshPolicy",
    "RefreshReason",
    "RejectionVerdict",
    "Ticket",
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
    REFRESH_IN_BACKGROUND = "refresh_in_background"  # send ``decision.token``; lead the login in the background
    SYNC_IN_BACKGROUND = "sync_in_background"  # send ``decision.token``; read the shared store in the background
    LOGIN = "login"  # lead the login ``decision.lease`` now, then decide again
    WAIT = "wait"  # wait (for the login in flight, or a back-off) up to ``decision.wait`` seconds, then decide again
    FAIL = "fail"  # raise ``decision.error``
    BACK_OFF = "back_off"  # a replay would need a rejection-driven login during a storm back-off: give up the replay


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and its schedule. Its ``repr`` shows a fingerprint, never the token.

    ``value`` is the token itself. The schedule is in wall-clock seconds: ``issued_at`` (just before the login was
    sent), ``refresh_at`` (a background refresh starts), ``mandatory_at`` (requests wait for the refresh),
    ``usable_until`` (never sent after) and ``expires_at`` (the server stops accepting it). ``source`` says where
    it came from (``"login"`` or ``"store"``). ``generation`` orders tokens within one process: a token from a
    later login (or adoption) has a higher one.
    """

    value: str = field(repr=False)
    issued_at: float
    expires_at: float
    refresh_at: float
    mandatory_at: float
    usable_until: float
    source: str = "login"
    generation: int = 0

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the token for logs and events."""
        return fingerprint(self.value)

    @property
    def lifetime(self) -> float:
        """Seconds from the login to the expiry."""
        return self.expires_at - self.issued_at

    def zone(self, now: float) -> Zone:
        """The token's zone at wall-clock time ``now``."""
        if now < self.refresh_at:
            return Zone.FRESH
        if now < self.mandatory_at:
            return Zone.ADVISORY
        if now < self.usable_until:
            return Zone.MANDATORY
        return Zone.EXPIRED

    def is_usable(self, now: float) -> bool:
        """May the token still be sent at ``now``?"""
        return now < self.usable_until

    def info(self) -> TokenInfo:
        """A secret-free snapshot."""
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
    """A frozen, secret-free snapshot of the cached token, for ``token_info()``.

    Wall-clock seconds: ``issued_at``, ``refresh_at`` (when the background refresh starts), ``mandatory_at``
    (when requests start waiting for it) and ``expires_at``; ``source`` (``"login"`` or ``"store"``) and
    ``fingerprint`` (the first 8 hex digits of the token's SHA-256, to match log lines and events).
    """

    issued_at: float
    expires_at: float
    refresh_at: float
    mandatory_at: float
    source: str
    fingerprint: str

    @property
    def lifetime(self) -> float:
        """Seconds from the login to the expiry."""
        return self.expires_at - self.issued_at

    def remaining(self, now: float) -> float:
        """Seconds left at wall-clock time ``now``."""
        return self.expires_at - now


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """The numbers behind the zones, budgets and back-offs. Bounded defaults; zones scale with the token's life.

    ``NacosTokenAuth`` builds one from its ``refresh_ratio``, ``refresh_jitter`` (here ``jitter``),
    ``login_timeout``, ``negative_cache_seconds`` and ``store_sync_interval`` options; the other fields keep their
    defaults. With ``L`` the token's life:

    * ``refresh_ratio`` (0.9) + up to ``jitter`` (0.03): when the background refresh starts, as a fraction of L;
    * ``mandatory_max`` (60 s) / ``mandatory_fraction`` (0.05): requests wait in the last min(60 s, 5 % of L);
    * ``expiry_margin_max`` (2 s) / ``expiry_margin_fraction`` (0.02): a token is not sent in its last
      min(2 s, 2 % of L), so it cannot expire in flight;
    * ``retry_backoff_initial`` (1 s) doubling to ``retry_backoff_max`` (60 s): between failed background
      refreshes; ``flight_backoff_initial`` (0.05 s): between failed logins while requests wait;
    * ``negative_cache_seconds`` (5 s), ``login_timeout`` (30 s), ``store_sync_interval`` (1 s),
      ``store_sync_timeout`` (5 s), ``lease_check_interval`` (0.5 s): see the comments on each field;
    * ``strike_window_max`` (1 s) / ``strike_window_fraction`` (0.01): a rejection this soon after a login is a
      strike; ``storm_backoff_initial`` (1 s) doubling to ``storm_backoff_max`` (60 s): the back-off of
      rejection-driven logins from the second strike on.

    Every field must be a finite, non-negative number (:class:`~nacos_token_client.errors.ConfigurationError`).
    """

    refresh_ratio: float = 0.9
    jitter: float = 0.03
    mandatory_max: float = 60.0
    mandatory_fraction: float = 0.05
    expiry_margin_max: float = 2.0
    expiry_margin_fraction: float = 0.02
    #: First delay before retrying a failed background refresh; doubles up to ``retry_backoff_max``.
    retry_backoff_initial: float = 1.0
    retry_backoff_max: float = 60.0
    #: With no usable token, the pause between one failed login and the next (doubling, up to 2 s): the login
    #: itself already retried with back-off, and the waiting requests still have budget.
    flight_backoff_initial: float = 0.05
    #: After refused credentials (or an answer that is no token answer), requests fail at once for this long.
    negative_cache_seconds: float = 5.0
    #: How long a request with no usable token may spend getting one; also the deadline of every login.
    login_timeout: float = 30.0
    #: With a store other processes share: how often a process looks there for a token another process put.
    store_sync_interval: float = 1.0
    #: The longest one background store look may hold its lease.
    store_sync_timeout: float = 5.0
    #: Waiters re-check the login in flight this often, so a dead leader is noticed quickly.
    lease_check_interval: float = 0.5
    #: A token rejected within min(strike_window_max, strike_window_fraction * life) of its login is a strike.
    strike_window_max: float = 1.0
    strike_window_fraction: float = 0.01
    storm_backoff_initial: float = 1.0
    storm_backoff_max: float = 60.0

    def __post_init__(self) -> None:
        for name in ("refresh_ratio", "jitter", "mandatory_max", "mandatory_fraction", "expiry_margin_max",
                     "expiry_margin_fraction", "retry_backoff_initial", "retry_backoff_max",
                     "flight_backoff_initial", "negative_cache_seconds", "login_timeout", "store_sync_interval",
                     "store_sync_timeout", "lease_check_interval", "strike_window_max", "strike_window_fraction",
                     "storm_backoff_initial", "storm_backoff_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigurationError(f"{name} must not be negative, got {value!r}")
        if not 0.0 < self.refresh_ratio < 1.0:
            raise ConfigurationError(f"refresh_ratio must be between 0 and 1, got {self.refresh_ratio!r}")
        if not self.jitter < 1.0 - self.refresh_ratio:
            raise ConfigurationError(f"jitter must be in [0, {1.0 - self.refresh_ratio:.3f}), got {self.jitter!r}")
        for name in ("mandatory_fraction", "expiry_margin_fraction", "strike_window_fraction"):
            if not getattr(self, name) < 0.5:
                raise ConfigurationError(f"{name} must be in [0, 0.5)")
        if self.login_timeout <= 0 or self.lease_check_interval <= 0:
            raise ConfigurationError("login_timeout and lease_check_interval must be positive")
        if self.login_timeout > 3600:
            raise ConfigurationError(f"login_timeout must be at most 3600 s, got {self.login_timeout!r}")

    def schedule(
        self,
        value: str,
        *,
        issued_at: float,
        token_ttl: float,
        jwt_exp: float | None,
        source: str = "login",
        generation: int = 0,
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
        return Token(value, issued_at, expires_at, refresh_at, mandatory_at, usable_until, source, generation)

    def rejitter(self, token: Token, *, source: str, generation: int,
                 rng: Callable[[], float] = random.random) -> Token:
        """The same token with this process's own refresh point: processes sharing one token (and so one expiry)
        spread their refreshes over the jitter window instead of all starting at once."""
        refresh_at = min(token.issued_at + (self.refresh_ratio + self.jitter * rng()) * token.lifetime,
                         token.mandatory_at)
        return replace(token, refresh_at=max(refresh_at, token.issued_at), source=source, generation=generation)

    def retry_delay(self, failures: int, token: Token) -> float:
        """Back-off before the next refresh attempt while a still-valid token is served."""
        base = min(self.retry_backoff_initial, max(token.lifetime * 0.01, 0.05))
        return min(self.retry_backoff_max, base * 2.0 ** max(failures - 1, 0))

    def flight_delay(self, failures: int) -> float:
        """Pause between failed logins while requests with no usable token wait."""
        return min(2.0, self.flight_backoff_initial * 2.0 ** max(failures - 1, 0))

    def strike_window(self, token: Token) -> float:
        """A rejection this soon after the token's login is a strike."""
        return min(self.strike_window_max, self.strike_window_fraction * token.lifetime)

    def storm_delay(self, storms: int) -> float:
        """Back-off of rejection-driven logins in the ``storms``-th back-off in a row: doubling up to the max."""
        return min(self.storm_backoff_max, self.storm_backoff_initial * 2.0 ** max(storms - 1, 0))


@dataclass(slots=True)
class Ticket:
    """One request's claim on a token: its own budget and the generation its replay needs.

    ``deadline`` (monotonic) is set the first time the request has no usable token: from then on it may spend
    ``login_timeout``. ``min_generation`` is raised by a rejection.
    """

    deadline: float | None = None
    min_generation: int = 0


class Owner:
    """Who holds a lease. The drivers subclass it (a thread, an event loop); the core only asks ``alive()``."""

    __slots__ = ()

    def alive(self) -> bool:
        """False once the owner can no longer finish what it leads (its thread died, its loop was closed)."""
        return True


@dataclass(eq=False, slots=True)
class Lease:
    """An "in progress" mark that expires: a login in flight or a background store look."""

    generation: int
    deadline: float  # monotonic
    owner: Owner
    reason: RefreshReason | None = None

    def valid(self, mono: float) -> bool:
        """Still held: before its deadline and with a live owner."""
        return mono < self.deadline and self.owner.alive()


@dataclass(frozen=True, slots=True)
class Decision:
    """The core's answer for one request. ``token``: the token to send (USE and the background actions);
    ``lease``: the login to lead (LOGIN, REFRESH_IN_BACKGROUND) or the store look (SYNC_IN_BACKGROUND);
    ``wait``: seconds to wait before deciding again (WAIT), at most ``lease_check_interval`` while a login is in
    flight, so that a dead leader is noticed; ``patience``: how long the wait may last if the flight stays held (a
    driver that checks the flight itself, once for many waiters, lets them wait that long); ``error``: what to
    raise (FAIL)."""

    action: Action
    token: Token | None = None
    reason: RefreshReason | None = None
    lease: Lease | None = None
    wait: float = 0.0
    error: NacosTokenError | None = None
    patience: float = 0.0


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """What a finished login changed, for events and logs."""

    token: Token
    same_token: bool  # the server handed back the token already held (or just dropped)
    installed: bool = True  # False: a login begun before the floor was raised, or overtaken by a later one


@dataclass(frozen=True, slots=True)
class RejectionVerdict:
    """What a rejection means: replay with a token of ``min_generation`` or later, or (``storm``) go back as is."""

    relogin: bool
    min_generation: int = 0
    dropped: bool = False
    storm_seconds: float = 0.0


_HARD_ERRORS = (AuthenticationError, LoginResponseError, ConfigurationError)


class TokenLifecycle:
    """The state of one identity's token, and the rules that move it."""

    def __init__(self, policy: RefreshPolicy | None = None, *, rng: Callable[[], float] = random.random,
                 shared_store: bool = False) -> None:
        self.policy = policy or RefreshPolicy()
        self._rng = rng
        self.shared_store = shared_store
        self.token: Token | None = None
        self.generation = 0  # the last generation handed to a login or an adoption
        self.floor = 0  # no token of an older generation is used (raised by rejections and invalidate())
        self.flight: Lease | None = None
        self._sync: Lease | None = None
        #: No background look at a shared store before this wall time (never, without one).
        self._next_sync = 0.0 if shared_store else math.inf
        self._next_reason: RefreshReason | None = None
        self._dropped_value: str | None = None
        self._failures = 0
        self._retry_at = 0.0  # wall: no background refresh before this (a usable token is served meanwhile)
        self._next_flight = 0.0  # mono: no new login before this, for requests with no usable token
        self._hard_error: NacosTokenError | None = None
        self._hard_error_until = 0.0  # wall
        self._last_error: NacosTokenError | None = None
        self._rejected: tuple[str, int] | None = None  # the last rejected token and the generation a replay needs
        self.strikes = 0
        self.storms = 0  # back-off episodes in a row: each doubles the back-off
        self._storm_until = 0.0  # mono
        self._storm_value: str | None = None

    # -- reads -------------------------------------------------------------------------------------------------

    def fast_token(self, now: float) -> Token | None:
        """The cached token if it is fresh at ``now``; safe without the lock (the token is immutable)."""
        token = self.token
        if token is not None and now < token.refresh_at and now < self._next_sync:
            return token
        return None

    def zone(self, now: float) -> Zone:
        """The cached token's zone (ABSENT without one)."""
        return Zone.ABSENT if self.token is None else self.token.zone(now)

    # -- decisions ---------------------------------------------------------------------------------------------

    def decide(self, now: float, mono: float, ticket: Ticket, owner: Owner) -> Decision:
        """What a request holding ``ticket`` must do at ``now``. LOGIN and REFRESH_IN_BACKGROUND make it (or a
        background worker it starts) the leader of ``decision.lease``."""
        policy = self.policy
        flight = self._live_flight(mono)
        token = self.token
        if token is not None and token.is_usable(now) and token.generation >= ticket.min_generation:
            zone = token.zone(now)
            if zone is Zone.FRESH:
                if now >= self._next_sync and flight is None and self._live_sync(mono) is None:
                    self._next_sync = now + policy.store_sync_interval
                    self._sync = Lease(self.generation, mono + policy.store_sync_timeout, owner)
                    return Decision(Action.SYNC_IN_BACKGROUND, token, lease=self._sync)
                return Decision(Action.USE, token)
            if zone is Zone.ADVISORY:
                if flight is None and now >= self._retry_at:
                    return self._lead(Action.REFRESH_IN_BACKGROUND, RefreshReason.ADVISORY, token, mono, owner)
                return Decision(Action.USE, token)
            if flight is not None:  # MANDATORY: wait for the login in flight, never past usable_until
                patience = max(min(token.usable_until - now, flight.deadline - mono), 0.0)
                return Decision(Action.WAIT, token, wait=min(patience, policy.lease_check_interval),
                                patience=patience)
            if now < self._retry_at:
                return Decision(Action.USE, token)  # a login just failed; the token is still good, don't hammer
            return self._lead(Action.LOGIN, RefreshReason.MANDATORY, token, mono, owner)
        # No token this request may send: it spends its own budget getting one.
        if ticket.deadline is None:
            ticket.deadline = mono + policy.login_timeout
        if self._hard_error is not None and now < self._hard_error_until:
            return Decision(Action.FAIL, error=_copy_error(self._hard_error))
        if mono >= ticket.deadline:
            return Decision(Action.FAIL, error=self._budget_spent())
        if flight is not None:
            patience = max(min(flight.deadline - mono, ticket.deadline - mono), 0.0)
            return Decision(Action.WAIT, wait=min(patience, policy.lease_check_interval), patience=patience)
        if ticket.min_generation and mono < self._storm_until:
            return Decision(Action.BACK_OFF)
        if mono < self._next_flight:
            wait = min(self._next_flight, ticket.deadline) - mono
            return Decision(Action.WAIT, wait=wait, patience=wait)
        if ticket.min_generation and self._next_reason is None:
            reason = RefreshReason.REJECTED
        elif self._next_reason is not None:
            reason = self._next_reason
        else:
            reason = RefreshReason.ABSENT if token is None else RefreshReason.EXPIRED
        return self._lead(Action.LOGIN, reason, None, mono, owner)

    def _lead(self, action: Action, reason: RefreshReason, token: Token | None, mono: float,
              owner: Owner) -> Decision:
        self.generation += 1
        self.flight = Lease(self.generation, mono + self.policy.login_timeout, owner, reason)
        return Decision(action, token, reason=reason, lease=self.flight)

    def _live_flight(self, mono: float) -> Lease | None:
        flight = self.flight
        if flight is not None and not flight.valid(mono):
            self.flight = None  # its leader died, was cancelled without word, or overran: the next one leads
            self._last_error = LoginUnavailableError("the login in flight was abandoned (its owner is gone or "
                                                     "it overran its deadline)")
            return None
        return flight

    def _live_sync(self, mono: float) -> Lease | None:
        if self._sync is not None and not self._sync.valid(mono):
            self._sync = None
        return self._sync

    def _budget_spent(self) -> LoginUnavailableError:
        detail = f"; last error: {self._last_error}" if self._last_error is not None else ""
        attempts = getattr(self._last_error, "attempts", 0)
        return LoginUnavailableError(
            f"no usable token within login_timeout ({self.policy.login_timeout:g} s){detail}", attempts=attempts)

    # -- a login finished --------------------------------------------------------------------------------------

    def login_succeeded(self, lease: Lease, value: str, *, issued_at: float, token_ttl: float,
                        jwt_exp: float | None, now: float, source: str = "login") -> LoginOutcome:
        """The login ``lease`` got ``value``. A leader whose lease was voided meanwhile still contributes its
        token if no later login has."""
        self._end_flight(lease)
        current = self.token
        same = value in {current.value if current else None, self._dropped_value}
        if lease.generation < self.floor:
            # begun before a rejection (or an invalidate) was seen: it may carry what was just refused
            stale = self.policy.schedule(value, issued_at=issued_at, token_ttl=token_ttl, jwt_exp=jwt_exp,
                                         source=source, generation=lease.generation, rng=self._rng)
            return LoginOutcome(stale, same, installed=False)
        if current is not None and current.generation > lease.generation:
            return LoginOutcome(current, same, installed=False)  # a later login already finished: keep its token
        if current is not None and current.value == value and current.is_usable(now):
            # The server's token cache handed back what we hold: its life did not grow. Back off, try later.
            self._failures += 1
            self._retry_at = now + self.policy.retry_delay(self._failures, current)
            token = replace(current, generation=lease.generation)
        else:
            token = self.policy.schedule(value, issued_at=issued_at, token_ttl=token_ttl, jwt_exp=jwt_exp,
                                         source=source, generation=lease.generation, rng=self._rng)
            self._failures = 0
            self._retry_at = 0.0
        self.token = token
        self._settled(now)
        return LoginOutcome(token, same)

    def login_failed(self, lease: Lease, error: NacosTokenError, now: float, mono: float) -> float | None:
        """The login ``lease`` failed with ``error``: hard errors are negative-cached, the rest backed off.
        Returns, for a transient failure, the wall time until which this identity's logins now wait — what a
        shared store records for the fleet (:meth:`fleet_backing_off`)."""
        self._end_flight(lease)
        self._last_error = error
        self._failures += 1
        flight_delay = self.policy.flight_delay(self._failures)
        self._next_flight = mono + flight_delay
        if self.token is not None:
            self._retry_at = now + self.policy.retry_delay(self._failures, self.token)
        if isinstance(error, _HARD_ERRORS):
            self._hard_error = error
            self._hard_error_until = now + self.policy.negative_cache_seconds
            return None
        return max(self._retry_at, now + flight_delay)

    @property
    def failures(self) -> int:
        """Failed logins in a row (this process's count, raised to the fleet's by a recorded back-off)."""
        return self._failures

    def fleet_backing_off(self, lease: Lease, until: float, failures: int, now: float, mono: float,
                          ) -> LoginUnavailableError:
        """The leader of ``lease`` found that another process recorded a failed login, backing off until
        ``until`` (wall): it does not add an attempt. The flight ends like a failure — waiters wait the back-off
        out within their own budgets — without counting one more failure. Returns the error for the event."""
        self._end_flight(lease)
        wait = max(until - now, 0.0)
        if self.token is None or not self.token.is_usable(now):
            # the record may carry a refresher's long back-off; a process with no token waits a flight delay
            wait = min(wait, self.policy.flight_delay(failures))
        self._failures = max(self._failures, failures)
        self._next_flight = max(self._next_flight, mono + wait)
        if self.token is not None:
            self._retry_at = max(self._retry_at, until)
        self._last_error = LoginUnavailableError(
            f"another process's login failed {failures} time(s) in a row; the fleet waits {wait:.1f} s before "
            "the next attempt")
        return self._last_error

    def login_abandoned(self, lease: Lease) -> None:
        """The leader was cancelled before finishing: the next request leads again, at once."""
        self._end_flight(lease)

    def _end_flight(self, lease: Lease) -> None:
        if self.flight is lease:
            self.flight = None

    def _settled(self, now: float) -> None:
        """A token is in place: forget what the drop and the failures left behind."""
        self._next_reason = None
        self._dropped_value = None
        self._hard_error = None
        self._next_flight = 0.0
        if self.shared_store:
            self._next_sync = now + self.policy.store_sync_interval

    # -- shared stores -----------------------------------------------------------------------------------------

    def adopt(self, lease: Lease, token: Token, now: float) -> Token | None:
        """The leader of ``lease`` found ``token`` in the shared store (another process logged in). Take it if it
        is usable and not the one just dropped; it ends the flight like a login would."""
        current = self.token
        if not token.is_usable(now) or token.value == self._dropped_value or lease.generation < self.floor:
            return None
        if current is not None and token.value == current.value:
            return None  # nothing new: the stored token is ours
        self._end_flight(lease)
        self.token = self.policy.rejitter(token, source="store", generation=lease.generation, rng=self._rng)
        self._failures = 0
        self._retry_at = 0.0
        self._settled(now)
        return self.token

    def sync_finished(self, lease: Lease, stored: Token | None, now: float) -> Token | None:
        """A background look at the shared store finished: adopt what another process put there if it is newer
        than ours (an ``invalidate()`` elsewhere, or a refresh that beat ours). Returns the adopted token."""
        if self._sync is lease:
            self._sync = None
        self._next_sync = now + self.policy.store_sync_interval
        current = self.token
        if stored is None or self.flight is not None or lease.generation < self.floor:
            return None  # (a look begun before a rejection may bring back a token from before the rotation)
        if current is not None and stored.issued_at <= current.issued_at:
            return None
        if not stored.is_usable(now) or stored.value == self._dropped_value:
            return None
        self.generation += 1
        self.token = self.policy.rejitter(stored, source="store", generation=self.generation, rng=self._rng)
        self._failures = 0
        self._retry_at = 0.0
        self._settled(now)
        return self.token

    # -- rejections and invalidation ---------------------------------------------------------------------------

    def rejected(self, token: Token, now: float, mono: float) -> RejectionVerdict:
        """The server refused ``token``. Compare-and-drop, strikes, and the generation a replay needs."""
        policy = self.policy
        current = self.token
        if current is not None and current.value == token.value:
            if mono < self._storm_until:  # backing off: the others keep using it, this answer goes back
                return RejectionVerdict(False, storm_seconds=self._storm_until - mono)
            after_storm = token.value == self._storm_value  # the back-off is over: one rejection-driven login
            if after_storm:
                self._storm_value = None
            elif now - current.issued_at <= policy.strike_window(current):
                self.strikes += 1
                if self.strikes >= 2:
                    self.storms += 1
                    delay = policy.storm_delay(self.storms)
                    self._storm_until = mono + delay
                    self._storm_value = token.value  # kept in use: the others keep sending it meanwhile
                    return RejectionVerdict(False, storm_seconds=delay)
            else:
                self.strikes = self.storms = 0  # the token outlived its window: a rotation, not a storm
            self._drop(token.value, RefreshReason.REJECTED)
            self._rejected = (token.value, self.floor)
            return RejectionVerdict(True, self.floor, dropped=True)
        if mono < self._storm_until:
            return RejectionVerdict(False, storm_seconds=self._storm_until - mono)
        if self._rejected is not None and self._rejected[0] == token.value:
            return RejectionVerdict(True, self._rejected[1])  # already dropped: wait for the same login
        # An older token than ours: ours may be fine (the second replay covers the case where it is not).
        return RejectionVerdict(True, token.generation + 1)

    def token_worked(self, token: Token, now: float) -> None:
        """A request with ``token`` was accepted. Only consulted while there are strikes (``strikes > 0``)."""
        if token.value != self._storm_value and now - token.issued_at > self.policy.strike_window(token):
            self.strikes = self.storms = 0
            self._storm_until = 0.0
            self._storm_value = None

    def invalidate(self, value: str | None = None) -> bool:
        """Drop the token (only if it is still ``value`` when given). The next request logs in, at once: the
        user's word also ends a negative cache and a storm back-off."""
        self._hard_error = None
        self._next_flight = 0.0
        self.strikes = self.storms = 0
        self._storm_until = 0.0
        self._storm_value = None
        token = self.token
        if token is None:
            if value is None:
                self._next_reason = RefreshReason.FORCED  # no token to drop, but the next login is the user's
            return False
        if value is not None and token.value != value:
            return False
        self._drop(token.value, RefreshReason.FORCED)
        return True

    def _drop(self, value: str, reason: RefreshReason) -> None:
        self.token = None
        self.floor = self.generation + 1
        self._dropped_value = value
        self._next_reason = reason
        self._failures = 0
        self._retry_at = 0.0

    def reset_after_fork(self) -> None:
        """A forked child has no thread to finish the parent's login or store look."""
        self.flight = None
        self._sync = None


def _copy_error(error: NacosTokenError) -> NacosTokenError:
    """A fresh exception object per raise (tracebacks must not pile up on one shared instance)."""
    copied = error.__class__.__new__(error.__class__)
    copied.__dict__.update(error.__dict__)
    copied.args = error.args
    return copied
