"""The nacos-token command: login, config commands, errors as one line, environment variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nacos_token_client.cli import main
from nacos_token_client.testing import MockNacosServer


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, nacos_server: MockNacosServer) -> MockNacosServer:
    monkeypatch.setenv("NACOS_SERVER_ADDR", nacos_server.url)
    monkeypatch.setenv("NACOS_USERNAME", "nacos")
    monkeypatch.setenv("NACOS_PASSWORD", "nacos")
    return nacos_server


def test_login_prints_info_but_not_the_token(env: MockNacosServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["login"]) == 0
    out = capsys.readouterr().out
    assert "user:        nacos" in out and "fingerprint:" in out and "eyJ" not in out
    assert "life:        18000 s" in out or "life:        17999 s" in out  # tokenTtl is exp - floor(now) = 18000
    assert main(["login", "--show-token"]) == 0
    assert "token:       eyJhbGciOiJIUzI1NiJ9." in capsys.readouterr().out


def test_config_commands(env: MockNacosServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish-config", "--data-id", "cli.yaml", "--content", "a: 1"]) == 0
    assert main(["get-config", "--data-id", "cli.yaml"]) == 0
    assert capsys.readouterr().out.endswith("a: 1\n")
    assert main(["publish-config", "--data-id", "cli.yaml", "--content", "dev", "--namespace", "dev"]) == 0
    assert env.get_config("cli.yaml", tenant="dev") == "dev"
    assert main(["remove-config", "--data-id", "cli.yaml"]) == 0
    capsys.readouterr()
    assert main(["get-config", "--data-id", "cli.yaml"]) == 1
    assert capsys.readouterr().err.strip() == (
        "nacos-token: error: config 'cli.yaml' (group 'DEFAULT_GROUP') does not exist")


def test_errors_are_one_line_without_a_traceback(env: MockNacosServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["login", "--password", "wrong"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "login refused" in err and "Traceback" not in err and "wrong" not in err
    env.deny("secret.yaml")
    assert main(["get-config", "--data-id", "secret.yaml"]) == 1
    assert "permission denied" in capsys.readouterr().err
    with pytest.raises(Exception):  # noqa: B017 - --debug shows the real exception
        main(["--debug", "login", "--password", "wrong"])


def test_missing_settings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("NACOS_SERVER_ADDR", "NACOS_USERNAME", "NACOS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["login", "--username", "x", "--password", "y"]) == 1
    assert "no server" in capsys.readouterr().err
    assert main(["login", "--server", "127.0.0.1:1"]) == 1
    assert "no username" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["login", "--server", "127.0.0.1:1", "--username", "x"]) == 1
    assert "no password" in capsys.readouterr().err


def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["login", "--server", "127.0.0.1:1", "--username", "u", "--password", "p",
                 "--login-timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nacos-token: error: no usable token within login_timeout (0.5 s)") and err.count("\n") == 1
    assert "ConnectError" in err


def test_mock_server_rejects_bad_options() -> None:
    result = subprocess.run([sys.executable, "-m", "nacos_token_client", "mock-server", "--secret-key", "c2hvcnQ="],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "32 bytes" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "nacos_token_client", "mock-server", "--user", "nocolon"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "NAME:PASSWORD" in result.stderr


def test_mock_server_version_auth_and_user_options() -> None:
    """``--nacos-version 3.1 --no-auth --no-default-user``: a fresh 3.x server with server auth off."""
    import re
    import signal

    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "nacos_token_client", "mock-server", "--port", "0", "--nacos-version", "3.1",
         "--no-auth", "--no-default-user"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "mock Nacos 3.1" in line and "none yet" in line and "auth off" in line
        match = re.search(r"listening on (http://[\d.]+:\d+)", line)
        assert match
        url = match.group(1) + "/nacos"
        assert httpx.get(url + "/v1/cs/configs", params={"dataId": "a", "group": "g"}).status_code == 404  # no token
        created = httpx.post(url + "/v3/auth/user/admin", data={"password": "pw"}).json()
        assert created["data"] == {"username": "nacos", "password": "pw"}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    assert process.returncode == 0
