"""Config watches, sync and async, over both transports: each change once and in order, removal, key rotation,
server restart, fail-over, 503 bursts, 100 keys in one poll, cancellation, callbacks that raise, snapshots."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from nacos_token_client import (
    AsyncNacosTokenClient,
    ConfigChange,
    MemoryTokenStore,
    NacosTokenClient,
    TokenEvent,
    WatchSettings,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness
from .helpers import RecordingTransport, wait_until

FAST = WatchSettings(hold=1.0, margin=2.0, backoff=(0.02, 0.2))


def sync_client(h: Harness, **options: Any) -> NacosTokenClient:
    options.setdefault("watch", FAST)
    options.setdefault("transport", h.transport)
    return NacosTokenClient(h.address, "nacos", "nacos", store=h.store, clock=h.clock, login_backoff=(0.01, 0.05),
                            **options)


def async_client(h: Harness, **options: Any) -> AsyncNacosTokenClient:
    options.setdefault("watch", FAST)
    options.setdefault("transport", h.transport)
    return AsyncNacosTokenClient(h.address, "nacos", "nacos", store=h.store, clock=h.clock,
                                 login_backoff=(0.01, 0.05), **options)


class Seen:
    """A thread-safe record of delivered changes."""

    def __init__(self) -> None:
        self.changes: list[ConfigChange] = []
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def __call__(self, change: ConfigChange) -> None:
        with self.lock:
            self.changes.append(change)
            self.threads.add(threading.current_thread().name)

    def contents(self, data_id: str | None = None) -> list[str | None]:
        with self.lock:
            return [c.content for c in self.changes if data_id is None or c.data_id == data_id]

    def wait(self, n: int, data_id: str | None = None, timeout: float = 10.0) -> list[str | None]:
        assert wait_until(lambda: len(self.contents(data_id)) >= n, timeout), self.contents()
        return self.contents(data_id)


async def async_wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# -- sync ------------------------------------------------------------------------------------------------------------


def test_each_change_once_in_order_and_removal_is_a_change(h: Harness) -> None:
    seen = Seen()
    with sync_client(h) as client:
        watch = client.add_config_listener("app.yaml", seen)
        assert watch.active and "app.yaml" in repr(watch)
        for n in range(1, 6):
            client.publish_config("app.yaml", f"v{n}")
            seen.wait(n)
        client.publish_config("app.yaml", "v5")  # the same content is no change
        client.remove_config("app.yaml")
        assert seen.wait(6)[-1] is None
        client.publish_config("app.yaml", "back")
        assert seen.wait(7) == ["v1", "v2", "v3", "v4", "v5", None, "back"]
        removed = seen.changes[5]
        assert (removed.data_id, removed.group, removed.tenant, removed.md5) == ("app.yaml", "DEFAULT_GROUP", "", "")
        assert seen.changes[0].md5 == hashlib.md5(b"v1").hexdigest()
        assert seen.threads == {"nacos-config-callbacks"}  # one background thread, in order
        with pytest.raises(AttributeError):
            seen.changes[0].content = "x"  # type: ignore[misc]  # frozen


def test_only_changes_after_registration_are_delivered_and_tenants_are_apart(h: Harness) -> None:
    h.server.set_config("t.yaml", "before")
    h.server.set_config("t.yaml", "dev-before", tenant="dev")
    seen = Seen()
    with sync_client(h) as client:
        client.add_config_listener("t.yaml", seen, tenant="dev")
        client.add_config_listener("other.yaml", seen, group="G2")
        h.server.set_config("t.yaml", "public-after")  # another tenant: not watched
        h.server.set_config("t.yaml", "dev-after", tenant="dev")
        h.server.set_config("other.yaml", "made", group="G2")  # a key created after registration
        seen.wait(2)
        assert sorted(c.content or "" for c in seen.changes) == ["dev-after", "made"]
        assert {(c.tenant, c.group) for c in seen.changes} == {("dev", "DEFAULT_GROUP"), ("", "G2")}


def test_a_key_rotation_before_the_publish_is_healed(h: Harness) -> None:
    seen = Seen()
    with sync_client(h) as client:
        client.add_config_listener("app.yaml", seen)
        for n in range(3):
            h.clock.advance(60)  # rotations minutes apart (seconds apart would be a rejection storm)
            h.server.rotate_secret()  # the client's token dies: the poll and the read are healed and replayed
            h.server.set_config("app.yaml", f"rotated-{n}")
            seen.wait(n + 1)
        assert seen.contents() == ["rotated-0", "rotated-1", "rotated-2"]
        assert client.auth.stats.replays >= 3


def test_hundred_keys_share_one_poll(hi: Harness) -> None:
    recorder = RecordingTransport(hi.server.transport())
    seen = Seen()
    with sync_client(hi, transport=recorder) as client:
        for n in range(100):
            client.add_config_listener(f"k{n}.yaml", seen)
        assert wait_until(lambda: _last_probe_count(recorder) == 100)
        for n in range(100):
            hi.server.set_config(f"k{n}.yaml", f"c{n}")
        seen.wait(100)
        assert sorted(c.data_id for c in seen.changes) == sorted(f"k{n}.yaml" for n in range(100))
        assert all(c.content == "c" + c.data_id[1:-5] for c in seen.changes)


def _last_probe_count(recorder: RecordingTransport) -> int:
    polls = [r for r in recorder.requests if r.url.path.endswith("/configs/listener")]
    if not polls:
        return 0
    form = parse_qs(polls[-1].content.decode())
    return len([line for line in form["Listening-Configs"][0].split("\x01") if line])


def test_cancel_stops_one_listener_and_close_stops_all(h: Harness) -> None:
    cancelled, kept = Seen(), Seen()
    client = sync_client(h)
    watch = client.add_config_listener("gone.yaml", cancelled)
    client.add_config_listener("kept.yaml", kept)
    watch.cancel()
    watch.cancel()  # twice is fine
    assert not watch.active
    h.server.set_config("gone.yaml", "unseen")
    h.server.set_config("kept.yaml", "seen")
    kept.wait(1)
    assert cancelled.contents() == []
    client.close()
    assert not any(t.name in ("nacos-config-watch", "nacos-config-callbacks") and t.is_alive()
                   for t in threading.enumerate())


def test_a_callback_that_raises_is_logged_and_the_watch_goes_on(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    seen = Seen()

    def explode(change: ConfigChange) -> None:
        raise RuntimeError("listener bug")

    with sync_client(h) as client, caplog.at_level(logging.ERROR, "nacos_token_client"):
        client.add_config_listener("app.yaml", explode)
        client.add_config_listener("app.yaml", seen)
        h.server.set_config("app.yaml", "one")
        seen.wait(1)
        h.server.set_config("app.yaml", "two")
        assert seen.wait(2) == ["one", "two"]
    assert "listener for app.yaml raised" in caplog.text


class Faults(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers 503 to the next ``burst`` long polls, then passes everything through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.burst = 0
        self.refused = 0
        self.lock = threading.Lock()

    def _fault(self, request: httpx.Request) -> httpx.Response | None:
        with self.lock:
            if self.burst and request.url.path.endswith("/listener"):
                self.burst -= 1
                self.refused += 1
                return httpx.Response(503, text="server is DOWN now, please try again later!", request=request)
        return None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._fault(request) or self.inner.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._fault(request) or await self.inner.handle_async_request(request)


def test_503_bursts_back_off_and_lose_nothing(h: Harness) -> None:
    faults = Faults(h.transport or httpx.HTTPTransport())
    seen = Seen()
    with sync_client(h, transport=faults) as client:
        client.add_config_listener("app.yaml", seen)
        for n in range(5):
            faults.burst = 3
            h.server.set_config("app.yaml", f"b{n}")
            seen.wait(n + 1)
        assert seen.contents() == [f"b{n}" for n in range(5)]
        assert faults.refused >= 3


# -- loopback only: restart and fail-over ---------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[MockNacosServer, MockNacosServer]]:
    key = MockNacosServer().secret_key  # a cluster shares its signing key
    servers = (MockNacosServer(secret_key=key, poll_min_hold=0), MockNacosServer(secret_key=key, poll_min_hold=0))
    for server in servers:
        server.set_config("app.yaml", "start")
        server.start()
    yield servers
    for server in servers:
        server.stop()


def _standalone(urls: list[str], **options: Any) -> dict[str, Any]:
    return {"server_addresses": urls, "username": "nacos", "password": "nacos", "store": MemoryTokenStore(),
            "login_backoff": (0.01, 0.05), "watch": FAST, **options}


def test_restart_on_the_same_port_and_fail_over(pair: tuple[MockNacosServer, MockNacosServer]) -> None:
    first, second = pair
    port = int(first.url.rsplit(":", 1)[1])
    seen = Seen()
    with NacosTokenClient(**_standalone([first.url])) as client:
        client.add_config_listener("app.yaml", seen)
        first.stop()
        first.set_config("app.yaml", "changed while down")
        first.start(port=port)
        assert seen.wait(1) == ["changed while down"]
        first.set_config("app.yaml", "after restart")
        seen.wait(2)
    seen2 = Seen()
    with NacosTokenClient(**_standalone([first.url, second.url])) as client:
        client.add_config_listener("app.yaml", seen2)
        first.stop()  # fail-over: the next poll goes to the second server
        second.set_config("app.yaml", "from the second server")
        assert seen2.wait(1) == ["from the second server"]


async def test_async_restart_and_fail_over(pair: tuple[MockNacosServer, MockNacosServer]) -> None:
    first, second = pair
    port = int(first.url.rsplit(":", 1)[1])
    seen = Seen()
    async with AsyncNacosTokenClient(**_standalone([first.url, second.url])) as client:
        await client.add_config_listener("app.yaml", seen)
        first.stop()
        second.set_config("app.yaml", "second")
        await async_wait(lambda: seen.contents() == ["second"])
        first.start(port=port)
        second.stop()  # and back to the first
        first.set_config("app.yaml", "first again")
        await async_wait(lambda: seen.contents() == ["second", "first again"])


# -- snapshots -------------------------------------------------------------------------------------------------------


def test_snapshots_answer_when_no_server_can_be_reached(tmp_path: Path) -> None:
    events: list[TokenEvent] = []
    server = MockNacosServer(poll_min_hold=0)
    server.set_config("snap.yaml", "on disk")
    url = server.start()
    options = _standalone([url], snapshot_dir=tmp_path / "snaps", on_event=events.append)
    seen = Seen()
    with NacosTokenClient(**options) as client:
        assert client.get_config("snap.yaml") == "on disk"
        files = [p for p in (tmp_path / "snaps").rglob("*") if p.is_file()]
        assert [p.name for p in files] == ["snap.yaml"]
        assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
        client.add_config_listener("snap.yaml", seen)
        server.set_config("snap.yaml", "changed")
        seen.wait(1)
        assert files[0].read_text() == "changed"  # a change is kept too
        server.stop()
        assert client.get_config("snap.yaml") == "changed"
        with pytest.raises(httpx.ConnectError):
            client.get_config("never-read.yaml")  # no snapshot: the error stands
    assert [e.kind for e in events if e.kind == "snapshot"] == ["snapshot"]
    assert "ConnectError" in (events[-1].error or "")


# -- async -----------------------------------------------------------------------------------------------------------


async def test_async_iterator_plain_and_async_callbacks(h: Harness) -> None:
    plain = Seen()
    awaited: list[str | None] = []
    loop = asyncio.get_running_loop()
    on_loop: list[bool] = []

    async def slow(change: ConfigChange) -> None:
        on_loop.append(asyncio.get_running_loop() is loop)
        await asyncio.sleep(0.01)
        awaited.append(change.content)

    async with async_client(h) as client:
        await client.add_config_listener("app.yaml", plain)
        await client.add_config_listener("app.yaml", slow)
        got: list[str | None] = []

        async def consume() -> None:
            async for change in client.watch_config("app.yaml"):
                got.append(change.content)
                if change.content is None:
                    break

        consumer = asyncio.create_task(consume())
        await async_wait(lambda: bool(client._watch_state.probes()[1]))
        await asyncio.sleep(0.05)  # the iterator registers on its first step
        for content in ("a1", "a2"):
            await client.publish_config("app.yaml", content)
            await async_wait(lambda content=content: got[-1:] == [content])  # type: ignore[misc]
        await client.remove_config("app.yaml")
        await asyncio.wait_for(consumer, 10)
        assert got == ["a1", "a2", None]
        await async_wait(lambda: len(awaited) == 3)
        assert plain.contents() == awaited == ["a1", "a2", None] and all(on_loop)


async def test_async_close_ends_iterators_and_cancel_stops(h: Harness) -> None:
    client = async_client(h)
    got: list[str | None] = []

    async def consume() -> None:
        async for change in client.watch_config("app.yaml"):
            got.append(change.content)

    consumer = asyncio.create_task(consume())
    await async_wait(lambda: bool(client._watch_state.probes()[1]))
    cancelled = Seen()
    watch = await client.add_config_listener("other.yaml", cancelled)
    watch.cancel()
    h.server.set_config("other.yaml", "unseen")
    h.server.set_config("app.yaml", "seen")
    await async_wait(lambda: got == ["seen"])
    await client.aclose()
    await asyncio.wait_for(consumer, 5)  # the iterator ended with the client
    assert cancelled.contents() == []


async def test_async_rotation_and_503_bursts(h: Harness) -> None:
    faults = Faults(h.transport or httpx.AsyncHTTPTransport())
    seen = Seen()
    async with async_client(h, transport=faults) as client:
        await client.add_config_listener("app.yaml", seen)
        for n in range(4):
            if n % 2:
                faults.burst = 2
            else:
                h.server.rotate_secret()
            h.server.set_config("app.yaml", f"r{n}")
            await async_wait(lambda n=n: len(seen.contents()) == n + 1)  # type: ignore[misc]
        assert seen.contents() == ["r0", "r1", "r2", "r3"]
