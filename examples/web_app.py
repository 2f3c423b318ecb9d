"""Inside a web app: one AsyncNacosTokenClient for the app's life (Starlette lifespan), shared by every request.

Needs Starlette (and uvicorn for ``--serve``), which the package itself does not depend on::

    pip install ".[examples]"             # or: pip install "nacos-token-client[examples]"
    python examples/web_app.py            # exercises the app in-process (lifespan + httpx's ASGI transport)
    python examples/web_app.py --serve    # serves it with uvicorn on 127.0.0.1:8000
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nacos_token_client import AsyncNacosTokenClient, PermissionDeniedError
from nacos_token_client.testing import Connection, server_from_env


def nacos(request: Request) -> AsyncNacosTokenClient:
    """The dependency: the app's one client (FastAPI users: ``Depends(nacos)``)."""
    client: AsyncNacosTokenClient = request.app.state.nacos
    return client


async def read_config(request: Request) -> JSONResponse:
    try:
        content = await nacos(request).get_config(request.path_params["data_id"])
    except PermissionDeniedError as exc:
        return JSONResponse({"error": exc.server_message}, status_code=403)
    if content is None:
        return JSONResponse({"error": "no such config"}, status_code=404)
    return JSONResponse({"data_id": request.path_params["data_id"], "content": content})


async def write_config(request: Request) -> JSONResponse:
    ok = await nacos(request).publish_config(request.path_params["data_id"], (await request.body()).decode())
    return JSONResponse({"published": ok})


async def token(request: Request) -> JSONResponse:
    info = nacos(request).token_info()
    stats = nacos(request).auth.stats
    return JSONResponse({"fingerprint": info.fingerprint if info else None, "logins": stats.logins,
                         "replays": stats.replays})


async def invalidate(request: Request) -> JSONResponse:
    return JSONResponse({"dropped": nacos(request).invalidate()})


def create_app(address: str, username: str, password: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncNacosTokenClient(address, username, password) as client:
            app.state.nacos = client
            yield

    return Starlette(routes=[Route("/config/{data_id}", read_config, methods=["GET"]),
                             Route("/config/{data_id}", write_config, methods=["PUT"]),
                             Route("/token", token), Route("/token/invalidate", invalidate, methods=["POST"])],
                     lifespan=lifespan)


async def exercise(app: Starlette, server: Connection) -> None:
    """Drive the app in-process: its lifespan, then requests through httpx's ASGI transport."""
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app") as web:
        print("PUT /config/web.yaml ->", (await web.put("/config/web.yaml", content="feature: on")).json())
        print("GET /config/web.yaml ->", (await web.get("/config/web.yaml")).json())
        print("GET /config/missing  ->", (await web.get("/config/missing")).status_code)
        if server.mock is not None:
            server.mock.rotate_secret()
            print("after a server key rotation, GET /config/web.yaml ->", (await web.get("/config/web.yaml")).json())
            server.mock.deny("secret.yaml")
            print("GET /config/secret.yaml (denied) ->", (await web.get("/config/secret.yaml")).json())
        print("POST /token/invalidate ->", (await web.post("/token/invalidate")).json())
        status = (await web.get("/config/web.yaml")).status_code
        print("GET /config/web.yaml ->", status, "| GET /token ->", (await web.get("/token")).json())


def main() -> None:
    with server_from_env() as server:
        app = create_app(server.address, server.username, server.password)
        if "--serve" in sys.argv:
            import uvicorn  # noqa: PLC0415 - only needed to serve

            uvicorn.run(app, host="127.0.0.1", port=8000)
            return
        asyncio.run(exercise(app, server))


if __name__ == "__main__":
    main()
