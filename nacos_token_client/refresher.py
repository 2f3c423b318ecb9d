"""Single flight and background refresh: each flow written once, carried out by a thin sync and a thin async shell.

The flows are generators that yield I/O commands — wait for the login in flight, send a login, read / write /
lock / delete in the store, start a background flow — and receive the results. :meth:`TokenSource.run_sync` and
:meth:`TokenSource.run_async` carry the commands out; they are the only places that touch threads, the event loop
or the store, and the only places that handle cancellation: a flow interrupted at a command (``CancelledError``,
``KeyboardInterrupt``, a coroutine closed with its loop) is unwound by throwing :class:`Cancelled` into it, so its
``finally`` blocks run (a store lock is released, on a worker thread or by a task on its loop) and its lease is
given back.

* One :class:`SharedState` per (store, identity) in the process: every auth object with the same identity shares
  its core, so they log in once between them. Its ``threading.Lock`` guards the core for microseconds and is never
  held across I/O or an ``await``, so nothing is bound to an event loop.
* A login in flight is a :class:`~nacos_token_client.lifecycle.Lease` owned by a thread or an event loop; its
  waiters wait on its :class:`Wake`, in slices, and decide again after every wake.
* Async code never blocks its loop: store calls (locks included) run on worker threads — or, for a store that
  serves the running loop with its own async client (:class:`~nacos_token_client.stores.base.AsyncTokenStore`,
  such as ``RedisTokenStore(url, asyncio=True)``), are awaited on the loop itself. Lock attempts are short, and a
  lock won after its waiter was cancelled is released at once.
* Fork-safe: a child gets fresh locks, no lease, no worker threads and no parent connections.

Waiting is cheap at scale, and the fleet does not hammer a failing server. (a) A login in flight has one
:class:`Wake`, and each event loop with tasks waiting for it has one gate (:class:`_Gate`): a waiting task costs one
future, the gate keeps one timer for all of its tasks (at the earliest deadline asked for; a task woken early
decides again), and the login's end costs one cross-thread wake-up per loop (``call_soon_threadsafe``), not one per
task — threads wait on one ``threading.Event``. (b) With a shared store that can hold a
:class:`~nacos_token_client.stores.base.FleetBackOff` (file, Redis), a leader that fails a login records the
failure's back-off there, and a leader in another process that finds the record, under the store's login lock, waits
it out instead of adding an attempt (one with no usable token waits at most its next flight delay; the flight ends
like a failure, without counting one); the first successful login clears the record, records expire on their own and
are bounded by ``MAX_FLEET_BACKOFF``, a record that cannot be read or written never stops a login, and
``invalidate()`` (a forced login) overrides it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import NacosTokenError, public_name
from .events import EventHooks, LoginOutcome, TokenEvent
from .lifecycle import Action, Decision, Lease, Owner, RefreshReason, RejectionVerdict, Ticket, Token, TokenLifecycle
from .login import LoginClient, LoginResult
from .stores.base import AsyncTokenStore, FleetBackOff, FleetBackOffStore, TokenStore

__all__ = ["Cancelled", "SharedState", "StormBackOff", "TokenSource", "shared_state"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")

#: How long one async attempt at a store's login lock may block its worker thread; cancellation waits no longer.
LOCK_SLICE = 0.1


class Cancelled(BaseException):
    """Thrown into a flow whose shell was interrupted, so its ``finally`` blocks run."""


class StormBackOff(NacosTokenError):
    """A replay would need a rejection-driven login while rejections are backing off: the rejected response
    goes back as it is."""


# -- commands ------------------------------------------------------------------------------------------------------


class Wake:
    """Set once, when a login in flight ends. Threads wait on an event; the tasks of each event loop wait on one
    gate per loop, completed by a single callback on that loop — a herd of ten thousand tasks costs one
    cross-thread wake-up per loop, not one per task."""

    __slots__ = ("_event", "_gates", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._gates: dict[asyncio.AbstractEventLoop, _Gate] = {}

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Wake every waiter, in every thread and on every loop (idempotent; safe from any thread)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            gates, self._gates = self._gates, {}
        for loop, gate in gates.items():
            if loop.is_closed():
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits there any more
                loop.call_soon_threadsafe(gate.open)

    def wait(self, seconds: float) -> None:
        """Block this thread until set, or for ``seconds``."""
        self._event.wait(seconds)

    def waiter(self, patience: float, check_every: float) -> tuple[_Gate, asyncio.Future[None]] | None:
        """This task's future on the running loop's gate (None: already set). It is done when the wake is set,
        after ``patience``, or when the gate picks this task to check the flight (every ``check_every``). Await it,
        then :meth:`_Gate.leave` in a ``finally``: a cancelled task stops waiting alone."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event.is_set():
                return None
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = _Gate(loop)
        if gate.opened:
            return None
        future: asyncio.Future[None] = loop.create_future()
        gate.add(future, patience, check_every)
        return gate, future


