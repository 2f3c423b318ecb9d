"""A token store for the processes of one machine: one JSON file, mode 0600, replaced atomically.

Two kinds of OS file locks (``fcntl.flock``, released by the kernel if the holder dies):

* the login lock, one file per identity (``<path>.<key>.lock``), held across re-read → login → write, so the
  processes of a machine log in once between them;
* the write lock (``<path>.wlock``), held for a read-modify-write of the file, so concurrent writers of different
  identities never lose each other's tokens.

The file is never trusted: a corrupt or truncated one is ignored with a warning and rewritten on the next write.
POSIX only (it needs ``fcntl``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random

from ..errors import ConfigurationError
from ..lifecycle import Token
from .base import FleetBackOff, backoff_from_dict, backoff_to_dict, token_from_dict, token_to_dict

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileTokenStore"]

log = logging.getLogger("nacos_token_client")
WRITE_LOCK_TIMEOUT = 10.0
_BACKOFFS = "fleet-backoffs"  # not a key: identity keys start with "nacos-token:"


class FileTokenStore:
    """Tokens shared by the processes of one machine through a JSON file. Never holds a password.

    ``path``: the JSON file (``~`` expanded); its directory is created (mode 0700) if missing, and lock files
    live beside it. ``clock``: wall-clock seconds, for tests (expired entries are pruned on each write).
    """

    local = False

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConfigurationError("FileTokenStore needs POSIX file locks (fcntl)")
        self.path = Path(path).expanduser().absolute()
        self.clock = clock
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    # -- the TokenStore protocol ------------------------------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        """The stored token, or None (missing, malformed, or a corrupt file: logged and ignored)."""
        return token_from_dict(self._read().get(key))

    def put(self, key: str, token: Token) -> None:
        """Store ``token`` under the write lock, dropping expired entries, and replace the file atomically."""
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._live(self._read())
            data[key] = token_to_dict(token)
            self._write(data)

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token — only if it is still ``value`` when given — under the write lock; True if dropped."""
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._read()
            current = token_from_dict(data.get(key))
            if current is None or (value is not None and current.value != value):
                return False
            del data[key]
            self._write(data)
            return True

    def get_backoff(self, key: str) -> FleetBackOff | None:
        return backoff_from_dict(self._read().get(_BACKOFFS, {}).get(key), self.clock())

    def put_backoff(self, key: str, backoff: FleetBackOff) -> None:
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._live(self._read())
            data[_BACKOFFS][key] = backoff_to_dict(backoff)
            self._write(data)

    def clear_backoff(self, key: str) -> None:
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._live(self._read())
            if data[_BACKOFFS].pop(key, None) is not None:
                self._write(data)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """The machine's login lock for ``key`` (an flock, freed by the kernel if its holder dies); yields False if
        another process held it for ``timeout`` seconds."""
        with self._locked(self.path.with_name(f"{self.path.name}.{key.rsplit(':', 1)[-1][:16]}.lock"),
                          timeout) as acquired:
            yield acquired

    # -- the file ------------------------------------------------------------------------------------------------

    def _write_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".wlock")

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError):
            log.warning("token file %s is corrupt (%d bytes); ignoring it, the next write replaces it",
                        self.path, len(raw))
            return {}
        return data

    def _live(self, data: dict[str, Any]) -> dict[str, Any]:
        """Drop entries whose token has expired (or that are not tokens), so the file does not grow forever."""
        now = self.clock()
        kept: dict[str, Any] = {}
        for key, entry in data.items():
            token = token_from_dict(entry)
            if token is not None and token.expires_at > now:
                kept[key] = entry
        backoffs = data.get(_BACKOFFS)
        kept[_BACKOFFS] = {key: entry for key, entry in backoffs.items() if backoff_from_dict(entry, now)} if (
            isinstance(backoffs, dict)) else {}
        return kept

    def _write(self, data: dict[str, Any]) -> None:
        """Atomic replace: a reader sees the old file or the new one, never half of one."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data, separators=(",", ":")).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path, timeout: float) -> Iterator[bool]:
        """An exclusive flock on ``path``, waited for (polling, with tenacity) up to ``timeout`` seconds."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        acquired = False
        try:
            try:
                for attempt in Retrying(stop=stop_after_delay(max(timeout, 0.0)), wait=wait_random(0.005, 0.03),
                                        retry=retry_if_exception_type(BlockingIOError), reraise=True):
                    with attempt:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
            except BlockingIOError:
                log.warning("token file lock %s not had within %.1f s; going on without it", path, timeout)
            yield acquired
        finally:
            if acquired:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
