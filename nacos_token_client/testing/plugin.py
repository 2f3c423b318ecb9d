"""pytest plugin (entry point ``pytest11``): the ``nacos_server`` fixture.

The fixture yields a :class:`MockNacosServer` already served on loopback (``nacos_server.url``); it is stopped
after the test. Parametrise it indirectly to change the server's options::

    @pytest.mark.parametrize("nacos_server", [{"token_ttl": 5, "nacos_version": 3}], indirect=True)
    def test_short_tokens(nacos_server): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .server import MockNacosServer


@pytest.fixture
def nacos_server(request: pytest.FixtureRequest) -> Iterator[MockNacosServer]:
    """A mock Nacos server running on a free loopback port (user ``nacos``/``nacos`` unless parametrised)."""
    options: dict[str, Any] = dict(getattr(request, "param", None) or {})
    server = MockNacosServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
