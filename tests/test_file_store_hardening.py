"""FileTokenStore at the edges: hostile values, FIFOs, huge files, symlinks, directories, missing parents — and
the fleet-wide login back-off it keeps for every process of the machine."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nacos_token_client import ConfigurationError, FileTokenStore, NacosTokenAuth
from nacos_token_client.lifecycle import RefreshPolicy, Token
from nacos_token_client.protocol import parse_login_response
from nacos_token_client.stores.base import FleetBackOff, FleetBackOffStore, token_from_dict, token_to_dict
from nacos_token_client.testing import MockNacosServer

LOG = "nacos_token_client"


def a_token(value: str = "tok", life: float = 3600.0) -> Token:
    return RefreshPolicy().schedule(value, issued_at=time.time(), token_ttl=life, jwt_exp=None)


def with_value(value: str) -> dict[str, Any]:
    """A well-formed stored token but for its value."""
    return {**token_to_dict(a_token()), "value": value}


BAD_VALUES = ["abc\r\nX-Evil: 1", "abc\n", "a b", "t\u00f6k", "\x00abc", "x" * (16 * 1024 + 1), "abc\x7f"]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_stored_value_no_login_answer_could_hold_is_not_a_token(tmp_path: Path, value: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"k": with_value(value)}))
    assert FileTokenStore(path).get("k") is None
    assert token_from_dict(with_value(value)) is None  # every store reads through this
    assert token_from_dict(with_value("eyJhbGciOiJIUzI1NiJ9.e30.sig")) is not None


def test_a_login_answer_token_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(Exception, match="characters or a length no token has"):
        parse_login_response(200, json.dumps({"accessToken": "abc\n", "tokenTtl": 100}).encode())


def test_a_planted_crlf_token_does_not_break_requests(tmp_path: Path) -> None:
    """Over real HTTP a CR/LF header value cannot be sent: the old store handed it out on every request."""
    server = MockNacosServer()
    server.set_config("app.yaml", "ok")
    store = FileTokenStore(tmp_path / "tokens.json")
    with server.run() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=store)
        (tmp_path / "tokens.json").write_text(json.dumps({auth.identity_key: with_value("abc\r\nX-Evil: 1")}))
        with httpx.Client(auth=auth) as client:
            response = client.get(f"{url}/nacos/v1/cs/configs", params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"})
        auth.close()
    assert response.text == "ok" and server.stats.logins == 1


def test_a_fifo_is_refused_and_never_waited_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        FileTokenStore(fifo)
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    os.mkfifo(path)  # appears after construction
    got: list[Token | None] = []
    reader = threading.Thread(target=lambda: got.append(store.get("k")), daemon=True)
    with caplog.at_level(logging.WARNING, LOG):
        reader.start()
        reader.join(5)
    if reader.is_alive():  # the old store blocks in open(): release it before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("get() waited on a FIFO")
    assert got == [None] and "not a regular file" in caplog.text
    store.put("k", a_token())  # the next write replaces it
    assert stat.S_ISREG(os.stat(path).st_mode) and store.get("k") is not None


def test_an_oversized_file_is_not_read_whole(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"k": token_to_dict(a_token()), "padding": "x" * (5 * 1024 * 1024)}))
    store = FileTokenStore(path)
    with caplog.at_level(logging.WARNING, LOG):
        assert store.get("k") is None
    assert "too large" in caplog.text
    store.put("k", a_token())
    assert path.stat().st_size < 4096 and store.get("k") is not None


def test_symlinks_at_lock_paths_are_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    target = tmp_path / "elsewhere"
    (tmp_path / "tokens.json.wlock").symlink_to(target)
    with pytest.raises(OSError):
        store.put("k", a_token())
    (tmp_path / "tokens.json.abcdef.lock").symlink_to(target)
    with pytest.raises(OSError), store.lock("nacos-token:abcdef", 1):
        pass
    assert not target.exists()


def test_symlinks_at_the_store_path_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"k": token_to_dict(a_token("planted"))}))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError, match="symlink"):
        FileTokenStore(link)
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    path.symlink_to(real)  # appears after construction
    with caplog.at_level(logging.WARNING, LOG):
        assert store.get("k") is None
    assert "symlink" in caplog.text
    store.put("k", a_token("mine"))
    assert not path.is_symlink() and json.loads(real.read_text())["k"]["value"] == "planted"


def test_a_directory_path_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        FileTokenStore(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileTokenStore(tmp_path / "file" / "tokens.json")


def test_a_missing_parent_is_created_private_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, LOG):
        store = FileTokenStore(tmp_path / "a" / "b" / "tokens.json")
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o700
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "created" in caplog.text and "0700" in caplog.text and str(tmp_path / "a" / "b") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, LOG):
        FileTokenStore(store.path)  # there now: nothing to say
    assert caplog.records == []


def test_fleet_backoff_round_trip_expiry_and_tokens_kept(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    store = FileTokenStore(tmp_path / "tokens.json", clock=lambda: now[0])
    assert isinstance(store, FleetBackOffStore)
    store.put("t", a_token())  # the wall clock of the token is real time; only back-offs use the store's clock
    assert store.get_backoff("a") is None
    store.put_backoff("a", FleetBackOff(now[0] + 10, 2))
    store.put_backoff("b", FleetBackOff(now[0] + 100, 1))
    assert store.get_backoff("a") == FleetBackOff(now[0] + 10, 2)
    assert FileTokenStore(store.path, clock=lambda: now[0]).get_backoff("b") == FleetBackOff(now[0] + 100, 1)
    now[0] += 20
    assert store.get_backoff("a") is None  # over
    store.put_backoff("c", FleetBackOff(now[0] + 5, 3))
    kept = json.loads(store.path.read_text())
    backoffs = next(v for k, v in kept.items() if k != "t")
    assert sorted(backoffs) == ["b", "c"]  # the expired one dropped on write
    assert store.get("t") is not None  # tokens untouched by back-offs
    store.clear_backoff("b")
    assert store.get_backoff("b") is None and store.get_backoff("c") is not None
    store.put("t2", a_token())  # a token write keeps the back-offs
    assert store.get_backoff("c") == FleetBackOff(now[0] + 5, 3)


def test_fleet_backoff_is_best_effort(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    path.write_text(json.dumps({"#fleet-backoff": "not a mapping", "k": token_to_dict(a_token())}))
    assert store.get_backoff("a") is None and store.get("k") is not None

    def broken(data: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    path.write_text(json.dumps({"#fleet-backoff": {"b": {"until": time.time() + 10, "failures": 1}}}))
    monkeypatch.setattr(store, "_write", broken)
    with caplog.at_level(logging.WARNING, LOG):
        store.put_backoff("a", FleetBackOff(time.time() + 10, 1))  # logged, not raised
        store.clear_backoff("b")
    assert caplog.text.count("recording the login back-off failed (OSError)") == 2

    def unreadable() -> dict[str, Any]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "_read", unreadable)
    with caplog.at_level(logging.WARNING, LOG):
        assert store.get_backoff("b") is None
    assert "reading the login back-off failed" in caplog.text
