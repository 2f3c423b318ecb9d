"""Quickstart: log in, read and write configs, survive a server key rotation, and invalidate the cached token.

Runs against the embedded mock Nacos server unless NACOS_SERVER_ADDR is set (then NACOS_USERNAME and
NACOS_PASSWORD are used, default nacos/nacos):

    python examples/quickstart.py
"""

from __future__ import annotations

import os
import time

from nacos_token_client import NacosTokenClient
from nacos_token_client.testing import MockNacosServer


def main() -> None:
    address = os.environ.get("NACOS_SERVER_ADDR")
    mock: MockNacosServer | None = None
    if not address:
        mock = MockNacosServer(users={"nacos": "nacos"})
        address = mock.start()
        print(f"started the embedded mock Nacos server on {address}")
    username = os.environ.get("NACOS_USERNAME", "nacos")
    password = os.environ.get("NACOS_PASSWORD", "nacos")

    try:
        with NacosTokenClient(address, username, password) as client:
            client.publish_config("quickstart.yaml", "greeting: hello")
            print("read back:", client.get_config("quickstart.yaml"))
            info = client.token_info()
            assert info is not None
            print(f"logged in once: token {info.fingerprint}, life {info.lifetime:.0f} s, "
                  f"background refresh in {info.refresh_at - time.time():.0f} s")

            for _ in range(100):
                client.get_config("quickstart.yaml")
            print(f"100 more requests, still {client.auth.stats.logins} login (cache hits: "
                  f"{client.auth.stats.cache_hits})")

            if mock is not None:
                mock.rotate_secret()  # every token issued so far is now refused with "Invalid signature"
                print("server rotated its signing key; next request:", client.get_config("quickstart.yaml"),
                      f"(rejected once, re-logged in, replayed: replays={client.auth.stats.replays})")

            client.invalidate()  # "how do I make the cached token expire and fetch a new one?" — this.
            print("invalidated; next request logs in again:", client.get_config("quickstart.yaml"))
            after = client.token_info()
            assert after is not None
            print(f"new token {after.fingerprint}; logins so far: {client.auth.stats.logins}")
            client.remove_config("quickstart.yaml")
    finally:
        if mock is not None:
            mock.stop()


if __name__ == "__main__":
    main()
