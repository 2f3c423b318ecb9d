"""Scale (issue #9): shared login HTTP clients, cheap identities, one waiter per loop, the fleet-wide back-off."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nacos_token_client import MemoryTokenStore, NacosTokenAuth
from nacos_token_client.login import shared_clients
from nacos_token_client.testing import MockNacosServer


@pytest.fixture
def server() -> Iterator[tuple[MockNacosServer, str]]:
    mock = MockNacosServer(token_ttl=18000)
    for i in range(40):
        mock.add_user(f"user{i}", f"pw{i}")
    address = mock.start()
    try:
        yield mock, address
    finally:
        mock.stop()


def _sockets_to(port: int) -> int:
    """Open TCP sockets of this process connected to ``port`` (from /proc/net/tcp and our descriptors)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


# -- shared login HTTP machinery ---------------------------------------------------------------------------------


def test_identities_share_one_sync_client_and_keep_no_sockets_open(server: tuple[MockNacosServer, str]) -> None:
    mock, address = server
    port = httpx.URL(address).port
    assert port is not None
    before = shared_clients().built[0]
    auths = [NacosTokenAuth(address, f"user{i}", f"pw{i}", store=MemoryTokenStore()) for i in range(40)]
    tokens = {auth.get_token() for auth in auths}
    assert len(tokens) == 40
    assert mock.stats.logins == 40
    assert shared_clients().built[0] - before <= 1  # one client for the default settings, not one per identity
    assert _sockets_to(port) == 0  # logins ask for Connection: close; nothing lingers per identity


def test_distinct_http_settings_get_distinct_clients(server: tuple[MockNacosServer, str]) -> None:
    _, address = server
    plain = NacosTokenAuth(address, "user1", "pw1", store=MemoryTokenStore())
    plain.get_token()
    before = shared_clients().built[0]
    no_env = NacosTokenAuth(address, "user2", "pw2", store=MemoryTokenStore(), trust_env=False)
    no_env.get_token()
    again = NacosTokenAuth(address, "user3", "pw3", store=MemoryTokenStore(), trust_env=False)
    again.get_token()
    assert shared_clients().built[0] - before == 1


def test_an_event_loop_reuses_its_async_client_and_closes_it_with_the_loop(
        server: tuple[MockNacosServer, str]) -> None:
    mock, address = server
    auths = [NacosTokenAuth(address, f"user{i}", f"pw{i}", store=MemoryTokenStore()) for i in range(20)]

    async def log_in_all() -> httpx.AsyncClient:
        await asyncio.gather(*(auth.aget_token() for auth in auths))
        return await shared_clients().async_client(True, True, None)

    before = shared_clients().built[1]
    client = asyncio.run(log_in_all())
    assert mock.stats.logins == 20
    assert shared_clients().built[1] - before == 1  # 20 logins on one loop: one client
    assert client.is_closed  # asyncio.run shut the loop's async generators down, which closed it

    for auth in auths:
        auth.invalidate()
    second = asyncio.run(log_in_all())  # a new loop: a new client, never the closed one
    assert second is not client and second.is_closed
    assert shared_clients().built[1] - before == 2
    assert mock.stats.logins == 40


def test_a_loop_closed_without_shutting_down_is_forgotten(server: tuple[MockNacosServer, str]) -> None:
    _, address = server
    auth = NacosTokenAuth(address, "user5", "pw5", store=MemoryTokenStore())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(auth.aget_token())
    finally:
        loop.close()  # no shutdown_asyncgens(): the client is not closed, but it must not be reused
    auth.invalidate()
    gc.collect()
    assert asyncio.run(auth.aget_token())  # another loop logs in fine with its own client


def _child_login(address: str, queue: Any) -> None:
    auth = NacosTokenAuth(address, "user7", "pw7", store=MemoryTokenStore())
    before = shared_clients().built[0]
    try:
        auth.get_token()
        queue.put(("ok", shared_clients().built[0] - before))
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_builds_its_own_client(server: tuple[MockNacosServer, str]) -> None:
    mock, address = server
    NacosTokenAuth(address, "user6", "pw6", store=MemoryTokenStore()).get_token()  # the parent has a client
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_login, args=(address, queue))
    child.start()
    outcome = queue.get(timeout=30)
    child.join(30)
    assert outcome == ("ok", 1)  # the parent's client was forgotten in the child, and a fresh one worked
    assert mock.stats.logins == 2


