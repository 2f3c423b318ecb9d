"""``server_from_env()``: a real server when ``NACOS_SERVER_ADDR`` is set, else an embedded mock server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .server import MockNacosServer

__all__ = ["Connection", "server_from_env"]


@dataclass(frozen=True)
class Connection:
    """Where to connect: ``address``, ``username`` and ``password``. ``mock`` is the embedded server (None for a
    real one). ``repr`` hides the password."""

    address: str
    username: str
    password: str = field(repr=False)
    mock: MockNacosServer | None = None


@contextmanager
def server_from_env(**mock_options: Any) -> Iterator[Connection]:
    """Use ``NACOS_SERVER_ADDR`` / ``NACOS_USERNAME`` / ``NACOS_PASSWORD`` when set (defaults nacos/nacos);
    otherwise start a :class:`MockNacosServer` with ``mock_options`` on loopback for the duration of the block."""
    address = os.environ.get("NACOS_SERVER_ADDR")
    username = os.environ.get("NACOS_USERNAME", "nacos")
    password = os.environ.get("NACOS_PASSWORD", "nacos")
    if address:
        yield Connection(address, username, password)
        return
    mock_options.setdefault("users", {username: password})
    server = MockNacosServer(**mock_options)
    with server.run() as url:
        yield Connection(url, username, password, server)
