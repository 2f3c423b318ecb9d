"""A mock Nacos-style server for tests: faithful to real Nacos auth, served in-process or on loopback.

``from nacos_token_client.testing import MockNacosServer``; with the package installed, pytest also gets the
``nacos_server`` fixture (a running loopback server).
"""

from .env import Connection, server_from_env
from .http import LoopbackServer, MockNacosTransport
from .model import Hold, MockRequest, MockResponse, MockStats
from .server import MockNacosServer

__all__ = ["Connection", "Hold", "LoopbackServer", "MockNacosServer", "MockNacosTransport", "MockRequest",
           "MockResponse", "MockStats", "server_from_env"]