class _Gate:
    """The waiters of one loop on one :class:`Wake`, touched only from that loop's thread: one future each, one
    timer for all. The timer wakes the waiters whose patience ran out (their budget, the flight's deadline) and,
    once every ``check_every``, one waiter to decide again for all: if the leader died, that decision finds the
    flight void and every waiter of it is woken (:meth:`SharedState.decide`); if not, it waits again. A herd costs
    one decision per check, not one per task."""

    __slots__ = ("check_every", "due", "loop", "opened", "timer", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.opened = False
        self.waiters: dict[asyncio.Future[None], float] = {}  # each waiter's deadline (loop time), oldest first
        self.timer: asyncio.TimerHandle | None = None
        self.due = math.inf
        self.check_every = math.inf

    def add(self, waiter: asyncio.Future[None], patience: float, check_every: float) -> None:
        now = self.loop.time()
        self.waiters[waiter] = now + patience
        if check_every < patience:  # a slice of a longer wait; a wait shorter than a slice is only a deadline
            self.check_every = min(self.check_every, check_every)
        self._arm(now + min(patience, self.check_every))

    def leave(self, waiter: asyncio.Future[None]) -> None:
        self.waiters.pop(waiter, None)

    def open(self) -> None:
        self.opened = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.due = None, math.inf
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters:
            _resolve(waiter)

    def _arm(self, due: float) -> None:
        if due < self.due:
            if self.timer is not None:
                self.timer.cancel()
            self.due = due
            self.timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self.timer, self.due = None, math.inf
        now = self.loop.time()
        expired = [waiter for waiter, deadline in self.waiters.items() if deadline <= now]
        if not expired and self.waiters:
            expired = [next(iter(self.waiters))]  # the flight check: the longest waiter decides again
        for waiter in expired:
            del self.waiters[waiter]
            _resolve(waiter)
        if self.waiters:
            self._arm(min(*self.waiters.values(), now + self.check_every))


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Wait until ``wake`` is set (the login in flight ended) or ``seconds`` pass; with no ``wake``, sleep. An
    event loop's gate checks the flight every ``seconds`` for all its waiters (by waking one of them to decide
    again) and lets the others wait up to ``patience``."""

    wake: Wake | None
    seconds: float
    patience: float = 0.0


@dataclass(frozen=True, slots=True)
class SendLogin:
    """Log in, with every attempt ending by ``deadline`` (monotonic). Answers a LoginResult or raises."""

    deadline: float


@dataclass(frozen=True, slots=True)
class StoreGet:
    """Read the shared store (availability first: a failing store reads as empty)."""


@dataclass(frozen=True, slots=True)
class StorePut:
    token: Token


@dataclass(frozen=True, slots=True)
class StoreDelete:
    """Compare-and-delete ``value`` in the store."""

    value: str


@dataclass(frozen=True, slots=True)
class StoreLock:
    """Take the store's login lock within ``seconds``. Answers a handle to release, or None (not had)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class StoreUnlock:
    handle: AbstractContextManager[bool]


@dataclass(frozen=True, slots=True)
class BackOffGet:
    """Read the fleet's login back-off for this identity (None: none, or the store cannot say)."""


@dataclass(frozen=True, slots=True)
class BackOffPut:
    """Record a failed login's back-off for the fleet."""

    backoff: FleetBackOff


@dataclass(frozen=True, slots=True)
class BackOffClear:
    """A login succeeded: the fleet may log in again at once."""