def test_a_user_transport_is_used_as_given_and_never_closed(server: tuple[MockNacosServer, str]) -> None:
    mock, _ = server
    transport = mock.transport()
    closed: list[bool] = []
    original = transport.close
    transport.close = lambda: closed.append(True) or original()  # type: ignore[method-assign,func-returns-value]
    auth = NacosTokenAuth("http://nacos.test:8848", "user8", "pw8", store=MemoryTokenStore(), transport=transport)
    auth.get_token()
    auth.close()

    async def run() -> None:
        auth.invalidate()
        await auth.aget_token()

    asyncio.run(run())
    assert not closed
    assert mock.stats.logins == 2


def test_async_login_cpu_is_small_after_the_first(server: tuple[MockNacosServer, str]) -> None:
    """Not a benchmark (see benchmarks/scale.py): a guard that no login builds an SSL context of its own."""
    _, address = server
    auths = [NacosTokenAuth(address, f"user{i}", f"pw{i}", store=MemoryTokenStore()) for i in range(10, 30)]

    async def run() -> int:
        before = shared_clients().built[1]
        for auth in auths:
            await auth.aget_token()
        return shared_clients().built[1] - before

    started = time.process_time()
    assert asyncio.run(run()) == 1
    assert time.process_time() - started < 20 * 0.0248  # 20 logins that each built an SSL context would cost more


# -- one waiter per event loop per flight --------------------------------------------------------------------------


def _slow_login_auth(login_delay: float, **options: Any) -> tuple[MockNacosServer, NacosTokenAuth]:
    mock = MockNacosServer(token_ttl=18000)
    mock.login_delay = login_delay
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=MemoryTokenStore(),
                          transport=mock.transport(), **options)
    return mock, auth


@contextlib.contextmanager
def _counting_decisions() -> Iterator[list[int]]:
    """Counts the core's decisions while the block runs (the count is ``[0]`` of what it yields)."""
    from nacos_token_client.lifecycle import TokenLifecycle

    count = [0]
    original = TokenLifecycle.decide

    def counting(self: TokenLifecycle, *args: Any) -> Any:
        count[0] += 1
        return original(self, *args)

    TokenLifecycle.decide = counting  # type: ignore[method-assign,assignment]
    try:
        yield count
    finally:
        TokenLifecycle.decide = original  # type: ignore[method-assign]


def test_a_herd_on_two_loops_gets_one_wake_up_per_loop() -> None:
    """The login is led from a thread; 2 x 500 tasks on two loops wait for it. Each loop is woken once (one
    call_soon_threadsafe), not once per task, and every task gets the token of the one login."""
    import threading

    mock, auth = _slow_login_auth(0.3)
    leader = threading.Thread(target=auth.get_token)
    results: dict[int, tuple[set[str], int]] = {}
    started = threading.Barrier(3)

    def loop_herd(index: int) -> None:
        async def run() -> None:
            loop = asyncio.get_running_loop()
            wakes = 0
            original = loop.call_soon_threadsafe

            def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal wakes
                wakes += 1
                return original(callback, *args, **kwargs)

            loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
            started.wait(5)
            await asyncio.sleep(0.05)  # the leader's login is in flight
            tokens = await asyncio.gather(*(auth.aget_token() for _ in range(500)))
            results[index] = (set(tokens), wakes)

        asyncio.run(run())

    herds = [threading.Thread(target=loop_herd, args=(i,)) for i in range(2)]
    for herd in herds:
        herd.start()
    started.wait(5)
    leader.start()
    for thread in (leader, *herds):
        thread.join(30)
    assert mock.stats.logins == 1
    assert results[0][0] == results[1][0] == {auth.get_token()}
    assert results[0][1] <= 2 and results[1][1] <= 2  # one wake-up per loop (and no more than a stray one)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 has no asyncio.timeout; wait_for runs a new task")
