"""Thin sync and async drivers that carry out the core's decisions. No rule lives here.

* One :class:`SharedState` per (store, identity) in the process: every auth object with the same identity shares
  its core, so they log in once between them.
* Single flight: a LOGIN decision creates one ``concurrent.futures.Future``; threads wait on it with
  ``result(timeout)``, asyncio tasks on any event loop with ``asyncio.wrap_future`` (shielded). The core's state
  is guarded by a ``threading.Lock`` held for microseconds and never across I/O or an ``await``, so there is no
  asyncio lock to bind to the wrong loop.
* A leader that fails completes the future with its error; one that is cancelled completes it with
  :class:`_Abandoned`, and its waiters decide again — nobody hangs on a dead leader.
* Fork-safe: a child gets fresh locks, no in-flight login and no parent connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import LoginUnavailableError, NacosTokenError
from .events import EventHooks, TokenEvent
from .lifecycle import Action, Decision, RefreshReason, Token, TokenLifecycle
from .login import LoginClient, LoginResult
from .stores.base import TokenStore

__all__ = ["SharedState", "TokenSource", "shared_state"]

log = logging.getLogger("nacos_token_client")


class _Abandoned(Exception):
    """The leader was cancelled before its login finished."""


@dataclass(eq=False)
class SharedState:
    """One identity's token state in this process."""

    core: TokenLifecycle
    store: TokenStore
    key: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    flight: concurrent.futures.Future[Token] | None = None

    def decide(self, now: float) -> tuple[Decision, concurrent.futures.Future[Token] | None]:
        with self.lock:
            decision = self.core.decide(now)
            if decision.action in (Action.LOGIN, Action.REFRESH_IN_BACKGROUND):
                flight: concurrent.futures.Future[Token] = concurrent.futures.Future()
                flight.set_running_or_notify_cancel()  # nobody may cancel it: waiters wait on a shield
                self.flight = flight
            return decision, self.flight

    def after_wait(self, now: float, fallback: Token | None, error: NacosTokenError | None,
                   abandoned: bool) -> tuple[Decision, concurrent.futures.Future[Token] | None]:
        with self.lock:
            decision = self.core.after_wait(now, fallback, error, abandoned=abandoned)
            if decision.action in (Action.LOGIN, Action.REFRESH_IN_BACKGROUND):
                flight: concurrent.futures.Future[Token] = concurrent.futures.Future()
                flight.set_running_or_notify_cancel()
                self.flight = flight
            return decision, self.flight

    def reset_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.flight = None
        self.core.reset_after_fork()


_registry: weakref.WeakValueDictionary[tuple[int, str], SharedState] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()
_sources: weakref.WeakSet[TokenSource] = weakref.WeakSet()


def shared_state(store: TokenStore, key: str, make_core: Callable[[], TokenLifecycle]) -> SharedState:
    """The process's state for ``key`` in ``store``, created on first use (the first caller's policy wins)."""
    with _registry_lock:
        state = _registry.get((id(store), key))
        if state is None:
            state = SharedState(make_core(), store, key)
            _registry[(id(store), key)] = state
        return state


def _after_fork_in_child() -> None:
    global _registry_lock  # noqa: PLW0603 - the parent's lock may have been held by another thread at fork
    _registry_lock = threading.Lock()
    for state in list(_registry.values()):
        state.reset_after_fork()
    for source in list(_sources):
        source.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


T = TypeVar("T")


def _store_call(method: Callable[..., T], *args: Any) -> T | None:
    """Availability first: a store that fails is logged and treated as empty; the login goes on without it."""
    try:
        return method(*args)
    except Exception as exc:
        log.warning("token store %s failed (%s); carrying on without it", getattr(method, "__name__", "call"),
                    type(exc).__name__)
        return None


@contextlib.contextmanager
def _store_lock(store: TokenStore, key: str, timeout: float) -> Iterator[bool]:
    """The store's login lock, or no lock at all if the store cannot give one (its failure is logged)."""
    try:
        manager = store.lock(key, timeout)
        acquired = manager.__enter__()
    except Exception as exc:
        log.warning("token store lock failed (%s); logging in without it", type(exc).__name__)
        yield False
        return
    try:
        yield acquired
    finally:
        try:
            manager.__exit__(None, None, None)
        except Exception as exc:
            log.warning("token store unlock failed (%s)", type(exc).__name__)