@dataclass(frozen=True, slots=True)
class Spawn:
    """Run ``flow`` in the background (a thread, or a task on the running loop), owned by ``owner``."""

    flow: Callable[[], Generator[Command, Any, None]]
    owner: PendingOwner


Command = (WaitFor | SendLogin | StoreGet | StorePut | StoreDelete | StoreLock | StoreUnlock | BackOffGet | BackOffPut
           | BackOffClear | Spawn)
Flow = Generator[Command, Any, T]


# -- owners of leases ----------------------------------------------------------------------------------------------


class ThreadOwner(Owner):
    """A lease held by a thread: void once the thread has died."""

    __slots__ = ("thread",)

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.thread = thread or threading.current_thread()

    def alive(self) -> bool:
        return self.thread.is_alive()


class LoopOwner(Owner):
    """A lease held by a task: void once its event loop is closed or the loop's thread has died."""

    __slots__ = ("loop", "thread")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.current_thread()

    def alive(self) -> bool:
        return not self.loop.is_closed() and self.thread.is_alive()


class PendingOwner(Owner):
    """The owner of a background flow not started yet: alive until bound, then as alive as what it is bound to."""

    __slots__ = ("bound",)

    def __init__(self) -> None:
        self.bound: Owner | None = None

    def alive(self) -> bool:
        return self.bound is None or self.bound.alive()


# -- per-identity state ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SharedState:
    """One identity's token state in this process: the core, and a wake-up future per login in flight."""

    core: TokenLifecycle
    store: TokenStore
    key: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    wakes: dict[int, Wake] = field(default_factory=dict)

    def decide(self, now: float, mono: float, ticket: Ticket, owner: Owner) -> tuple[Decision, Wake | None]:
        with self.lock:
            decision = self.core.decide(now, mono, ticket, owner)
            lease = decision.lease
            flight = self.core.flight
            if self.wakes and (flight is None or len(self.wakes) > 1 or flight.generation not in self.wakes):
                # a flight this decision found void (or replaced): its waiters decide again now, whatever the
                # action — the one who noticed may lead, back off, fail or send a still-usable token
                for generation in [g for g in self.wakes if flight is None or g != flight.generation]:
                    self.wakes.pop(generation).set()
            if decision.action in (Action.LOGIN, Action.REFRESH_IN_BACKGROUND) and lease is not None:
                self.wakes[lease.generation] = Wake()
            if decision.action in (Action.REFRESH_IN_BACKGROUND, Action.SYNC_IN_BACKGROUND) and lease is not None:
                lease.owner = PendingOwner()
            return decision, self.wakes.get(flight.generation) if flight is not None else None

    def ended(self, lease: Lease) -> None:
        """The login ``lease`` ended (the core already knows how): wake its waiters."""
        with self.lock:
            wake = self.wakes.pop(lease.generation, None)
        if wake is not None:
            wake.set()

    def reset_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.wakes = {}
        self.core.reset_after_fork()


_registry: weakref.WeakValueDictionary[tuple[int, str], SharedState] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()
_sources: weakref.WeakSet[TokenSource] = weakref.WeakSet()
_store_executor: concurrent.futures.ThreadPoolExecutor | None = None


def shared_state(store: TokenStore, key: str, make_core: Callable[[], TokenLifecycle]) -> SharedState:
    """The process's state for ``key`` in ``store``, created on first use (the first caller's policy wins)."""
    with _registry_lock:
        state = _registry.get((id(store), key))
        if state is None:
            state = SharedState(make_core(), store, key)
            _registry[(id(store), key)] = state
        return state


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """Worker threads for store calls from async code (bounded; a store call has its own timeouts)."""
    global _store_executor  # noqa: PLW0603 - one pool per process
    with _registry_lock:
        if _store_executor is None:
            _store_executor = concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                                    thread_name_prefix="nacos-token-store")
        return _store_executor


def _after_fork_in_child() -> None:
    global _registry_lock, _store_executor  # noqa: PLW0603 - the parent's may have been in use at fork
    _registry_lock = threading.Lock()
    _store_executor = None
    for state in list(_registry.values()):
        state.reset_after_fork()
    for source in list(_sources):
        source.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _store_call(method: Callable[..., T], *args: Any) -> T | None:
    """Availability first: a store that fails is logged and treated as empty; the login goes on without it."""
    try:
        return method(*args)
    except Exception as exc:
        log.warning("token store %s failed (%s); carrying on without it", getattr(method, "__name__", "call"),
                    type(exc).__name__)
        return None


