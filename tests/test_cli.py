"""The nacos-token command: login, config commands, errors as one line, environment variables."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from nacos_token_client import __version__
from nacos_token_client.cli import build_parser, main
from nacos_token_client.demo import DEMO_SECONDS
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


# --- the real command in a subprocess: every error is one line on stderr, nothing printed before it -------------


def cli(*args: str, server: MockNacosServer | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nacos_token_client ARGS`` with no NACOS_* settings but the given server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NACOS_")}
    if server is not None:
        env.update(NACOS_SERVER_ADDR=server.url, NACOS_USERNAME="nacos")
    return subprocess.run([sys.executable, "-m", "nacos_token_client", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, env=env, input=stdin if stdin is not None else "")


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("nacos-token"), result.stderr
    assert "error: " in result.stderr and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nacos-token {__version__}"


def test_help_of_every_command_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(commands.choices) == 8
    for argv in [[], *([name] for name in commands.choices)]:
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "usage: nacos-token" in text and "--debug" in text
        for markup in ("``", ":class:", ":meth:", "%%"):
            assert markup not in text, (argv, text)
    assert f"about {DEMO_SECONDS} s" in (commands.choices["demo"].description or "")


@pytest.mark.parametrize("position", ["before", "after"])
def test_debug_before_or_after_the_command_shows_log_records_and_the_traceback(
        nacos_server: MockNacosServer, position: str) -> None:
    args = ["login", "--password", "wrong"]
    result = cli(*(["--debug", *args] if position == "before" else [*args, "--debug"]), server=nacos_server)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "AuthenticationError" in result.stderr
    assert "token failure" in result.stderr  # the library's record, shown only with --debug
    assert "wrong" not in result.stderr


def test_wrong_password_is_one_line_with_no_log_record_before_it(nacos_server: MockNacosServer) -> None:
    assert_one_line_error(cli("login", "--password", "wrong", server=nacos_server), 1, "login refused")


def test_unreachable_server_is_one_line_with_no_log_records() -> None:
    result = cli("login", "--server", "127.0.0.1:1", "--username", "u", "--password", "p", "--login-timeout", "1")
    assert_one_line_error(result, 1, "no usable token within login_timeout (1 s)", "ConnectError")


@pytest.mark.parametrize(("args", "words"), [
    (["mock-server", "--port", "70000"], ["--port", "70000", "0 to 65535"]),
    (["mock-server", "--port", "-1"], ["--port", "'-1'"]),
    (["mock-server", "--port", "abc"], ["--port", "'abc'"]),
    (["mock-server", "--token-ttl", "0"], ["--token-ttl"]),
    (["mock-server", "--active-timeout", "inf"], ["--active-timeout", "finite"]),
    (["login", "--server", "127.0.0.1:1", "--timeout", "-1"], ["--timeout"]),
    (["login", "--server", "127.0.0.1:1", "--timeout", "1e12"], ["--timeout"]),
    (["login", "--server", "127.0.0.1:1", "--login-timeout", "nan"], ["--login-timeout"]),
    (["publish-config", "--data-id", "", "--content", "x"], ["--data-id", "must not be empty"]),
    (["get-config", "--data-id", "a", "--group", " "], ["--group"]),
    (["list-instances", "--service", ""], ["--service"]),
    (["login", "--password", "p", "--password-stdin"], ["not allowed with"]),
    (["no-such-command"], ["invalid choice"]),
    ([], ["required"]),
])
def test_usage_errors_are_one_line(args: list[str], words: list[str]) -> None:
    result = cli(*args)
    assert_one_line_error(result, 2, *words)
    assert "OverflowError" not in result.stderr and "usage:" not in result.stderr


def test_empty_data_id_is_refused_not_published(nacos_server: MockNacosServer) -> None:
    result = cli("publish-config", "--data-id", "", "--content", "x", "--password", "nacos", server=nacos_server)
    assert_one_line_error(result, 2, "--data-id")
    assert "published" not in result.stdout
    assert nacos_server.get_config("") is None


def test_mock_server_port_in_use_is_one_line(nacos_server: MockNacosServer) -> None:
    port = nacos_server.url.rsplit(":", 1)[1]
    assert_one_line_error(cli("mock-server", "--port", port), 1, f"cannot listen on 127.0.0.1:{port}")


def test_password_stdin_reads_one_line(nacos_server: MockNacosServer) -> None:
    result = cli("login", "--password-stdin", server=nacos_server, stdin="nacos\nnot the password\n")
    assert result.returncode == 0 and "user:        nacos" in result.stdout and result.stderr == ""
    assert_one_line_error(cli("login", "--password-stdin", server=nacos_server, stdin="wrong\n"), 1, "login refused")
    assert_one_line_error(cli("login", "--password-stdin", server=nacos_server, stdin=""), 1, "no password")
    result = cli("publish-config", "--data-id", "a", "--content", "-", "--password-stdin", server=nacos_server,
                 stdin="nacos\n")
    assert_one_line_error(result, 1, "both want stdin")


def test_no_password_and_no_terminal_is_one_line(nacos_server: MockNacosServer) -> None:
    assert_one_line_error(cli("login", server=nacos_server), 1, "no password", "--password-stdin")


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs a Linux pseudo-terminal")
def test_password_is_prompted_for_on_a_terminal(nacos_server: MockNacosServer) -> None:
    import pty
    import select

    env = {k: v for k, v in os.environ.items() if not k.startswith("NACOS_")}
    env.update(NACOS_SERVER_ADDR=nacos_server.url, NACOS_USERNAME="nacos")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout, stderr and /dev/tty are the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "nacos_token_client", "login"], env)
    output = b""
    deadline = time.monotonic() + 30

    def read_until(marker: bytes) -> bool:
        nonlocal output
        while marker not in output and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    return marker in output
                if not chunk:
                    break
                output += chunk
        return marker in output

    try:
        assert read_until(b"password for nacos: "), output
        os.write(fd, b"nacos\n")
        assert read_until(b"fingerprint:"), output
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output.split(b"password for nacos: ", 1)[1].lstrip(b"\r\n").startswith(b"user:")  # not echoed


def test_context_path_and_http_timeout() -> None:
    server = MockNacosServer(context_path="/custom")
    with server.run() as url:
        base = ["login", "--server", url, "--username", "nacos", "--password", "nacos", "--login-timeout", "3"]
        assert cli(*base, "--context-path", "/custom").returncode == 0
        assert cli(*base).returncode == 1  # /nacos is not where this server lives
        server.login_delay = 1.0
        assert_one_line_error(cli(*base, "--context-path", "/custom", "--timeout", "0.2"), 1, "ReadTimeout")
        assert cli(*base, "--context-path", "/custom", "--timeout", "5").returncode == 0