class TokenSource:
    """Gets a usable token for one auth object: the fast path, single flight, background refresh."""

    def __init__(self, state: SharedState, login: LoginClient, *, clock: Callable[[], float],
                 hooks: EventHooks) -> None:
        self.state = state
        self._core = state.core
        self.login = login
        self.clock = clock
        self.hooks = hooks
        self._background: set[threading.Thread | asyncio.Task[Any]] = set()
        _sources.add(self)

    # -- sync -------------------------------------------------------------------------------------------------

    def get_token(self) -> Token:
        now = self.clock()
        token = self._core.fast_token(now)  # lock-free: the token is immutable and read atomically
        if token is not None:
            self.hooks.count("cache_hits")
            return token
        decision, flight = self.state.decide(now)
        if decision.action is Action.USE:
            self.hooks.count("cache_hits")
        while True:
            action = decision.action
            if action is Action.USE:
                assert decision.token is not None
                return decision.token
            if action is Action.FAIL:
                assert decision.error is not None
                raise copy.copy(decision.error)
            if action is Action.SYNC_IN_BACKGROUND:
                assert decision.token is not None
                self._in_thread(self._sync_store_sync)
                return decision.token
            assert flight is not None
            if action is Action.REFRESH_IN_BACKGROUND:
                assert decision.token is not None
                self._in_thread(functools.partial(self._lead_sync, decision, flight))
                return decision.token
            if action is Action.LOGIN:
                decision, flight = self._lead_sync(decision, flight)
            else:  # WAIT
                decision, flight = self._wait_sync(decision, flight)

    def _wait_sync(self, decision: Decision, flight: concurrent.futures.Future[Token]) -> tuple[
            Decision, concurrent.futures.Future[Token] | None]:
        self.hooks.count("waits")
        started = time.monotonic()
        error: NacosTokenError | None = None
        abandoned = False
        try:
            flight.result(timeout=self._wait_seconds(decision))
        except _Abandoned:
            abandoned = True
        except concurrent.futures.TimeoutError:
            error = LoginUnavailableError("timed out waiting for another login to finish")
        except NacosTokenError as exc:
            error = exc
        self.hooks.observe_wait(time.monotonic() - started)
        return self.state.after_wait(self.clock(), decision.token, error, abandoned)

    def _lead_sync(self, decision: Decision, flight: concurrent.futures.Future[Token]) -> tuple[
            Decision, concurrent.futures.Future[Token] | None]:
        started = time.monotonic()
        try:
            token = self._obtain_sync(decision)
        except NacosTokenError as exc:
            return self._failed(decision, flight, exc, started)
        except BaseException:
            self._abandon(flight)
            raise
        return self._succeeded(flight, token)

    def _obtain_sync(self, decision: Decision) -> Token:
        store, key = self.state.store, self.state.key
        budget = self._budget(decision)
        with _store_lock(store, key, budget):
            adopted = self._adopt(_store_call(store.get, key), decision)
            if adopted is not None:
                return adopted
            result = self.login.login_sync(budget)
            token = self._apply_login(result, decision)
            _store_call(store.put, key, token)
            return token

    def _sync_store_sync(self) -> None:
        self._apply_sync(_store_call(self.state.store.get, self.state.key))

    def _in_thread(self, work: Callable[[], object]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                self._background.discard(thread)

        thread = threading.Thread(target=run, name="nacos-token-refresh", daemon=True)
        self._background.add(thread)
        thread.start()

    # -- async ------------------------------------------------------------------------------------------------

    async def aget_token(self) -> Token:
        now = self.clock()
        token = self._core.fast_token(now)
        if token is not None:
            self.hooks.count("cache_hits")
            return token
        decision, flight = self.state.decide(now)
        if decision.action is Action.USE:
            self.hooks.count("cache_hits")
        while True:
            action = decision.action
            if action is Action.USE:
                assert decision.token is not None
                return decision.token
            if action is Action.FAIL:
                assert decision.error is not None
                raise copy.copy(decision.error)
            if action is Action.SYNC_IN_BACKGROUND:
                assert decision.token is not None
                self._in_task(self._sync_store_async())
                return decision.token
            assert flight is not None
            if action is Action.REFRESH_IN_BACKGROUND:
                assert decision.token is not None
                self._in_task(self._lead_async(decision, flight))
                return decision.token
            if action is Action.LOGIN:
                decision, flight = await self._lead_async(decision, flight)
            else:
                decision, flight = await self._wait_async(decision, flight)

    async def _wait_async(self, decision: Decision, flight: concurrent.futures.Future[Token]) -> tuple[
            Decision, concurrent.futures.Future[Token] | None]:
        self.hooks.count("waits")
        started = time.monotonic()
        error: NacosTokenError | None = None
        abandoned = False
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(flight)), self._wait_seconds(decision))
        except _Abandoned:
            abandoned = True
        except asyncio.TimeoutError:
            error = LoginUnavailableError("timed out waiting for another login to finish")
        except NacosTokenError as exc:
            error = exc
        self.hooks.observe_wait(time.monotonic() - started)
        return self.state.after_wait(self.clock(), decision.token, error, abandoned)

    async def _lead_async(self, decision: Decision, flight: concurrent.futures.Future[Token]) -> tuple[
            Decision, concurrent.futures.Future[Token] | None]:
        started = time.monotonic()
        try:
            token = await self._obtain_async(decision)
        except NacosTokenError as exc:
            return self._failed(decision, flight, exc, started)
        except BaseException:
            self._abandon(flight)
            raise
        return self._succeeded(flight, token)

    async def _obtain_async(self, decision: Decision) -> Token:
        store, key = self.state.store, self.state.key
        budget = self._budget(decision)
        lock = _store_lock(store, key, budget)
        await self._off_loop(lock.__enter__)
        try:
            adopted = self._adopt(await self._off_loop(_store_call, store.get, key), decision)
            if adopted is not None:
                return adopted
            token = self._apply_login(await self.login.login_async(budget), decision)
            await self._off_loop(_store_call, store.put, key, token)
            return token
        finally:
            await self._off_loop(lock.__exit__, None, None, None)

    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        """Run a store call without blocking the event loop: inline for a local store, else on a worker thread."""
        if self.state.store.local:
            return call(*args)
        return await asyncio.to_thread(call, *args)

    async def _sync_store_async(self) -> None:
        self._apply_sync(await self._off_loop(_store_call, self.state.store.get, self.state.key))

    def _in_task(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="nacos-token-refresh")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- shared by both drivers -------------------------------------------------------------------------------

    def _budget(self, decision: Decision) -> float:
        deadline = decision.deadline if decision.deadline is not None else self.clock()
        return max(deadline - self.clock(), 0.0)

    def _wait_seconds(self, decision: Decision) -> float:
        return max(self._budget(decision), 0.001)

    def _adopt(self, stored: Token | None, decision: Decision) -> Token | None:
        """Another process (or auth object) stored a token while we waited for the lock: use it."""
        if stored is None:
            return None
        with self.state.lock:
            adopted = self.state.core.adopt(stored, self.clock())
        if adopted:
            self.hooks.emit(TokenEvent("login", reason=decision.reason, outcome="from_store",
                                       fingerprint=stored.fingerprint))
            return stored
        return None

    def _apply_sync(self, stored: Token | None) -> None:
        with self.state.lock:
            adopted = self.state.core.store_synced(stored, self.clock())
        if adopted and stored is not None:
            self.hooks.emit(TokenEvent("adopt", outcome="from_store", fingerprint=stored.fingerprint))

    def _apply_login(self, result: LoginResult, decision: Decision) -> Token:
        answer = result.answer
        with self.state.lock:
            outcome = self.state.core.login_succeeded(answer.token, issued_at=result.sent_at,
                                                      token_ttl=answer.token_ttl, jwt_exp=answer.jwt_exp,
                                                      now=self.clock())
        self.hooks.count("logins")
        self.hooks.emit(TokenEvent("login", reason=decision.reason,
                                   outcome="same_token" if outcome.same_token else "ok",
                                   fingerprint=outcome.token.fingerprint, server=str(result.server),
                                   attempts=result.attempts, duration=self.clock() - result.sent_at))
        return outcome.token

    def _succeeded(self, flight: concurrent.futures.Future[Token], token: Token) -> tuple[
            Decision, concurrent.futures.Future[Token] | None]:
        with self.state.lock:
            if self.state.flight is flight:
                self.state.flight = None
        flight.set_result(token)
        return Decision(Action.USE, token), None

    def _failed(self, decision: Decision, flight: concurrent.futures.Future[Token], error: NacosTokenError,
                started: float) -> tuple[Decision, concurrent.futures.Future[Token] | None]:
        now = self.clock()
        with self.state.lock:
            self.state.core.login_failed(error, now)
            if self.state.flight is flight:
                self.state.flight = None
        flight.set_exception(error)
        self.hooks.count("failures")
        self.hooks.emit(TokenEvent("failure", reason=decision.reason, outcome=type(error).__name__,
                                   duration=time.monotonic() - started, error=str(error)))
        if decision.action is Action.REFRESH_IN_BACKGROUND:
            log.warning("background token refresh failed (%s: %s); still serving the current token",
                        type(error).__name__, error)
        return self.state.after_wait(now, decision.token, error, False)

    def _abandon(self, flight: concurrent.futures.Future[Token]) -> None:
        with self.state.lock:
            self.state.core.login_abandoned()
            if self.state.flight is flight:
                self.state.flight = None
        flight.set_exception(_Abandoned())

    # -- events from the auth layer ---------------------------------------------------------------------------

    def invalidate(self, value: str | None = None) -> bool:
        with self.state.lock:
            current = self.state.core.token
            dropped = self.state.core.invalidate(value)
        if dropped and current is not None:
            self._store_delete(current.value)
        self.hooks.emit(TokenEvent("invalidate", reason=RefreshReason.FORCED,
                                   outcome="dropped" if dropped else "kept",
                                   fingerprint=current.fingerprint if current else None))
        return dropped

    def rejected(self, value: str) -> bool:
        with self.state.lock:
            dropped = self.state.core.rejected(value)
        if dropped:
            self._store_delete(value)
        return dropped

    def _store_delete(self, value: str) -> None:
        _store_call(self.state.store.delete, self.state.key, value)

    def current(self) -> Token | None:
        return self.state.core.token

    def close(self) -> None:
        for item in list(self._background):
            if isinstance(item, asyncio.Task):
                item.cancel()
        self.login.close()

    def reset_after_fork(self) -> None:
        self._background = set()
        self.login.reset_after_fork()
