"""Every example and the demo run on a fresh install against the embedded mock server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
EXPECTED = {
    "quickstart.py": ["read back: greeting: hello", "100 more requests, still 1 login", "replays=1",
                      "logins so far: 3"],
    "async_quickstart.py": ["500 concurrent requests: 500 ok, 1 login",
                            "after a key rotation: 100 of 100 ok, 2 logins"],
    "invalidate.py": ["invalidate() dropped it", "(different: True)", "1 dropped it, 9 found it already gone"],
    "shared_store.py": ["4 processes share 1 token", "the server saw 1 login for all of them", "mode 0o600"],
    "watch_config.py": ["after a key rotation the change still arrived", "removal is a change too: content=None",
                        "sync watch saw 3 changes, none twice", "async iterator saw ['v1', 'v2', 'v3']"],
    "register_service.py": ["the server asks for a beat every 0.2 s", "unhealthy 0 times",
                            "discovered 10.0.0.7:8080 healthy=True metadata={'version': '1.4'}",
                            "deregistered: 0 instances left", "async: 1 instance of payments"],
    "web_app.py": ["{'published': True}", "GET /config/missing  -> 404", "{'error': 'authorization failed!'}",
                   "'replays': 1"],
}


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NACOS_")}
    return subprocess.run([sys.executable, "-W", "error::DeprecationWarning", *args], check=False,
                          capture_output=True, text=True, timeout=120, env=env, cwd=EXAMPLES.parent)


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str) -> None:
    result = run([str(EXAMPLES / name)])
    assert result.returncode == 0, result.stderr[-3000:]
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_demo() -> None:
    result = run(["-m", "nacos_token_client", "demo"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for line in ("login [absent]", "login [advisory]", "0 requests waited for a login", "invalidate(): token",
                 "login [forced]", "'Invalid signature'", "'token frozen!'", "0 failed"):
        assert line in out, out
    assert "eyJ" not in out  # fingerprints only