async def test_a_herds_leader_logs_in_before_the_rest_of_the_herd_has_queued() -> None:
    """The task that leads the login sends it at once. (It used to send it from a task of its own, queued behind
    every task of the herd: a herd whose requests take longer to build than the login to answer paid for both.)"""
    mock = MockNacosServer(token_ttl=18000)
    mock.login_delay = 0.05
    served = mock.transport()
    started = 0
    started_at_login: list[int] = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/auth/login"):
                started_at_login.append(started)
            return await served.handle_async_request(request)

    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=MemoryTokenStore(),
                          async_transport=Recording())

    async def one(client: httpx.AsyncClient) -> int:
        nonlocal started
        started += 1
        response = await client.get("http://nacos.test:8848/nacos/v1/cs/configs",
                                    params={"dataId": "a", "group": "DEFAULT_GROUP"})
        return response.status_code

    async with httpx.AsyncClient(auth=auth, transport=served) as client:
        statuses = await asyncio.gather(*(one(client) for _ in range(300)))
    assert started_at_login == [1]  # sent by the first task before the 299 others began
    assert set(statuses) == {404} and mock.stats.logins == 1


async def test_a_herd_waiting_through_a_long_login_decides_twice_per_task_not_once_per_slice() -> None:
    """Waits are sliced (lease_check_interval, 0.5 s) so that a dead leader is noticed. A loop's gate checks for its
    whole herd by waking one task per slice; the rest sleep on. (It used to wake every task every slice: a 1.6 s
    login cost each of 500 tasks four decisions and wake-ups more.)"""
    mock, auth = _slow_login_auth(1.6)
    with _counting_decisions() as decisions:
        tokens = await asyncio.gather(*(auth.aget_token() for _ in range(500)))
    assert len(set(tokens)) == 1 and mock.stats.logins == 1
    assert decisions[0] <= 2 * 500 + 10  # each: wait, then use; plus one check per slice


async def test_a_herds_gate_notices_a_dead_leader_within_a_slice() -> None:
    """A login is in flight under a leader that dies without a word (a thread gone, a loop closed elsewhere). The
    one task the gate wakes to check finds the lease void and leads; the rest follow its login."""
    from nacos_token_client.lifecycle import Owner, Ticket

    class Mortal(Owner):
        def __init__(self) -> None:
            self.living = True

        def alive(self) -> bool:
            return self.living

    now = [time.time()]
    mock, auth = _slow_login_auth(0.0, clock=lambda: now[0])
    await auth.aget_token()
    now[0] += 20_000  # the token expired
    source = auth._require_source()
    dead = Mortal()
    decision, _ = source.state.decide(source.clock(), source.timer(), Ticket(), dead)  # it leads the login
    assert decision.lease is not None and decision.lease.owner is dead
    began = time.monotonic()
    herd = asyncio.gather(*(auth.aget_token() for _ in range(300)))
    await asyncio.sleep(0.1)
    dead.living = False
    tokens = await asyncio.wait_for(herd, 5)
    assert time.monotonic() - began < 1.0  # within a slice or two of the death, not at the lease's deadline
    assert len(set(tokens)) == 1 and mock.stats.logins == 2


async def test_one_waiter_with_a_short_wait_does_not_set_the_gates_pace() -> None:
    """A request whose budget is nearly spent joins a herd waiting on a slow login. Its short wait is its own
    deadline, not a check interval: the gate keeps checking once per slice, not once per millisecond."""
    from nacos_token_client import LoginUnavailableError
    from nacos_token_client.lifecycle import Ticket

    mock, auth = _slow_login_auth(2.0)
    with _counting_decisions() as decisions:
        herd = asyncio.gather(*(auth.aget_token() for _ in range(200)))
        await asyncio.sleep(0.2)
        source = auth._require_source()
        with pytest.raises(LoginUnavailableError):
            await source.aget_token(Ticket(deadline=source.timer() + 0.001))
        tokens = await herd
    assert len(set(tokens)) == 1 and mock.stats.logins == 1
    assert decisions[0] <= 2 * 200 + 20


