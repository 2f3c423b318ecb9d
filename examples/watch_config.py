"""Watch configs: a callback per change (sync), an async iterator (async), through a key rotation and a removal.

Runs against the embedded mock Nacos server unless NACOS_SERVER_ADDR is set (then NACOS_USERNAME and
NACOS_PASSWORD are used, default nacos/nacos):

    python examples/watch_config.py
"""

from __future__ import annotations

import asyncio
import threading
import time

from nacos_token_client import AsyncNacosTokenClient, ConfigChange, NacosTokenClient
from nacos_token_client.testing import server_from_env


def sync_watch(address: str, username: str, password: str, rotate: object) -> None:
    changes: list[ConfigChange] = []
    arrived = threading.Condition()

    def on_change(change: ConfigChange) -> None:  # runs on the client's one callback thread, in order
        with arrived:
            changes.append(change)
            arrived.notify_all()
        print(f"  callback: {change.data_id} -> {change.content!r}")

    def wait_for(n: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(changes) >= n, timeout=30), "no change arrived"

    with NacosTokenClient(address, username, password) as client:
        client.publish_config("watched.yaml", "level: info")
        watch = client.add_config_listener("watched.yaml", on_change)
        started = time.monotonic()
        client.publish_config("watched.yaml", "level: debug")
        wait_for(1)
        print(f"publish -> callback in {(time.monotonic() - started) * 1000:.0f} ms")
        if callable(rotate):
            rotate()  # the server's signing key changes: the watcher's token is refused, healed and replayed
            client.publish_config("watched.yaml", "level: warn")
            wait_for(2)
            print("after a key rotation the change still arrived")
        before = len(changes)
        client.remove_config("watched.yaml")
        wait_for(before + 1)
        print(f"removal is a change too: content={changes[-1].content!r}")
        watch.cancel()
        print(f"sync watch saw {len(changes)} changes, none twice")


async def async_watch(address: str, username: str, password: str) -> None:
    async with AsyncNacosTokenClient(address, username, password) as client:
        await client.publish_config("async.yaml", "v0")
        seen: list[str | None] = []
        ready = asyncio.Event()

        async def consume() -> None:
            iterator = client.watch_config("async.yaml")
            ready.set()
            async for change in iterator:
                seen.append(change.content)
                print(f"  async for: {change.content!r}")
                if len(seen) == 3:
                    break  # ends the watch

        task = asyncio.create_task(consume())
        await ready.wait()
        await asyncio.sleep(0.2)  # the iterator registers on its first step
        for n in range(1, 4):
            await client.publish_config("async.yaml", f"v{n}")
            while len(seen) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(task, 30)
        print(f"async iterator saw {seen}")
        await client.remove_config("async.yaml")


def main() -> None:
    with server_from_env() as server:
        print(f"server: {server.address}" + (" (embedded mock)" if server.mock else ""))
        rotate = server.mock.rotate_secret if server.mock is not None else None
        sync_watch(server.address, server.username, server.password, rotate)
        asyncio.run(async_watch(server.address, server.username, server.password))


if __name__ == "__main__":
    main()
