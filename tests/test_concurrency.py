"""Single flight with real threads and real asyncio tasks: herds, failing and cancelled leaders, fork."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import httpx
import pytest

from nacos_token_client import LoginUnavailableError, MemoryTokenStore, NacosTokenAuth
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness
from .helpers import GatedTransport

PARAMS = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}


def thread_herd(n: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            outcome = work()
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


def test_64_threads_log_in_once(h: Harness) -> None:
    h.server.login_delay = 0.2  # a slow login keeps the door open for the herd
    auth = h.auth()
    with h.client(auth) as client:
        results = thread_herd(64, lambda: client.get(h.url("/v1/cs/configs"), params=PARAMS).status_code)
    assert results == [200] * 64
    assert h.server.stats.logins == 1


async def test_500_tasks_log_in_once(h: Harness) -> None:
    h.server.login_delay = 0.2
    auth = h.auth()
    async with h.async_client(auth, limits=httpx.Limits(max_connections=50)) as client:
        responses = await asyncio.gather(*(client.get(h.url("/v1/cs/configs"), params=PARAMS) for _ in range(500)))
    assert {r.status_code for r in responses} == {200}
    assert h.server.stats.logins == 1


def test_threads_and_several_event_loops_share_one_login(hi: Harness) -> None:
    hi.server.login_delay = 0.3
    auth = hi.auth()

    def sync_worker() -> int:
        with httpx.Client(auth=auth, transport=hi.server.transport()) as client:
            return client.get(hi.url("/v1/cs/configs"), params=PARAMS).status_code

    def loop_worker() -> list[int]:
        async def main() -> list[int]:
            async with httpx.AsyncClient(auth=auth, transport=hi.server.transport()) as client:
                responses = await asyncio.gather(*(client.get(hi.url("/v1/cs/configs"), params=PARAMS)
                                                   for _ in range(50)))
            return [r.status_code for r in responses]

        return asyncio.run(main())

    results = thread_herd(16, lambda: sync_worker() if threading.get_ident() % 2 else loop_worker())
    flat = [code for r in results for code in (r if isinstance(r, list) else [r])]
    assert set(flat) == {200}
    assert hi.server.stats.logins == 1


def test_a_failing_leader_fails_its_waiters_at_their_budget_instead_of_hanging(hi: Harness) -> None:
    hi.server.down = True
    hi.server.login_delay = 0.1
    auth = hi.auth(login_attempts=3, login_timeout=1.0)
    started = time.monotonic()
    results = thread_herd(64, auth.get_token)
    assert all(isinstance(r, LoginUnavailableError) for r in results)
    assert time.monotonic() - started < 3.0
    # one login at a time for the whole herd: each attempt takes 0.1 s, so about 10 fit in the budget, not 640
    assert hi.server.stats.login_attempts <= 15


async def test_a_cancelled_leader_never_leaves_waiters_hanging(hi: Harness) -> None:
    gated = GatedTransport(hi.server.transport())
    auth = hi.auth(transport=gated)
    leader = asyncio.create_task(auth.aget_token())
    assert await asyncio.to_thread(gated.login_started.wait, 5)
    waiters = [asyncio.create_task(auth.aget_token()) for _ in range(20)]
    await asyncio.sleep(0.05)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    gated.gate.set()
    tokens = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert len(set(tokens)) == 1
    assert hi.server.stats.login_attempts <= 2


def test_concurrent_rejections_of_one_token_cause_one_login(h: Harness) -> None:
    auth = h.auth()
    with h.client(auth) as client:
        assert client.get(h.url("/v1/cs/configs"), params=PARAMS).status_code == 200
        h.server.rotate_secret()
        h.server.login_delay = 0.1
        results = thread_herd(32, lambda: client.get(h.url("/v1/cs/configs"), params=PARAMS).status_code)
    assert results == [200] * 32
    assert h.server.stats.logins == 2


async def test_concurrent_async_rejections_cause_one_login(hi: Harness) -> None:
    auth = hi.auth()
    async with hi.async_client(auth) as client:
        await client.get(hi.url("/v1/cs/configs"), params=PARAMS)
        hi.server.rotate_secret()
        responses = await asyncio.gather(*(client.get(hi.url("/v1/cs/configs"), params=PARAMS) for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert hi.server.stats.logins == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_fresh_locks_and_no_in_flight_login() -> None:
    server = MockNacosServer()
    with server.run() as url:
        inner = httpx.HTTPTransport()
        gated = GatedTransport(inner)
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore(), transport=gated)
        parent = threading.Thread(target=auth.get_token)
        parent.start()
        assert gated.login_started.wait(5)  # the parent's login is in flight, holding the single flight
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no thread will ever finish the parent's login
            try:
                gated.gate.set()  # the child's own gate (memory is copied): its login may go through
                token = auth.get_token()
                os.write(write_end, b"ok" if token else b"empty")
            except BaseException as exc:
                os.write(write_end, type(exc).__name__.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        answer = os.read(read_end, 100)
        os.close(read_end)
        gated.gate.set()
        parent.join(10)
        assert answer == b"ok" and status == 0
        assert server.stats.logins == 2


def test_cache_hits_are_counted_exactly_across_threads_while_stats_are_read() -> None:
    """The hot path counts its hits without a lock; no hit is lost or double-counted, however the reads interleave."""
    mock = MockNacosServer(token_ttl=18000)
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=MemoryTokenStore(),
                          transport=mock.transport())
    auth.get_token()  # the login: not a hit
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(auth.stats.cache_hits)

    def hits() -> None:
        for _ in range(5_000):
            auth.get_token()

    watcher = threading.Thread(target=reader)
    watcher.start()
    workers = [threading.Thread(target=hits) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    watcher.join()
    assert auth.stats.cache_hits == 40_000
    assert seen == sorted(seen) and len(seen) > 1  # reads never went backwards