async def test_a_dead_leader_releases_the_whole_herd_even_when_the_checker_does_not_lead() -> None:
    """The leader of a rejection's login dies without a word while 20 requests in the MANDATORY zone wait for it,
    and a failed refresh's retry delay is running: the checker finds the flight void and sends its still-usable
    token (it does not lead). Every other waiter is released with it, not one per slice."""
    from nacos_token_client.lifecycle import Owner, Ticket

    class Mortal(Owner):
        def __init__(self) -> None:
            self.living = True

        def alive(self) -> bool:
            return self.living

    offset = [0.0]
    mock, auth = _slow_login_auth(0.0, clock=lambda: time.time() + offset[0])
    await auth.aget_token()
    source = auth._require_source()
    token = source.current()
    assert token is not None
    offset[0] = token.usable_until - time.time() - 20.0  # the MANDATORY zone, 20 s of use left
    source._core._retry_at = source.clock() + 60  # as a failed background refresh leaves it
    dead = Mortal()
    source.state.decide(source.clock(), source.timer(), Ticket(min_generation=token.generation + 1), dead)
    began = time.monotonic()
    herd = asyncio.gather(*(auth.aget_token() for _ in range(20)))
    await asyncio.sleep(0.1)
    dead.living = False
    tokens = await asyncio.wait_for(herd, 15)
    assert time.monotonic() - began < 1.2  # one check (0.5 s) after the death, all of them
    assert set(tokens) == {token.value} and mock.stats.logins == 1


async def test_cancelling_some_waiters_leaves_the_others_and_the_login_alone() -> None:
    mock, auth = _slow_login_auth(0.4)
    tasks = [asyncio.create_task(auth.aget_token()) for _ in range(200)]
    await asyncio.sleep(0.1)  # all waiting for the login in flight (led by the first task)
    cancelled_at = time.monotonic()
    for task in tasks[1::2]:
        task.cancel()
    done, _ = await asyncio.wait(tasks[1::2], timeout=1.0)
    assert len(done) == 100 and all(task.cancelled() for task in done)
    assert time.monotonic() - cancelled_at < 0.3  # they stopped waiting at once, not when the login ended
    tokens = await asyncio.gather(*tasks[0::2])
    assert len(set(tokens)) == 1
    assert mock.stats.logins == 1


async def test_each_waiter_keeps_its_own_budget() -> None:
    """The login hangs; tasks that began waiting at different times each fail when their own budget is spent."""
    from nacos_token_client import LoginUnavailableError

    _, auth = _slow_login_auth(30.0, login_timeout=1.0, login_attempts=1)
    began = time.monotonic()

    async def timed(delay: float) -> float:
        await asyncio.sleep(delay)
        with pytest.raises(LoginUnavailableError):
            await auth.aget_token()
        return time.monotonic() - began

    early, late = await asyncio.gather(timed(0.0), timed(0.6))
    assert 0.9 <= early <= 1.7
    assert 1.5 <= late <= 2.3


# -- fleet-wide login back-off -----------------------------------------------------------------------------------


def _outage_member(url: str, path: str, seconds: float, barrier: Any, results: Any) -> None:
    import logging

    from nacos_token_client import FileTokenStore, NacosTokenError

    logging.disable(logging.WARNING)
    auth = NacosTokenAuth(url, "nacos", "nacos", store=FileTokenStore(path), login_timeout=2.0,
                          login_backoff=(0.05, 0.2))
    barrier.wait(30)
    end = time.monotonic() + seconds
    ok = failed = 0
    while time.monotonic() < end:
        try:
            auth.get_token()
            ok += 1
        except NacosTokenError:
            failed += 1
        time.sleep(0.05)
    results.put((ok, failed))


def _outage(processes: int, seconds: float, tmp: str, recover_after: float | None = None) -> tuple[int, int, list[Any]]:
    """Login attempts the server saw from ``processes`` processes sharing a file store during a login outage."""
    import threading

    mock = MockNacosServer(token_ttl=18000)
    mock.down = True
    fork = multiprocessing.get_context("fork")
    with mock.run() as url:
        barrier = fork.Barrier(processes + 1)
        results = fork.Queue()
        members = [fork.Process(target=_outage_member, args=(url, os.path.join(tmp, "tokens.json"), seconds,
                                                             barrier, results)) for _ in range(processes)]
        for member in members:
            member.start()
        barrier.wait(30)
        if recover_after is not None:
            threading.Timer(recover_after, lambda: setattr(mock, "down", False)).start()
        outcomes = [results.get(timeout=seconds + 60) for _ in members]
        for member in members:
            member.join(30)
        stats = mock.stats
    return stats.login_attempts, stats.logins, outcomes


