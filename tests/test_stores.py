"""Shared token stores: the file and Redis stores on their own, then 16 real processes against the mock server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nacos_token_client import (
    ConfigurationError,
    FileTokenStore,
    MemoryTokenStore,
    NacosTokenAuth,
    RedisTokenStore,
    StoreError,
    TokenStore,
)
from nacos_token_client.lifecycle import RefreshPolicy, Token
from nacos_token_client.stores import AsyncFleetBackOffStore, AsyncTokenStore, FleetBackOff, FleetBackOffStore
from nacos_token_client.testing import MockNacosServer

from .conftest import FakeClock
from .redis_servers import RedisMissing, RedisServer, free_port

PARAMS = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}
FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")


def a_token(value: str = "tok", life: float = 3600.0, issued_at: float | None = None) -> Token:
    return RefreshPolicy().schedule(value, issued_at=time.time() if issued_at is None else issued_at,
                                    token_ttl=life, jwt_exp=None)



@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}:{time.monotonic_ns()}:".replace("[", "(").replace("]", ")")

# -- the file store ---------------------------------------------------------------------------------------------

def test_file_store_round_trip_and_permissions(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "sub" / "tokens.json")
    assert store.get("k") is None
    token = a_token()
    store.put("k", token)
    got = store.get("k")
    assert got is not None and got.value == token.value and got.expires_at == token.expires_at
    assert got.source == "store"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert "password" not in store.path.read_text()
    assert store.delete("k", "other") is False and store.get("k") is not None
    assert store.delete("k", token.value) is True and store.get("k") is None
    assert store.delete("k") is False


def test_file_store_replaces_the_file_atomically(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    store.put("a", a_token("one"))
    inode = os.stat(store.path).st_ino
    store.put("b", a_token("two"))
    assert os.stat(store.path).st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert sorted(json.loads(store.path.read_text())) == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_file_store_drops_expired_entries_on_write(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    store.put("old", a_token("old", life=1, issued_at=time.time() - 100))
    store.put("new", a_token("new"))
    assert sorted(json.loads(store.path.read_text())) == ["new"]


@pytest.mark.parametrize("content", [b"", b"{", b'{"k": {"value": "x"', b"[1, 2]", b"\xff\xfe", b"null"])
def test_corrupt_or_truncated_files_are_ignored_and_rewritten(tmp_path: Path, content: bytes,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    store = FileTokenStore(path)
    with caplog.at_level(logging.WARNING, "nacos_token_client"):
        assert store.get("k") is None
    assert "corrupt" in caplog.text
    store.put("k", a_token())
    assert store.get("k") is not None and isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize("entry", [
    {"value": "x"}, {"value": 5, "issued_at": 1, "expires_at": 2, "refresh_at": 1, "mandatory_at": 1,
                     "usable_until": 2},
    {"value": "x", "issued_at": 10, "expires_at": 2, "refresh_at": 1, "mandatory_at": 1, "usable_until": 2},
    {"value": "x", "issued_at": "soon", "expires_at": 2, "refresh_at": 1, "mandatory_at": 1, "usable_until": 2},
    "a string", None,
])
def test_hostile_entries_are_not_tokens(tmp_path: Path, entry: Any) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"k": entry}))
    assert FileTokenStore(path).get("k") is None


def _hold_file_lock(path: str, ready: Any) -> None:
    store = FileTokenStore(path)
    with store.lock("nacos-token:abc", 5):
        ready.set()
        time.sleep(60)


def test_a_killed_lock_holder_does_not_block_the_others(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    ready = FORK.Event()
    holder = FORK.Process(target=_hold_file_lock, args=(str(store.path), ready))
    holder.start()
    assert ready.wait(10)
    with store.lock("nacos-token:abc", 0.2) as acquired:
        assert acquired is False  # held by the other process: the wait is bounded
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    started = time.monotonic()
    with store.lock("nacos-token:abc", 5) as acquired:
        assert acquired is True and time.monotonic() - started < 1  # the kernel released it with the process


def _write_many(path: str, name: str) -> None:
    store = FileTokenStore(path)
    for i in range(30):
        store.put(name, a_token(f"{name}-{i}"))


def test_concurrent_writers_never_lose_or_corrupt_entries(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    writers = [FORK.Process(target=_write_many, args=(str(path), f"key{i}")) for i in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    data = json.loads(path.read_text())
    assert sorted(data) == sorted(f"key{i}" for i in range(8))
    assert all(entry["value"].endswith("-29") for entry in data.values())



# -- the Redis store: one server, a Cluster, a Sentinel-managed master; sync and redis.asyncio ----------------------

KINDS = ["single", "cluster", "sentinel"]


@pytest.fixture(params=KINDS)
def make_redis(request: pytest.FixtureRequest, prefix: str) -> Callable[..., RedisTokenStore]:
    """Builds stores on one kind of real Redis deployment (session-scoped servers, one prefix per test)."""
    kind = request.param
    if kind == "sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        return functools.partial(RedisTokenStore.from_sentinel, sentinel.sentinels, sentinel.service, prefix=prefix)
    server = request.getfixturevalue("redis_single" if kind == "single" else "redis_cluster")
    return functools.partial(RedisTokenStore, server.url, prefix=prefix)


def own_redis(directory: Path) -> RedisServer:
    try:
        return RedisServer(directory)
    except RedisMissing as exc:
        pytest.skip(str(exc))


def test_redis_store_round_trip_expiry_and_compare_and_delete(make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis()
    token = a_token(life=100)
    store.put("k", token)
    got = store.get("k")
    assert got is not None and got.value == token.value and got.usable_until == token.usable_until
    ttl = store.redis.pttl(store.token_key("k"))
    assert isinstance(ttl, int) and 98_000 < ttl <= 100_000  # the entry expires with the token
    assert store.delete("k", "someone-else") is False and store.get("k") is not None
    assert store.delete("k", token.value) is True and store.get("k") is None
    store.put("gone", a_token(life=1, issued_at=time.time() - 10))
    assert store.get("gone") is None
    store.put("k", token)
    assert store.delete("k") is True and store.delete("k") is False


async def test_async_redis_store_serves_the_loop_and_shares_entries_with_sync_callers(
        make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis(asyncio=True)
    assert isinstance(store, AsyncTokenStore) and isinstance(store, AsyncFleetBackOffStore) and store.serves_async()
    token = a_token(life=100)
    await store.aput("k", token)
    got = await store.aget("k")
    assert got is not None and got.value == token.value
    seen = store.get("k")  # the sync client sees the same entry
    assert seen is not None and seen.expires_at == token.expires_at
    assert await store.adelete("k", "someone-else") is False
    assert await store.adelete("k", token.value) is True and await store.aget("k") is None
    until = time.time() + 5
    await store.aput_backoff("k", FleetBackOff(until, 3))
    assert store.get_backoff("k") == FleetBackOff(until, 3) == await store.aget_backoff("k")
    await store.aclear_backoff("k")
    assert await store.aget_backoff("k") is None
    await store.aclose()


def test_redis_store_ignores_hostile_entries(make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis()
    store.redis.hset(store.token_key("k"), mapping={"value": "x", "issued_at": "not a number"})
    assert store.get("k") is None
    for raw in ["{", "[1]", '{"until": "soon", "failures": 1}', json.dumps({"until": time.time() + 5, "failures": 0}),
                json.dumps({"until": time.time() + 3600, "failures": 1})]:
        store.redis.set(store.backoff_key("k"), raw)
        assert store.get_backoff("k") is None, raw


def test_fleet_backoff_records_expire_at_their_end(make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis()
    assert isinstance(store, FleetBackOffStore)
    assert store.get_backoff("k") is None
    until = time.time() + 2.5
    store.put_backoff("k", FleetBackOff(until, 2))
    assert store.get_backoff("k") == FleetBackOff(until, 2)
    ttl = store.redis.pttl(store.backoff_key("k"))
    assert isinstance(ttl, int) and 2_000 < ttl <= 2_501  # PXAT: gone at `until`, by Redis itself
    store.clear_backoff("k")
    assert store.get_backoff("k") is None and not store.redis.exists(store.backoff_key("k"))
    store.put_backoff("k", FleetBackOff(time.time() - 1, 2))  # over already: nothing to record
    store.put_backoff("k", FleetBackOff(time.time() + 3600, 2))  # more than a store may impose: not recorded
    assert not store.redis.exists(store.backoff_key("k"))


def test_an_identitys_keys_share_one_cluster_slot(redis_cluster: Any, prefix: str) -> None:
    import redis

    store = RedisTokenStore(redis_cluster.url, prefix=prefix)
    assert repr(store).startswith("RedisTokenStore(cluster 127.0.0.1:")
    keys = [store.token_key("id"), store.lock_key("id"), store.backoff_key("id")]
    assert len({store.redis.keyslot(k) for k in keys}) == 1
    assert len({store.redis.keyslot(store.token_key(f"id{i}")) for i in range(60)}) > 30  # identities spread
    store.put("id", a_token())
    store.put_backoff("id", FleetBackOff(time.time() + 5, 1))
    with store.lock("id", 1) as acquired:
        assert acquired is True
        holders = []
        for port in redis_cluster.ports:  # each master on its own: which of them holds the identity's keys
            node = redis.Redis(port=port)
            holders.append(sorted(k.decode() for k in node.keys("{" + prefix + "*")))  # type: ignore[union-attr]
            node.close()
    assert sorted(holders, key=len) == [[], [], sorted(keys)]


def test_redis_lock_is_exclusive_and_expires_when_its_holder_dies(make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis(lock_ttl=1.0)
    with store.lock("k", 1) as first:
        assert first is True
        with store.lock("k", 0.2) as second:
            assert second is False
    ready = FORK.Event()

    def hold() -> None:
        with make_redis(lock_ttl=1.0).lock("k", 1):
            ready.set()
            time.sleep(60)

    holder = FORK.Process(target=hold)
    holder.start()
    assert ready.wait(10)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    started = time.monotonic()
    with store.lock("k", 5) as acquired:
        waited = time.monotonic() - started
    assert acquired is True and waited < 2.5  # no longer than the lock's expiry


async def test_async_redis_lock_excludes_sync_and_async_holders(make_redis: Callable[..., RedisTokenStore]) -> None:
    store = make_redis(asyncio=True)
    async with store.alock("k", 1) as first:
        assert first is True
        with store.lock("k", 0.1) as second:
            assert second is False
        async with store.alock("k", 0.1) as third:
            assert third is False
    assert not store.redis.exists(store.lock_key("k"))  # released on the way out
    with store.lock("k", 1) as first:
        async with store.alock("k", 0.1) as second:
            assert first is True and second is False
    await store.aclose()


def test_an_async_client_needs_a_sync_twin_and_serves_only_its_own_loop(redis_single: Any, prefix: str) -> None:
    import redis
    import redis.asyncio

    with pytest.raises(ConfigurationError, match="sync_client="):
        RedisTokenStore(redis.asyncio.Redis.from_url(redis_single.url))
    with pytest.raises(ConfigurationError, match=re.escape("'{' or '}'")):
        RedisTokenStore(redis_single.url, prefix="a{b}:")
    store = RedisTokenStore(redis.asyncio.Redis.from_url(redis_single.url), prefix=prefix,
                            sync_client=redis.Redis.from_url(redis_single.url))
    assert store.serves_async() is False  # no running loop

    async def round_trip() -> tuple[bool, str | None]:
        serves = store.serves_async()
        if serves:
            await store.aput("k", a_token("from-the-loop"))
        got = await store.aget("k") if serves else store.get("k")
        return serves, got.value if got else None

    assert asyncio.run(round_trip()) == (True, "from-the-loop")  # the first loop it is used on is its loop
    assert asyncio.run(round_trip()) == (False, "from-the-loop")  # another loop: the sync client, on threads


@pytest.mark.parametrize("kind", KINDS)
async def test_unreachable_redis_means_no_store_not_an_error(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    if kind == "sentinel":
        store = RedisTokenStore.from_sentinel([("127.0.0.1", port)], "gone", socket_timeout=0.2, asyncio=True)
    else:
        scheme = "redis+cluster" if kind == "cluster" else "redis"
        store = RedisTokenStore(f"{scheme}://127.0.0.1:{port}/0", socket_timeout=0.2, asyncio=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "nacos_token_client"):
        assert store.get("k") is None
        store.put("k", a_token())
        assert store.delete("k", "v") is False
        assert store.get_backoff("k") is None
        store.put_backoff("k", FleetBackOff(time.time() + 5, 1))
        store.clear_backoff("k")
        with pytest.raises(StoreError), store.lock("k", 0.1):
            pass  # the caller logs in without the lock (and does not try it again for this login)
        assert await store.aget("k") is None
        assert await store.adelete("k") is False
        assert await store.aget_backoff("k") is None
        with pytest.raises(StoreError):
            async with store.alock("k", 0.1):
                pass
    assert "unreachable" in caplog.text
    assert time.monotonic() - started < 10
    assert caplog.text.count("unreachable") == 1  # rate-limited


def test_redis_going_away_mid_run_is_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    redis_server = own_redis(tmp_path)
    server = MockNacosServer()
    server.set_config("app.yaml", "x")
    with server.run() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=RedisTokenStore(redis_server.url, socket_timeout=0.2))
        with httpx.Client(auth=auth) as client:
            assert client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code == 200
            redis_server.stop()
            server.rotate_secret()
            with caplog.at_level(logging.WARNING, "nacos_token_client"):
                assert client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code == 200
                auth.invalidate()
                assert client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code == 200
    assert "unreachable" in caplog.text and server.stats.logins == 3


# -- async callers on a redis.asyncio store: no worker thread --------------------------------------------------------

def _store_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("nacos-token-store", "nacos-token-unlock"))]


async def test_a_thousand_tasks_on_an_async_redis_store_log_in_once_per_cycle_without_threads(
        redis_cluster: Any, prefix: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from nacos_token_client import refresher

    monkeypatch.setattr(refresher, "_store_executor", None)  # whatever other tests left: this one must not need it
    threads_before = _store_threads()
    store = RedisTokenStore(redis_cluster.url, prefix=prefix, asyncio=True)
    server = MockNacosServer(clock=clock)
    server.set_config("app.yaml", "x")
    server.login_delay = 0.05
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=store, clock=clock,
                          transport=server.transport())
    url = "http://nacos.test:8848/nacos/v1/cs/configs"
    async with httpx.AsyncClient(auth=auth, transport=server.transport()) as client:
        statuses = await asyncio.gather(*(client.get(url, params=PARAMS) for _ in range(1000)))
        assert [r.status_code for r in statuses] == [200] * 1000
        assert server.stats.logins == 1
        stored = store.get(auth.identity_key)
        info = auth.token_info()
        assert stored is not None and info is not None and stored.fingerprint == info.fingerprint
        clock.advance(2)
        server.rotate_secret()  # every task's token is rejected at once: one login, through the store's lock
        statuses = await asyncio.gather(*(client.get(url, params=PARAMS) for _ in range(1000)))
        assert [r.status_code for r in statuses] == [200] * 1000
        assert server.stats.logins == 2
    assert refresher._store_executor is None  # no store call hopped to a worker thread
    assert _store_threads() == threads_before
    assert not store.redis.exists(store.lock_key(auth.identity_key))
    await store.aclose()


@pytest.mark.parametrize("native", [True, False], ids=["redis.asyncio", "worker-threads"])
async def test_a_cancelled_lock_waiter_releases_the_lock_it_wins(redis_single: Any, prefix: str, clock: FakeClock,
                                                                  native: bool) -> None:
    store = RedisTokenStore(redis_single.url, prefix=prefix, asyncio=native)  # lock_ttl: 60 s
    assert store.serves_async() is native
    holder = RedisTokenStore(redis_single.url, prefix=prefix)
    server = MockNacosServer(clock=clock)
    server.login_delay = 0.3
    auth = NacosTokenAuth("http://nacos.test:8848", "nacos", "nacos", store=store, clock=clock,
                          transport=server.transport(), login_timeout=30)
    key = auth.identity_key
    # cancelled while its attempt still polls a held lock, which is then freed (the attempt wins it after its waiter
    # is gone); or cancelled just after the lock was freed; or while it logs in under the lock
    for order, cancel_after in (("cancel-first", 0.0), ("cancel-first", 0.0), ("free-first", 0.01),
                                ("free-first", 0.15)):
        await auth.ainvalidate()
        clock.advance(1.0)
        held = holder.lock(key, 1)
        assert held.__enter__() is True
        task = asyncio.create_task(auth.aget_token())
        await asyncio.sleep(0.25)  # the task waits for the lock, in short attempts
        if order == "cancel-first":
            task.cancel()
            held.__exit__(None, None, None)  # free within the attempt's slice: the orphaned attempt wins it
        else:
            held.__exit__(None, None, None)  # free: the waiter's next poll wins it within ~20 ms
            await asyncio.sleep(cancel_after)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # the orphaned attempt has won (or given up) by now
        started = time.monotonic()
        while store.redis.exists(store.lock_key(key)) and time.monotonic() - started < 2:
            await asyncio.sleep(0.01)
        assert not store.redis.exists(store.lock_key(key)), (order, cancel_after)  # released, not after 60 s
        with holder.lock(key, 0.1) as again:
            assert again is True
    await store.aclose()


# -- many processes, one login ------------------------------------------------------------------------------------

def _fleet_member(index: int, url: str, make_store: Callable[[], TokenStore], barrier: Any, results: Any) -> None:
    try:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=make_store(), store_sync_interval=0.1)
        with httpx.Client(auth=auth) as client:
            def request() -> int:
                return client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code

            barrier.wait()
            first = request()  # phase 1: everybody at once, nobody has a token
            barrier.wait()
            barrier.wait()  # the parent rotated the server's key in between
            second = request()  # phase 2: everybody's token is rejected at once
            barrier.wait()
            before = auth.token_info()
            if index == 0:
                time.sleep(1.1)  # Nacos mints identical token bytes within one second (and one key)
                auth.invalidate()  # phase 3: one process drops the token and logs in again
                request()
            barrier.wait()
            started = time.monotonic()
            deadline = started + 5
            while index != 0 and time.monotonic() < deadline:  # the others find the new token by themselves
                info = auth.token_info()
                if info is not None and before is not None and info.fingerprint != before.fingerprint:
                    break
                request()
                time.sleep(0.02)
            info = auth.token_info()
            results.put((index, first, second, info.fingerprint if info else None,
                         round(time.monotonic() - started, 2), info.source if info else None))
    except BaseException as exc:
        results.put((index, repr(exc), None, None, None, None))


def run_fleet(make_store: Callable[[], TokenStore], processes: int = 16,
              context: Any = FORK) -> tuple[list[Any], list[int]]:
    server = MockNacosServer()
    server.set_config("app.yaml", "x")
    server.login_delay = 0.1  # a slow login keeps the door open for the herd
    logins = []
    with server.run() as url:
        barrier = context.Barrier(processes + 1)
        results = context.Queue()
        members = [context.Process(target=_fleet_member, args=(i, url, make_store, barrier, results))
                   for i in range(processes)]
        for m in members:
            m.start()
        barrier.wait(90)  # spawned processes start from scratch: give them time on a loaded 2-core machine
        barrier.wait(30)
        logins.append(server.stats.logins)
        time.sleep(1.1)  # Nacos tokens are deterministic within a second: the next login must mint a new one
        server.rotate_secret()
        barrier.wait(30)
        barrier.wait(30)
        logins.append(server.stats.logins)
        barrier.wait(30)
        outcomes = [results.get(timeout=30) for _ in members]
        for m in members:
            m.join(30)
        logins.append(server.stats.logins)
    return outcomes, logins


def _file_store(path: str) -> Callable[[], TokenStore]:
    return lambda: FileTokenStore(path)


@pytest.mark.parametrize("kind", ["file", "redis", "cluster"])
def test_sixteen_processes_log_in_once_per_cycle(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    context: Any = FORK
    prefix = f"fleet:{time.monotonic_ns()}:"
    make_store: Callable[[], TokenStore]
    if kind == "file":
        make_store = _file_store(str(tmp_path / "tokens.json"))
    elif kind == "redis":
        make_store = functools.partial(RedisTokenStore, request.getfixturevalue("redis_single").url, prefix=prefix)
    else:  # 16 spawned processes (nothing inherited) on a 3-master Cluster
        make_store = functools.partial(RedisTokenStore, request.getfixturevalue("redis_cluster").url, prefix=prefix)
        context = SPAWN
    outcomes, logins = run_fleet(make_store, context=context)
    assert [o[1] for o in outcomes] == [200] * 16, outcomes
    assert [o[2] for o in outcomes] == [200] * 16, outcomes
    # phase 1: one login for all; phase 2 (key rotation): one more; phase 3 (invalidate in one process): one more
    assert logins == [1, 2, 3], logins
    fingerprints = {o[3] for o in outcomes}
    assert len(fingerprints) == 1 and None not in fingerprints, outcomes  # all use process 0's new token
    assert max(o[4] for o in outcomes) < 2.0, outcomes  # found through the store within a few sync intervals


def test_without_a_shared_store_every_process_logs_in() -> None:
    outcomes, logins = run_fleet(MemoryTokenStore, processes=4)
    assert [o[1] for o in outcomes] == [200] * 4
    assert logins[0] == 4
