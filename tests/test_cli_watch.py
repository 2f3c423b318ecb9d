"""nacos-token watch-config (a real process, stopped with Ctrl-C) and list-instances."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from nacos_token_client import NacosTokenClient
from nacos_token_client.cli import main
from nacos_token_client.testing import MockNacosServer


def test_watch_config_prints_each_change_until_ctrl_c() -> None:
    server = MockNacosServer(poll_min_hold=0)
    server.set_config("w.yaml", "first")
    with server.run() as url:
        env = {**os.environ, "NACOS_SERVER_ADDR": url, "NACOS_USERNAME": "nacos", "NACOS_PASSWORD": "nacos"}
        process = subprocess.Popen([sys.executable, "-m", "nacos_token_client", "watch-config", "--data-id", "w.yaml"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert process.stdout is not None
        lines: list[str] = []
        seen = {"watching": threading.Event(), "second": threading.Event(), "removed": threading.Event()}

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                for word, event in seen.items():
                    if word in line:
                        event.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert seen["watching"].wait(20), lines
            server.set_config("w.yaml", "second")
            assert seen["second"].wait(10), lines
            server.set_config("w.yaml", "")  # not a Nacos publish, but a change all the same
            with NacosTokenClient(url, "nacos", "nacos") as client:
                client.remove_config("w.yaml")
            assert seen["removed"].wait(10), lines
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(15)
            reader.join(5)  # the reader alone drains stdout, so it sees every line
            assert process.stderr is not None
            err = process.stderr.read()
            process.stderr.close()
            process.stdout.close()
        assert process.returncode == 0, err
        assert "watching w.yaml (DEFAULT_GROUP): 5 characters now; Ctrl-C stops" in lines[0]
        assert any("md5=" in line for line in lines) and lines[-1] == "stopped watching\n"
        assert "Traceback" not in err


def test_list_instances(nacos_server: MockNacosServer, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NACOS_SERVER_ADDR", nacos_server.url)
    with NacosTokenClient(nacos_server.url, "nacos", "nacos") as client:
        client.register_instance("orders", "10.1.0.1", 8080, metadata={"zone": "b"}, ephemeral=False)
    assert main(["list-instances", "--service", "orders", "--username", "nacos", "--password", "nacos"]) == 0
    out = capsys.readouterr().out
    assert "10.1.0.1:8080  healthy  cluster=DEFAULT  weight=1  zone=b" in out
    assert "1 instance(s) of DEFAULT_GROUP@@orders" in out
    assert main(["list-instances", "--service", "none", "--username", "nacos", "--password", "nacos"]) == 0
    assert "0 instance(s)" in capsys.readouterr().out
