"""nacos-sdk-python 3.x (asyncio) token handling, measured on the mock server: a cold-start herd and a key rotation.

Not part of the test suite: 3.x and the 2.0.11 pinned in the dev extra are one distribution, so it needs a venv of
its own::

    python3 -m venv /tmp/nacos-v3 && /tmp/nacos-v3/bin/pip install "nacos-sdk-python>=3,<4" -e .
    /tmp/nacos-v3/bin/python benchmarks/official_v3.py [--tasks 64] [--seconds 2] [--workers 8]

What is measured, and how. 3.x sends configs and instances over gRPC (port 8848 + 1000), which the mock does not
speak; only its login is HTTP. Every 3.x request takes its token from ``NacosServerConnector.inject_security_info``
(the config, naming and AI proxies all call it), which asks ``AuthClient.get_access_token()``. So the script builds
3.x's own ``NacosServerConnector`` and ``HttpAgent`` exactly as its config proxy does (the constructor starts one
login task, as creating a config service does) and sends each request as ``GET /v1/cs/configs`` with the header
that ``inject_security_info`` filled in, through 3.x's ``HttpAgent``. The token logic measured is 3.x's, unchanged;
only the request's transport is HTTP instead of gRPC. The same steps run with ``AsyncNacosTokenClient`` for
contrast. Counts come from the mock server's own statistics (logins it answered, requests it rejected).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from v2.nacos.common.client_config_builder import ClientConfigBuilder
from v2.nacos.transport.http_agent import HttpAgent
from v2.nacos.transport.nacos_server_connector import NacosServerConnector

from nacos_token_client import AsyncNacosTokenClient
from nacos_token_client.testing import MockNacosServer

DATA_ID = "bench.yaml"
Request = Callable[[], Awaitable[bool]]


def official_v3(url: str) -> tuple[Request, Any]:
    """A request function built from 3.x's own connector (token source) and HTTP agent, and the connector."""
    host = url.removeprefix("http://")
    config = (ClientConfigBuilder().server_address(host).username("nacos").password("nacos")
              .timeout_ms(10_000).build())
    logger = logging.getLogger("nacos-sdk-python-3")  # its AuthClient logs the token at INFO: keep it quiet
    logger.setLevel(logging.WARNING)
    agent = HttpAgent(logger, config.tls_config, 10)  # seconds: aiohttp's timeout unit
    connector = NacosServerConnector(logger, config, agent)  # starts one get_access_token(True) task, as 3.x does

    async def request() -> bool:
        headers: dict[str, str] = {}
        await connector.inject_security_info(headers)
        body, error = await agent.request(f"{url}/nacos/v1/cs/configs", "GET", headers,
                                          {"dataId": DATA_ID, "group": "DEFAULT_GROUP"}, None)
        return error is None and body == b"v: 1"

    return request, connector


def ours(client: AsyncNacosTokenClient) -> Request:
    async def request() -> bool:
        try:
            return await client.get_config(DATA_ID) == "v: 1"
        except Exception:
            return False

    return request


async def herd(server: MockNacosServer, request: Request, tasks: int) -> tuple[int, int]:
    """Logins the server answered, and requests that failed, when ``tasks`` tasks start at once on a cold client."""
    before = server.stats.logins
    results = await asyncio.gather(*(request() for _ in range(tasks)))
    return server.stats.logins - before, results.count(False)


async def rotation(server: MockNacosServer, request: Request, seconds: float, workers: int) -> dict[str, Any]:
    """Rotate the server's key on a warm client, then request in a loop from ``workers`` tasks for ``seconds``."""
    assert await request(), "the client is not warm"
    logins_before = server.stats.logins
    server.rotate_secret()
    ok = failed = 0
    first_ok: float | None = None
    started = time.monotonic()

    async def worker() -> None:
        nonlocal ok, failed, first_ok
        while time.monotonic() - started < seconds:
            if await request():
                ok += 1
                if first_ok is None and failed:
                    first_ok = time.monotonic() - started
            else:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"ok": ok, "failed": failed, "relogins": server.stats.logins - logins_before,
            "recovered_after_s": None if first_ok is None and failed else round(first_ok or 0.0, 3)}


async def main(tasks: int, seconds: float, workers: int) -> None:
    version = importlib.metadata.version("nacos-sdk-python")
    for name in (f"nacos-sdk-python {version}", "nacos-token-client"):
        server = MockNacosServer(token_ttl=18000)
        server.set_config(DATA_ID, "v: 1")
        with server.run() as url:
            if name.startswith("nacos-sdk-python"):
                request, connector = official_v3(url)
            else:
                client = AsyncNacosTokenClient(url, "nacos", "nacos")
                request, connector = ours(client), None
            logins, failed = await herd(server, request, tasks)
            note = " (one per task, plus the one its constructor starts)" if connector is not None else ""
            print(f"{name}: cold start, {tasks} concurrent tasks: {logins} logins{note}, {failed} failed requests")
            result = await rotation(server, request, seconds, workers)
            recovered = result["recovered_after_s"]
            outcome = ("no request failed" if not result["failed"] else "never recovered" if recovered is None
                       else f"recovered after {recovered} s")
            print(f"{name}: key rotation, {workers} tasks requesting for {seconds:g} s: {result['ok']} ok, "
                  f"{result['failed']} failed, {result['relogins']} re-logins; {outcome}")
            if connector is not None:
                left = connector.auth_client.token_expired_time - time.time()
                print(f"{name}: it keeps the rejected token; its next login is due in {left:.0f} s "
                      f"(tokenTtl - 10 s), when the old token's life ends")
            else:
                await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=8)
    options = parser.parse_args()
    asyncio.run(main(options.tasks, options.seconds, options.workers))
