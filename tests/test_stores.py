"""Shared token stores: the file and Redis stores on their own, then 16 real processes against the mock server."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nacos_token_client import FileTokenStore, MemoryTokenStore, NacosTokenAuth, RedisTokenStore, StoreError, TokenStore
from nacos_token_client.lifecycle import RefreshPolicy, Token
from nacos_token_client.testing import MockNacosServer

PARAMS = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}
FORK = multiprocessing.get_context("fork")


def a_token(value: str = "tok", life: float = 3600.0, issued_at: float | None = None) -> Token:
    return RefreshPolicy().schedule(value, issued_at=time.time() if issued_at is None else issued_at,
                                    token_ttl=life, jwt_exp=None)


# -- a real redis-server on a free loopback port ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server is not installed (CI installs it with apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen([executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(directory)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}:{time.monotonic_ns()}:"


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


# -- the Redis store ----------------------------------------------------------------------------------------------

def test_redis_store_round_trip_expiry_and_compare_and_delete(redis_url: str, prefix: str) -> None:
    store = RedisTokenStore(redis_url, prefix=prefix)
    token = a_token(life=100)
    store.put("k", token)
    got = store.get("k")
    assert got is not None and got.value == token.value and got.usable_until == token.usable_until
    ttl = store.redis.pttl(prefix + "k")
    assert isinstance(ttl, int) and 98_000 < ttl <= 100_000  # the entry expires with the token
    assert store.delete("k", "someone-else") is False and store.get("k") is not None
    assert store.delete("k", token.value) is True and store.get("k") is None
    store.put("gone", a_token(life=1, issued_at=time.time() - 10))
    assert store.get("gone") is None


def test_redis_store_ignores_hostile_entries(redis_url: str, prefix: str) -> None:
    store = RedisTokenStore(redis_url, prefix=prefix)
    store.redis.hset(prefix + "k", mapping={"value": "x", "issued_at": "not a number"})
    assert store.get("k") is None


def test_redis_lock_is_exclusive_and_expires_when_its_holder_dies(redis_url: str, prefix: str) -> None:
    store = RedisTokenStore(redis_url, prefix=prefix, lock_ttl=1.0)
    with store.lock("k", 1) as first:
        assert first is True
        with store.lock("k", 0.2) as second:
            assert second is False
    ready = FORK.Event()

    def hold() -> None:
        with RedisTokenStore(redis_url, prefix=prefix, lock_ttl=1.0).lock("k", 1):
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


def test_an_async_redis_client_is_a_clear_configuration_error() -> None:
    import redis.asyncio

    from nacos_token_client import ConfigurationError

    with pytest.raises(ConfigurationError, match="sync"):
        RedisTokenStore(redis.asyncio.Redis())  # type: ignore[arg-type]  # the mistake under test


def test_unreachable_redis_means_no_store_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisTokenStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    with caplog.at_level(logging.WARNING, "nacos_token_client"):
        assert store.get("k") is None
        store.put("k", a_token())
        assert store.delete("k", "v") is False
        with pytest.raises(StoreError), store.lock("k", 0.1):
            pass  # the caller logs in without the lock (and does not try it again for this login)
    assert "unreachable" in caplog.text


def test_redis_going_away_mid_run_is_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    redis_server = RedisServer(tmp_path)
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


def run_fleet(make_store: Callable[[], TokenStore], processes: int = 16) -> tuple[list[Any], list[int]]:
    server = MockNacosServer()
    server.set_config("app.yaml", "x")
    server.login_delay = 0.1  # a slow login keeps the door open for the herd
    logins = []
    with server.run() as url:
        barrier = FORK.Barrier(processes + 1)
        results = FORK.Queue()
        members = [FORK.Process(target=_fleet_member, args=(i, url, make_store, barrier, results))
                   for i in range(processes)]
        for m in members:
            m.start()
        barrier.wait(30)
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


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_sixteen_processes_log_in_once_per_cycle(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "file":
        make_store = _file_store(str(tmp_path / "tokens.json"))
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"fleet:{time.monotonic_ns()}:"

        def make_store() -> TokenStore:
            return RedisTokenStore(url, prefix=prefix)

    outcomes, logins = run_fleet(make_store)
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