class _LockFailed:
    """The store could not be asked for its lock (unreachable): log in without it, do not try again."""


LOCK_FAILED = _LockFailed()


def _lock_attempt(store: TokenStore, key: str, seconds: float) -> AbstractContextManager[bool] | _LockFailed | None:
    """Try the store's login lock for up to ``seconds``: the entered lock, None (not had in time) or LOCK_FAILED."""
    try:
        manager = store.lock(key, seconds)
        acquired = manager.__enter__()
    except Exception as exc:
        log.warning("token store lock failed (%s); logging in without it", type(exc).__name__)
        return LOCK_FAILED
    if acquired:
        return manager
    _unlock(manager)
    return None


def _unlock(handle: AbstractContextManager[bool]) -> None:
    try:
        handle.__exit__(None, None, None)
    except Exception as exc:
        log.warning("token store unlock failed (%s)", type(exc).__name__)


def _unlock_in_background(handle: AbstractContextManager[bool]) -> None:
    threading.Thread(target=_unlock, args=(handle,), name="nacos-token-unlock", daemon=True).start()


class TokenSource:
    """Gets a usable token for one auth object: the fast path, single flight, background refresh."""

    def __init__(self, state: SharedState, login: LoginClient, *, clock: Callable[[], float],
                 timer: Callable[[], float] = time.monotonic, hooks: EventHooks) -> None:
        self.state = state
        self._core = state.core
        self.login = login
        self.clock = clock
        self.timer = timer
        self.hooks = hooks
        self._background: set[threading.Thread | asyncio.Task[Any]] = set()
        #: The store can hold a login back-off for the whole fleet (file, Redis): failed logins are recorded there.
        self._fleet = not state.store.local and isinstance(state.store, FleetBackOffStore)
        _sources.add(self)

    # -- the flows, written once -----------------------------------------------------------------------------

    def acquire(self, ticket: Ticket, owner: Owner) -> Flow[Token]:
        """A token ``ticket`` may send: use, wait, lead or fail as the core decides, until one is had."""
        waited_since: float | None = None
        try:
            while True:
                decision, wake = self.state.decide(self.clock(), self.timer(), ticket, owner)
                action = decision.action
                if action is Action.USE:
                    assert decision.token is not None
                    return decision.token
                if action is Action.FAIL:
                    assert decision.error is not None
                    raise decision.error
                if action is Action.BACK_OFF:
                    raise StormBackOff("rejections are backing off; the rejected response goes back as it is")
                if action in (Action.SYNC_IN_BACKGROUND, Action.REFRESH_IN_BACKGROUND):
                    assert decision.token is not None and decision.lease is not None
                    pending = decision.lease.owner
                    assert isinstance(pending, PendingOwner)
                    background = (functools.partial(self._sync_flow, decision.lease)
                                  if action is Action.SYNC_IN_BACKGROUND else
                                  functools.partial(self._lead_flow, decision, True))
                    yield Spawn(background, pending)
                    return decision.token
                # A wait: this request blocks for a login in flight or a back-off, or leads a login itself because
                # the token it had expired, was dropped or refused (the very first login is only a login).
                if waited_since is None and (action is Action.WAIT or decision.reason is not RefreshReason.ABSENT):
                    waited_since = self.timer()
                    self.hooks.count("waits")
                if action is Action.LOGIN:
                    yield from self._lead_flow(decision, False)
                else:  # WAIT
                    yield WaitFor(wake, decision.wait, max(decision.patience, decision.wait))
        finally:
            if waited_since is not None:
                self.hooks.observe_wait(self.timer() - waited_since)

    def _lead_flow(self, decision: Decision, background: bool) -> Flow[None]:
        """Lead one login: under the store's lock, adopt what another process stored, wait out a back-off the
        fleet recorded, or log in — then store the token, or record the failure's back-off for the fleet."""
        lease = decision.lease
        assert lease is not None
        started = self.timer()
        try:
            handle = None if self.state.store.local else (yield StoreLock(max(lease.deadline - self.timer(), 0.0)))
            try:
                stored = yield StoreGet()
                if stored is not None and self._adopt(lease, stored, decision.reason):
                    return
                recorded = (yield BackOffGet()) if self._fleet else None
                if (recorded is not None and recorded.until > self.clock()
                        and decision.reason is not RefreshReason.FORCED):  # invalidate(): the user's word wins
                    self._fleet_backing_off(lease, recorded, decision.reason, started, background)
                    return
                try:
                    result = yield SendLogin(lease.deadline)
                except NacosTokenError as exc:
                    until = self._failed(lease, decision.reason, exc, started, background)
                    if until is not None and self._fleet:
                        yield BackOffPut(FleetBackOff(until, min(self._core.failures, 1000)))
                    return
                token = self._apply_login(lease, result, decision.reason)
                if token is not None:
                    yield StorePut(token)
                    if recorded is not None and self._fleet:
                        yield BackOffClear()
            finally:
                if handle is not None:
                    yield StoreUnlock(handle)
        except NacosTokenError as exc:
            self._failed(lease, decision.reason, exc, started, background)
        except BaseException:
            with self.state.lock:
                self._core.login_abandoned(lease)
            self.state.ended(lease)
            raise

    def _sync_flow(self, lease: Lease) -> Flow[None]:
        """A background look at the shared store: adopt a newer token another process put there."""
        stored: Token | None = None
        try:
            stored = yield StoreGet()
        finally:
            with self.state.lock:
                adopted = self._core.sync_finished(lease, stored, self.clock())
        if adopted is not None:
            self.hooks.emit(TokenEvent("adopt", outcome="from_store", fingerprint=adopted.fingerprint))

    # -- sync shell -------------------------------------------------------------------------------------------

    def run_sync(self, flow: Flow[T]) -> T:
        """Carry out ``flow`` in this thread."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                command = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = self._execute_sync(command)
            except Exception as exc:
                error = exc
            except BaseException:
                _unwind(flow)
                raise

    def _execute_sync(self, command: Command) -> Any:
        store, key = self.state.store, self.state.key
        if isinstance(command, WaitFor):
            if command.wake is not None:
                command.wake.wait(command.seconds)
            else:
                time.sleep(command.seconds)
            return None
        if isinstance(command, SendLogin):
            return self.login.login_sync(command.deadline)
        operation = _store_operation(command)
        if operation is not None:
            name, args = operation
            return _store_call(getattr(store, name), key, *args)
        if isinstance(command, StoreLock):
            handle = _lock_attempt(store, key, command.seconds)
            return None if handle is LOCK_FAILED else handle
        if isinstance(command, StoreUnlock):
            return _unlock(command.handle)
        assert isinstance(command, Spawn)
        self._spawn_thread(command)
        return None

    def _spawn_thread(self, spawn: Spawn) -> None:
        def run() -> None:
            try:
                self.run_sync(spawn.flow())
            except Exception:
                log.exception("background token flow failed")
            finally:
                self._background.discard(thread)

        thread = threading.Thread(target=run, name="nacos-token-refresh", daemon=True)
        spawn.owner.bound = ThreadOwner(thread)
        self._background.add(thread)
        thread.start()

    # -- async shell ------------------------------------------------------------------------------------------

    async def run_async(self, flow: Flow[T]) -> T:
        """Carry out ``flow`` on the running loop, never blocking it."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                command = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                if isinstance(command, WaitFor) and command.wake is not None:
                    # The herd's path, kept short: no coroutine, no object beyond the task's one future.
                    entry = command.wake.waiter(command.patience, command.seconds)
                    del command
                    if entry is not None:
                        gate, waiter = entry
                        del entry
                        try:
                            await waiter
                        finally:
                            gate.leave(waiter)
                        del gate, waiter
                else:
                    reply = await self._execute_async(command)
            except Exception as exc:
                error = exc
            except BaseException:  # CancelledError, or GeneratorExit when the loop drops the task
                _unwind(flow)
                raise

    async def _execute_async(self, command: Command) -> Any:
        store, key = self.state.store, self.state.key
        if isinstance(command, WaitFor):  # a wait with a wake is run_async's own
            await asyncio.sleep(command.seconds)
            return None
        if isinstance(command, SendLogin):
            return await self.login.login_async(command.deadline)
        if isinstance(command, Spawn):
            self._spawn_task(command)
            return None
        if isinstance(command, StoreLock):
            return await self._lock_async(command.seconds)
        if isinstance(command, StoreUnlock) and isinstance(command.handle, _LoopLock):
            return await command.handle.release()
        call: Callable[[], Any]
        operation = _store_operation(command)
        if operation is not None:
            name, args = operation
            native = _native(store)
            method = getattr(native, "a" + name, None) if native is not None else None
            if method is not None:  # the store's own async client: no worker thread
                return await _astore_call(method, key, *args)
            call = functools.partial(_store_call, getattr(store, name), key, *args)
        else:
            assert isinstance(command, StoreUnlock)
            call = functools.partial(_unlock, command.handle)
        if store.local:
            return call()
        return await asyncio.wrap_future(_executor().submit(call))

    async def _lock_async(self, seconds: float) -> AbstractContextManager[bool] | None:
        """Short lock attempts on a worker thread, so a cancelled waiter stops waiting within one slice; a lock
        won by an attempt whose waiter was cancelled is released at once."""
        store, key = self.state.store, self.state.key
        native = _native(store)
        end = self.timer() + seconds
        while True:
            slice_ = min(LOCK_SLICE, max(end - self.timer(), 0.0))
            attempt: _Attempt
            waited: Awaitable[AbstractContextManager[bool] | _LockFailed | None]
            if native is not None:  # on this loop; shielded, so a cancelled waiter leaves it to finish and release
                task = asyncio.ensure_future(_alock_attempt(native, key, slice_))
                attempt, waited = task, asyncio.shield(task)
            else:
                attempt = _executor().submit(_lock_attempt, store, key, slice_)
                waited = asyncio.wrap_future(attempt)
            try:
                handle = await waited
            except BaseException:
                attempt.add_done_callback(_release_won)
                raise
            if isinstance(handle, _LockFailed):
                return None
            if handle is not None or self.timer() >= end:
                return handle

    def _spawn_task(self, spawn: Spawn) -> None:
        owner = LoopOwner()
        spawn.owner.bound = owner
        task = owner.loop.create_task(self._background_task(spawn), name="nacos-token-refresh")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_task(self, spawn: Spawn) -> None:
        try:
            await self.run_async(spawn.flow())
        except Exception:
            log.exception("background token flow failed")

    # -- what the flows share -----------------------------------------------------------------------------------

    def _adopt(self, lease: Lease, stored: Token, reason: RefreshReason | None) -> bool:
        """Another process (or auth object) stored a token while we waited for the lock: use it."""
        with self.state.lock:
            adopted = self._core.adopt(lease, stored, self.clock())
        if adopted is None:
            return False
        self.state.ended(lease)
        self.hooks.emit(TokenEvent("login", reason=reason, outcome="from_store", fingerprint=adopted.fingerprint))
        return True

    def _apply_login(self, lease: Lease, result: LoginResult, reason: RefreshReason | None) -> Token | None:
        """The core takes the login's token; None if it did not (begun before a rejection, or overtaken)."""
        answer = result.answer
        with self.state.lock:
            outcome = self._core.login_succeeded(lease, answer.token, issued_at=result.sent_at,
                                                 token_ttl=answer.token_ttl, jwt_exp=answer.jwt_exp,
                                                 now=self.clock())
        self.state.ended(lease)
        self.hooks.count("logins")
        label: LoginOutcome = "superseded" if not outcome.installed else "same_token" if outcome.same_token else "ok"
        self.hooks.emit(TokenEvent("login", reason=reason, outcome=label, fingerprint=outcome.token.fingerprint,
                                   server=str(result.server), attempts=result.attempts,
                                   duration=self.clock() - result.sent_at))
        return outcome.token if outcome.installed else None

    def _failed(self, lease: Lease, reason: RefreshReason | None, error: NacosTokenError, started: float,
                background: bool) -> float | None:
        """A login failed: the core backs off; returns the back-off deadline (wall) of a transient failure."""
        with self.state.lock:
            until = self._core.login_failed(lease, error, self.clock(), self.timer())
        self.state.ended(lease)
        self.hooks.count("failures")
        self.hooks.emit(TokenEvent("failure", reason=reason, outcome=public_name(error),
                                   duration=self.timer() - started, error=str(error)))
        if background:
            log.warning("background token refresh failed (%s: %s); still serving the current token",
                        public_name(error), error)
        return until

    def _fleet_backing_off(self, lease: Lease, recorded: FleetBackOff, reason: RefreshReason | None,
                           started: float, background: bool) -> None:
        """Another process's login failed and it recorded a back-off: wait it out instead of adding an attempt."""
        with self.state.lock:
            error = self._core.fleet_backing_off(lease, recorded.until, recorded.failures, self.clock(),
                                                 self.timer())
        self.state.ended(lease)
        self.hooks.emit(TokenEvent("failure", reason=reason, outcome="fleet_backoff",
                                   duration=self.timer() - started, error=str(error)))
        if background:
            log.info("token refresh postponed: %s", error)

    # -- sync and async entry points ----------------------------------------------------------------------------

    def get_token(self, ticket: Ticket | None = None) -> Token:
        """A token to send (blocking): the lock-free fast path, else the acquisition flow in this thread."""
        token = self._core.fast_token(self.clock())  # lock-free: the token is immutable and read atomically
        if token is not None:
            self.hooks.hit()
            return token
        return self.run_sync(self.acquire(ticket or Ticket(), ThreadOwner()))

    async def aget_token(self, ticket: Ticket | None = None) -> Token:
        """A token to send, without blocking the loop."""
        token = self._core.fast_token(self.clock())
        if token is not None:
            self.hooks.hit()
            return token
        return await self.run_async(self.acquire(ticket or Ticket(), LoopOwner()))

    # -- events from the auth layer ---------------------------------------------------------------------------

    def invalidate(self, value: str | None = None) -> bool:
        """Drop the cached token. The store's copy is deleted inline from a thread, on a worker thread when
        called on a running event loop (use :meth:`ainvalidate` there to wait for it)."""
        dropped, current = self._drop(value)
        if dropped and current is not None:
            if _running_loop() is None:
                _store_call(self.state.store.delete, self.state.key, current.value)
            elif not self.state.store.local:
                _executor().submit(_store_call, self.state.store.delete, self.state.key, current.value)
            else:
                _store_call(self.state.store.delete, self.state.key, current.value)
        return dropped

    async def ainvalidate(self, value: str | None = None) -> bool:
        """:meth:`invalidate`, waiting for the store's copy to go without blocking the loop."""
        dropped, current = self._drop(value)
        if dropped and current is not None:
            await self.run_async(_single(StoreDelete(current.value)))
        return dropped

    def _drop(self, value: str | None) -> tuple[bool, Token | None]:
        with self.state.lock:
            current = self._core.token
            dropped = self._core.invalidate(value)
        self.hooks.emit(TokenEvent("invalidate", reason=RefreshReason.FORCED,
                                   outcome="dropped" if dropped else "kept",
                                   fingerprint=current.fingerprint if current else None))
        return dropped, current

    def rejected(self, token: Token) -> Flow[RejectionVerdict]:
        """The server refused ``token``: the core's verdict, and the store's copy compare-and-deleted."""
        with self.state.lock:
            verdict = self._core.rejected(token, self.clock(), self.timer())
        if verdict.dropped:
            yield StoreDelete(token.value)
        return verdict

    def token_worked(self, token: Token) -> None:
        """A request with ``token`` was accepted; only called while the core counts strikes."""
        with self.state.lock:
            self._core.token_worked(token, self.clock())

    @property
    def strikes(self) -> int:
        """Rejections of freshly issued tokens in a row (read without the lock, on every accepted request)."""
        return self._core.strikes

    def current(self) -> Token | None:
        """The cached token, if any."""
        return self._core.token

    def close(self) -> None:
        """Cancel background tasks, and close the login connection pool."""
        for item in list(self._background):
            if isinstance(item, asyncio.Task) and not item.get_loop().is_closed():
                item.get_loop().call_soon_threadsafe(item.cancel)
        self.login.close()

    def reset_after_fork(self) -> None:
        self._background = set()
        self.login.reset_after_fork()