def test_a_fleet_waits_out_a_login_outage_together(tmp_path: Any) -> None:
    """16 real processes sharing a file store make about as many login attempts during an outage as one process
    alone: a failed login's back-off is recorded in the store and the others wait it out."""
    os.makedirs(tmp_path / "one")
    os.makedirs(tmp_path / "fleet")
    one, _, _ = _outage(1, 4.0, str(tmp_path / "one"))
    fleet, _, outcomes = _outage(16, 4.0, str(tmp_path / "fleet"))
    assert all(ok == 0 for ok, _ in outcomes)  # the server was down throughout
    assert fleet <= 2 * one + 6, (one, fleet)  # without the shared back-off: about 16 times one


def test_the_first_success_ends_the_fleets_back_off(tmp_path: Any) -> None:
    _, logins, outcomes = _outage(8, 5.0, str(tmp_path), recover_after=1.5)
    assert all(ok > 0 for ok, _ in outcomes), outcomes  # every process got a token after the outage
    assert logins <= 2, logins  # and they shared it through the store: one login (two if two raced the lock)


def test_a_failing_back_off_record_never_blocks_a_login(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from nacos_token_client import FileTokenStore
    from nacos_token_client.stores import FleetBackOff

    class BrokenBackOffs(FileTokenStore):
        def get_backoff(self, key: str) -> FleetBackOff | None:
            raise OSError("disk gone")

        def put_backoff(self, key: str, backoff: FleetBackOff) -> None:
            raise OSError("disk gone")

        def clear_backoff(self, key: str) -> None:
            raise OSError("disk gone")

    mock = MockNacosServer(token_ttl=18000)
    mock.fail_logins(3)
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=BrokenBackOffs(tmp_path / "t.json"),
                          transport=mock.transport(), login_attempts=3, login_backoff=(0.01, 0.02))
    assert auth.get_token()  # three failed attempts (one failed login, recorded nowhere), then a login
    assert mock.stats.logins == 1
    assert "get_backoff failed" in caplog.text or "put_backoff failed" in caplog.text


def test_a_recorded_back_off_is_waited_out_by_another_process(tmp_path: Any) -> None:
    """Two stores on one file stand for two processes: the first records its failed login's back-off, the second
    sees it and adds no attempt until it has passed; the first success clears it."""
    from nacos_token_client import FileTokenStore, LoginUnavailableError
    from nacos_token_client.stores import FleetBackOff

    mock = MockNacosServer(token_ttl=18000)
    mock.down = True
    options: dict[str, Any] = {"transport": mock.transport(), "login_attempts": 1, "login_timeout": 0.3}
    first_store, second_store = FileTokenStore(tmp_path / "t.json"), FileTokenStore(tmp_path / "t.json")
    first = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=first_store, **options)
    second = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=second_store, **options)
    with pytest.raises(LoginUnavailableError):
        first.get_token()
    recorded = second_store.get_backoff(second.identity_key)
    assert recorded is not None and recorded.failures >= 1 and recorded.until > time.time()

    # another process's back-off, long enough to cover the whole budget of the next request
    first_store.put_backoff(first.identity_key, FleetBackOff(time.time() + 5.0, 4))
    attempts = mock.stats.login_attempts
    with pytest.raises(LoginUnavailableError, match="another process's login failed 4 time"):
        second.get_token()
    assert mock.stats.login_attempts == attempts  # it waited the fleet's back-off out instead of trying

    mock.down = False
    second.invalidate()  # the user's word: log in now, whatever the fleet's back-off
    assert second.get_token()
    assert second_store.get_backoff(second.identity_key) is None  # the first success cleared it
    assert first.get_token() and mock.stats.logins == 1  # the other adopted the token from the store
