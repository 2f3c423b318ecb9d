"""Register a service instance, keep it alive with heartbeats through a key rotation, discover it, deregister.

Runs against the embedded mock Nacos server unless NACOS_SERVER_ADDR is set (then NACOS_USERNAME and
NACOS_PASSWORD are used, default nacos/nacos). The embedded server is told to ask for a beat every 0.2 s (real
Nacos asks every 5 s) so the example runs in a second or two:

    python examples/register_service.py
"""

from __future__ import annotations

import asyncio
import time

from nacos_token_client import AsyncNacosTokenClient, NacosTokenClient
from nacos_token_client.testing import server_from_env


def main() -> None:
    with server_from_env() as server:
        print(f"server: {server.address}" + (" (embedded mock)" if server.mock else ""))
        if server.mock is not None:
            server.mock.naming.client_beat_interval = 0.2
        with NacosTokenClient(server.address, server.username, server.password) as client:
            registration = client.register_instance("orders", "10.0.0.7", 8080, metadata={"version": "1.4"})
            time.sleep(0.5)
            print(f"registered; the server asks for a beat every {registration.interval} s")
            if server.mock is not None:
                server.mock.rotate_secret()
                time.sleep(0.6)
                print(f"after a key rotation: longest gap between beats "
                      f"{server.mock.naming.last_beat_gap('10.0.0.7', 8080):.1f} s, unhealthy "
                      f"{server.mock.naming.unhealthy_transitions} times")
            for instance in client.list_instances("orders", healthy_only=True):
                print(f"discovered {instance.ip}:{instance.port} healthy={instance.healthy} "
                      f"metadata={dict(instance.metadata)}")
            registration.deregister()
            print(f"deregistered: {len(client.list_instances('orders'))} instances left")
        asyncio.run(async_register(server.address, server.username, server.password))


async def async_register(address: str, username: str, password: str) -> None:
    async with AsyncNacosTokenClient(address, username, password) as client:
        registration = await client.register_instance("payments", "10.0.0.8", 9090)
        await asyncio.sleep(0.3)
        found = await client.list_instances("payments")
        print(f"async: {len(found)} instance of payments, heartbeat task running: {registration.active}")
        await registration.deregister()


if __name__ == "__main__":
    main()
