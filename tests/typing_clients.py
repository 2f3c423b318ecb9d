"""Checked by mypy (``mypy`` in scripts/test.sh covers tests/), never run: the wrapper clients' types.

Each ``type: ignore[...]`` below must be needed — mypy --strict reports an unused one — so a mistyped option that
type-checks again fails the build.
"""

from __future__ import annotations

import httpx
from typing_extensions import assert_type

from nacos_token_client import AsyncNacosTokenClient, AuthStats, NacosTokenAuth, NacosTokenClient, TokenInfo


def sync_types() -> None:
    with NacosTokenClient("127.0.0.1:8848", "nacos", "nacos", refresh_ratio=0.8, base_url="/v1/cs") as client:
        assert_type(client, NacosTokenClient)
        assert_type(client.auth, NacosTokenAuth)
        assert_type(client.stats, AuthStats)
        assert_type(client.token_info(), TokenInfo | None)
        assert_type(client.patch("configs", content=b"x"), httpx.Response)
        assert_type(client.get_config("app.yaml"), str | None)
        with client.stream("GET", "configs") as response:
            assert_type(response, httpx.Response)
    NacosTokenClient("127.0.0.1:8848", refresh_ration=0.5)  # type: ignore[call-arg]
    NacosTokenClient("127.0.0.1:8848", token_placement="cookie")  # type: ignore[arg-type]
    NacosTokenClient("127.0.0.1:8848", transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]


async def async_types() -> None:
    async with AsyncNacosTokenClient("127.0.0.1:8848", "nacos", "nacos", event_hooks={"request": []}) as client:
        assert_type(client, AsyncNacosTokenClient)
        assert_type(client.auth, NacosTokenAuth)
        assert_type(await client.head("/v1/console/health/liveness"), httpx.Response)
        assert_type(await client.get_token(), str)
    AsyncNacosTokenClient("127.0.0.1:8848", login_timeout="30")  # type: ignore[arg-type]
    AsyncNacosTokenClient("127.0.0.1:8848", transport=httpx.HTTPTransport())  # type: ignore[arg-type]
