"""Quickstart: log in, read and write configs, survive a server key rotation, and invalidate the cached token.

Runs against the embedded mock Nacos server unless NACOS_SERVER_ADDR is set (then NACOS_USERNAME and
NACOS_PASSWORD are used, default nacos/nacos):

    python examples/quickstart.py
"""

from __future__ import annotations

import time

from nacos_token_client import NacosTokenClient
from nacos_token_client.testing import server_from_env


def main() -> None:
    with server_from_env() as server, NacosTokenClient(server.address, server.username, server.password) as client:
        print(f"server: {server.address}" + (" (embedded mock)" if server.mock else ""))
        client.publish_config("quickstart.yaml", "greeting: hello")
        print("read back:", client.get_config("quickstart.yaml"))
        info = client.token_info()
        assert info is not None
        print(f"logged in once: token {info.fingerprint}, life {info.lifetime:.0f} s, "
              f"background refresh in {info.refresh_at - time.time():.0f} s")

        for _ in range(100):
            client.get_config("quickstart.yaml")
        print(f"100 more requests, still {client.auth.stats.logins} login")

        if server.mock is not None:
            server.mock.rotate_secret()  # every token issued so far is now refused with "Invalid signature"
            print("server rotated its signing key; next request:", client.get_config("quickstart.yaml"),
                  f"(rejected once, re-logged in, replayed: replays={client.auth.stats.replays})")

        client.invalidate()  # "how do I make the cached token expire and fetch a new one?" — this.
        print("invalidated; the next request logs in again:", client.get_config("quickstart.yaml"))
        print(f"logins so far: {client.auth.stats.logins}")
        client.remove_config("quickstart.yaml")


if __name__ == "__main__":
    main()
