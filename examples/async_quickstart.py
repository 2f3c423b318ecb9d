"""Async: one AsyncNacosTokenClient, 500 concurrent requests, one login; a key rotation survived.

    python examples/async_quickstart.py
"""

from __future__ import annotations

import asyncio

from nacos_token_client import AsyncNacosTokenClient
from nacos_token_client.testing import server_from_env


async def main() -> None:
    with server_from_env() as server:
        async with AsyncNacosTokenClient(server.address, server.username, server.password) as client:
            await client.publish_config("async.yaml", "mode: async")
            contents = await asyncio.gather(*(client.get_config("async.yaml") for _ in range(500)))
            print(f"500 concurrent requests: {contents.count('mode: async')} ok, "
                  f"{client.auth.stats.logins} login")
            if server.mock is not None:
                server.mock.rotate_secret()
                contents = await asyncio.gather(*(client.get_config("async.yaml") for _ in range(100)))
                print(f"after a key rotation: {contents.count('mode: async')} of 100 ok, "
                      f"{client.auth.stats.logins} logins in all (one re-login for the whole burst)")
            await client.remove_config("async.yaml")


if __name__ == "__main__":
    asyncio.run(main())