def _single(command: Command) -> Flow[Any]:
    """A flow of one command."""
    return (yield command)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: a lock attempt: a task on the loop (a store's ``alock``), or a worker thread's future (its ``lock``)
_Attempt = (asyncio.Future[AbstractContextManager[bool] | _LockFailed | None]
            | concurrent.futures.Future[AbstractContextManager[bool] | _LockFailed | None])


def _release_won(attempt: _Attempt) -> None:
    """A lock attempt finished after its waiter was cancelled: release what it won (a lock won on the loop is
    released by a task on that loop)."""
    if not attempt.cancelled() and attempt.exception() is None:
        handle = attempt.result()
        if isinstance(handle, _LoopLock):
            handle.release_soon()
        elif handle is not None and not isinstance(handle, _LockFailed):
            _unlock(handle)


def _store_operation(command: Command) -> tuple[str, tuple[Any, ...]] | None:
    """The store method (its sync name; the async one adds an ``a``) and arguments after the key that carry out
    ``command``, for the commands that are one plain store call; None for the others."""
    if isinstance(command, StoreGet):
        return "get", ()
    if isinstance(command, StorePut):
        return "put", (command.token,)
    if isinstance(command, StoreDelete):
        return "delete", (command.value,)
    if isinstance(command, BackOffGet):
        return "get_backoff", ()
    if isinstance(command, BackOffPut):
        return "put_backoff", (command.backoff,)
    if isinstance(command, BackOffClear):
        return "clear_backoff", ()
    return None


def _native(store: TokenStore) -> AsyncTokenStore | None:
    """The store, if it serves the running loop with its own async client."""
    return store if isinstance(store, AsyncTokenStore) and store.serves_async() else None


async def _astore_call(method: Callable[..., Awaitable[T]], *args: Any) -> T | None:
    """:func:`_store_call`, awaited: a store that fails is logged and treated as empty."""
    try:
        return await method(*args)
    except Exception as exc:
        log.warning("token store %s failed (%s); carrying on without it", getattr(method, "__name__", "call"),
                    type(exc).__name__)
        return None


class _LoopLock(AbstractContextManager[bool]):
    """A store lock won on an event loop (``alock``): released by awaiting :meth:`release` on that loop, or by
    :meth:`release_soon` from anywhere — a task on the loop if it still runs; if it is gone, the lock's TTL frees
    it."""

    def __init__(self, manager: AbstractAsyncContextManager[bool]) -> None:
        self.manager = manager
        self.loop = asyncio.get_running_loop()

    async def release(self) -> None:
        try:
            await self.manager.__aexit__(None, None, None)
        except Exception as exc:
            log.warning("token store unlock failed (%s)", type(exc).__name__)

    def release_soon(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._start_release)
        except RuntimeError:  # the loop is closed
            log.debug("a store lock's event loop is gone; its TTL frees it")

    def _start_release(self) -> None:
        task = self.loop.create_task(self.release(), name="nacos-token-unlock")
        _releases.add(task)
        task.add_done_callback(_releases.discard)

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        self.release_soon()


#: release tasks in flight (the loop keeps only weak references to tasks)
_releases: set[asyncio.Task[None]] = set()


async def _alock_attempt(store: AsyncTokenStore, key: str,
                         seconds: float) -> AbstractContextManager[bool] | _LockFailed | None:
    """:func:`_lock_attempt` on the loop: the won lock, None (not had in time) or LOCK_FAILED."""
    try:
        manager = store.alock(key, seconds)
        acquired = await manager.__aenter__()
    except Exception as exc:
        log.warning("token store lock failed (%s); logging in without it", type(exc).__name__)
        return LOCK_FAILED
    handle = _LoopLock(manager)
    if acquired:
        return handle
    await handle.release()
    return None


def _unwind(flow: Flow[Any]) -> None:
    """An interrupted flow: throw :class:`Cancelled` into it and carry out what its ``finally`` blocks ask —
    without waiting for anything (a lock is released on a worker thread)."""
    try:
        command = flow.throw(Cancelled())
        while True:
            if isinstance(command, StoreUnlock):
                if isinstance(command.handle, _LoopLock):
                    command.handle.release_soon()
                else:
                    _unlock_in_background(command.handle)
            command = flow.send(None)
    except (StopIteration, Cancelled):
        pass
    except Exception:
        log.exception("a token flow failed while being cancelled")
