""""How do I make the client's cached token expire and fetch a new one?" — answered in code.

    python examples/invalidate.py
"""

from __future__ import annotations

import threading
import time

import httpx

from nacos_token_client import NacosTokenAuth
from nacos_token_client.testing import server_from_env


def main() -> None:
    with server_from_env() as server:
        auth = NacosTokenAuth(server.address, server.username, server.password)
        first = auth.get_token()
        info = auth.token_info()
        assert info is not None
        print(f"cached token {info.fingerprint}, good for {info.remaining(time.time()):.0f} s")

        time.sleep(1.1)  # Nacos mints the same token bytes within one second; let a second pass
        # 1. Drop it unconditionally: the next request (or get_token()) logs in again.
        assert auth.invalidate() is True
        print("invalidate() dropped it; token_info() is now", auth.token_info())
        second = auth.get_token()
        again = auth.token_info()
        assert again is not None
        print(f"next get_token() logged in again: new token {again.fingerprint} (different: {second != first})")

        # 2. Compare-and-drop: drop it only if it is still the token you saw fail. Ten threads that all saw the
        #    same bad token cause one re-login, not ten.
        results = []
        threads = [threading.Thread(target=lambda: results.append(auth.invalidate(second))) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"10 threads called invalidate(old_token): {results.count(True)} dropped it, "
              f"{results.count(False)} found it already gone")

        # 3. Usually you need none of this: a token the server rejects is dropped and replaced by itself.
        if server.mock is not None:
            with httpx.Client(auth=auth) as client:
                server.mock.rotate_secret()
                url = f"{server.address}/nacos/v1/console/health/liveness"
                response = client.get(f"{server.address}/nacos/v1/cs/configs",
                                      params={"dataId": "none", "group": "DEFAULT_GROUP"})
                print(f"after a server key rotation a request still got HTTP {response.status_code} "
                      f"(404: the config does not exist, but the token was accepted); health: {client.get(url).text}")
        print(f"logins in all: {auth.stats.logins}")
        auth.close()


if __name__ == "__main__":
    main()
