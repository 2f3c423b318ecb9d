"""The official Nacos clients, unchanged, against ``nacos-token mock-server`` over real HTTP.

Each client runs in its own process (see tests/official/): the Python client starts a multiprocessing Manager,
and every Node client in a process shares one cluster-client leader. CI installs both; elsewhere a missing client
is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nacos_token_client import NacosTokenClient
from nacos_token_client.testing import MockNacosServer

pytestmark = pytest.mark.official
OFFICIAL = Path(__file__).parent / "official"


@pytest.fixture(scope="module", params=["2.5", "3.1"])
def cli_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """``python -m nacos_token_client mock-server`` on a free port, answering like Nacos 2.5 and 3.1; stopped with
    Ctrl-C (SIGINT)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nacos_token_client", "mock-server", "--port", "0", "--poll-min-hold", "0",
         "--nacos-version", request.param],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://[\d.]+:\d+)", line)
    assert match, f"unexpected first line: {line!r}"
    try:
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        assert "mock server stopped" in out and "Traceback" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_json(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from {command}: stdout={result.stdout[-2000:]!r} stderr={result.stderr[-2000:]!r}"
    data: dict[str, Any] = json.loads(lines[-1])
    return data


@pytest.mark.skipif(importlib.util.find_spec("nacos") is None, reason="nacos-sdk-python==2.0.11 is not installed")
def test_official_python_client(cli_server: str, tmp_path: Path) -> None:
    out = run_json([sys.executable, str(OFFICIAL / "python_client.py"), cli_server.removeprefix("http://"),
                    str(tmp_path)], cwd=tmp_path)
    assert out["publish"] is True and out["get"] == "v1"
    assert out["dev_publish"] is True and out["dev_get"] == "dev-v1"
    assert out["public_get_after_dev_publish"] == "v1"  # namespaces are kept apart
    assert out["watcher_saw_change"] is True and out["dev_watcher_saw_change"] is True
    assert out["watcher_seconds"] < 5  # a publish wakes the held long poll at once
    assert out["watcher_contents"][-1] == "v2"
    assert out["remove"] is True and out["get_after_remove"] is None
    assert out["wrong_password"] != "accepted"


def node_available() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (OFFICIAL / "node_modules" / "nacos").is_dir():
        return "npm nacos@2.6 is not installed (npm install --prefix tests/official)"
    return None


@pytest.mark.skipif(node_available() is not None, reason=str(node_available()))
def test_official_node_client(cli_server: str) -> None:
    address = cli_server.removeprefix("http://")

    def node(namespace: str, password: str, keep: bool) -> dict[str, Any]:
        env = {**os.environ, "NODE_CLUSTER_CLIENT_PORT": str(free_port())}
        return run_json(["node", "node_client.js", address, namespace, password, "1" if keep else "0"],
                        cwd=OFFICIAL, env=env)

    dev = node("dev", "nacos", keep=True)
    assert dev["publish"] is True and dev["get"] == "dev-v1"
    assert dev["subscribeSawChange"] is True and dev["subscribeSeconds"] < 5
    public = node("", "nacos", keep=False)
    assert public["publish"] is True and public["get"] == "v1"
    assert public["subscribeSawChange"] is True and public["subscribeContents"][-1] == "v2"
    assert public["remove"] is True and public["getAfterRemove"] is None
    assert node("", "wrong", keep=False)["error"] == "NacosServerResponseError"
    with NacosTokenClient(cli_server, "nacos", "nacos") as client:  # the Node client's writes, seen by ours
        assert client.get_config("node.yaml", tenant="dev") == "dev-v2"
        assert client.get_config("node.yaml") is None


@pytest.fixture
def naming_server() -> Iterator[MockNacosServer]:
    """A loopback mock this process can look into: beats every 0.2 s so a short run sees several."""
    server = MockNacosServer(poll_min_hold=0)
    server.naming.client_beat_interval = 0.2
    server.start()
    yield server
    server.stop()


@pytest.mark.skipif(importlib.util.find_spec("nacos") is None, reason="nacos-sdk-python==2.0.11 is not installed")
def test_official_python_client_naming(naming_server: MockNacosServer, tmp_path: Path) -> None:
    out = run_json([sys.executable, str(OFFICIAL / "python_naming.py"), naming_server.url.removeprefix("http://"),
                    str(tmp_path)], cwd=tmp_path)
    assert out["register"] is True
    assert out["listed"] == [["10.2.0.1", 8080, True, {"lang": "py"}]] and out["listed_name"] == "DEFAULT_GROUP@@py-svc"
    assert out["beat"]["code"] == 10200 and out["beat"]["clientBeatInterval"] == 200
    assert out["remove"] is True and out["listed_after_remove"] == 0
    beats = [b for b in naming_server.naming.beats if b.ip == "10.2.0.1"]
    assert len(beats) >= 3  # the client's heartbeat thread, accepted by the mock


@pytest.mark.skipif(node_available() is not None, reason=str(node_available()))
def test_official_node_client_naming(naming_server: MockNacosServer) -> None:
    env = {**os.environ, "NODE_CLUSTER_CLIENT_PORT": str(free_port())}
    out = run_json(["node", "node_naming.js", naming_server.url.removeprefix("http://")], cwd=OFFICIAL, env=env)
    assert out.get("registered") is True, out
    assert out["instances"] == [["10.3.0.1", 8080, True, {"lang": "node"}]]
    # the Node client keeps its last non-empty list when the server answers no hosts, so ask the server itself
    assert naming_server.naming.instances("node-svc") == []
    beats = [b for b in naming_server.naming.beats if b.ip == "10.3.0.1"]
    assert len(beats) >= 2  # the beat reactor, at the server's clientBeatInterval
