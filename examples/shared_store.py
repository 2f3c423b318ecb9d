"""Several processes, one login: a FileTokenStore shares the token between the processes of a machine
(RedisTokenStore does the same for a fleet).

    python examples/shared_store.py
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from typing import Any

import httpx

from nacos_token_client import FileTokenStore, NacosTokenAuth
from nacos_token_client.testing import server_from_env

WORKERS = 4


def worker(index: int, address: str, username: str, password: str, store_path: str, barrier: Any,
           results: Any) -> None:
    auth = NacosTokenAuth(address, username, password, store=FileTokenStore(store_path))
    with httpx.Client(auth=auth) as client:
        barrier.wait()  # all start at once, none has a token yet
        response = client.get(f"{address}/nacos/v1/console/health/liveness")
        info = auth.token_info()
        results.put((index, os.getpid(), response.status_code, info.fingerprint if info else None,
                     info.source if info else None))


def main() -> None:
    with server_from_env() as server, tempfile.TemporaryDirectory() as directory:
        store_path = os.path.join(directory, "tokens.json")
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(WORKERS)
        results = context.Queue()
        processes = [context.Process(target=worker, args=(i, server.address, server.username, server.password,
                                                          store_path, barrier, results)) for i in range(WORKERS)]
        for p in processes:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in processes)
        for p in processes:
            p.join(30)
        for index, pid, status, fingerprint, source in outcomes:
            print(f"worker {index} (pid {pid}): HTTP {status}, token {fingerprint} from the {source}")
        print(f"{WORKERS} processes share {len({o[3] for o in outcomes})} token")
        if server.mock is not None:
            print(f"the server saw {server.mock.stats.logins} login for all of them")
        print(f"the store file is mode {oct(os.stat(store_path).st_mode & 0o777)} and holds no password")


if __name__ == "__main__":
    main()
