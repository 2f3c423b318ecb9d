"""A token store for the processes of one machine: one JSON file, mode 0600, replaced atomically.

Two kinds of OS file locks (``fcntl.flock``, released by the kernel if the holder dies):

* the login lock, one file per identity (``<path>.<key>.lock``), held across re-read → login → write, so the
  processes of a machine log in once between them;
* the write lock (``<path>.wlock``), held for a read-modify-write of the file, so concurrent writers of different
  identities never lose each other's tokens.

The file is never trusted: a corrupt, truncated or oversized one (more than 4 MiB) is ignored with a warning and
rewritten on the next write; a stored value no login answer could hold is not a token. The store opens nothing
through a symlink and waits on nothing that is not a regular file (a FIFO planted at a path). It also keeps the
fleet-wide login back-off (:class:`~nacos_token_client.stores.base.FleetBackOff`) of every identity, under a key
of its own in the same file. POSIX only (it needs ``fcntl``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
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
#: A token file larger than this is not a token file (a few hundred bytes per identity): it is not read.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: The top-level key the back-offs live under: never an identity key (those start with ``nacos-token:``).
BACKOFF_KEY = "#fleet-backoff"
# never follow a symlink, never wait for a writer (a FIFO), never leak the descriptor into a child process
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileTokenStore:
    """Tokens shared by the processes of one machine through a JSON file. Never holds a password.

    The path must be a regular file or not exist yet (a directory, FIFO or symlink is a ``ConfigurationError``);
    a missing parent directory is created with mode 0700 (and an INFO log record says so): a first run on a new
    machine should work, and a directory holding tokens should be private. ``clock`` (``time.time``): the wall
    clock token and back-off expiry are measured on, for tests.
    """

    local = False

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConfigurationError("FileTokenStore needs POSIX file locks (fcntl)")
        self.path = Path(path).expanduser().absolute()
        self.clock = clock
        if self.path.is_symlink():
            raise ConfigurationError(f"FileTokenStore: {self.path} is a symlink; give the real path (a token store "
                                     "never follows links)")
        if self.path.is_dir():
            raise ConfigurationError(f"FileTokenStore: {self.path} is a directory; give a file path in it, like "
                                     f"{self.path / 'tokens.json'}")
        if self.path.exists() and not self.path.is_file():
            raise ConfigurationError(f"FileTokenStore: {self.path} is not a regular file")
        parent = self.path.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigurationError(f"FileTokenStore: {parent} is not a directory")
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            log.info("created the token store's directory %s (mode 0700)", parent)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    # -- the TokenStore protocol ------------------------------------------------------------------------------------

    def get(self, key: str) -> Token | None:
        """The stored token for ``key``, or None (missing, expired, malformed, unreadable file)."""
        return token_from_dict(self._read().get(key))

    def put(self, key: str, token: Token) -> None:
        """Store ``token`` (expired entries are dropped on the way)."""
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._live(self._read())
            data[key] = token_to_dict(token)
            self._write(data)

    def delete(self, key: str, value: str | None = None) -> bool:
        """Drop the token for ``key`` — only if it is still ``value`` when given. True if dropped."""
        with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
            data = self._read()
            current = token_from_dict(data.get(key))
            if current is None or (value is not None and current.value != value):
                return False
            del data[key]
            self._write(data)
            return True

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """The machine-wide login lock for ``key`` (an OS file lock, released by the kernel if its holder dies)."""
        with self._locked(self.path.with_name(f"{self.path.name}.{key.rsplit(':', 1)[-1][:16]}.lock"),
                          timeout) as acquired:
            yield acquired

    # -- the FleetBackOffStore protocol (best effort: errors are logged, never raised) ------------------------------

    def get_backoff(self, key: str) -> FleetBackOff | None:
        """The recorded login back-off for ``key``, or None (none, over, malformed, or the file cannot be read)."""
        try:
            return backoff_from_dict(self._backoffs(self._read()).get(key), self.clock())
        except Exception as exc:
            log.warning("token file %s: reading the login back-off failed (%s)", self.path, type(exc).__name__)
            return None

    def put_backoff(self, key: str, backoff: FleetBackOff) -> None:
        """Record ``backoff`` for ``key``; back-offs that are over are dropped on the way."""
        self._change_backoff(key, backoff)

    def clear_backoff(self, key: str) -> None:
        """Forget the back-off for ``key`` (a login succeeded)."""
        self._change_backoff(key, None)

    def _change_backoff(self, key: str, backoff: FleetBackOff | None) -> None:
        try:
            with self._locked(self._write_lock_path(), WRITE_LOCK_TIMEOUT):
                data = self._read()
                now = self.clock()
                backoffs = {k: v for k, v in self._backoffs(data).items() if backoff_from_dict(v, now) is not None}
                if backoff is None and key not in backoffs and BACKOFF_KEY in data:
                    return  # nothing to forget
                backoffs.pop(key, None)
                if backoff is not None:
                    backoffs[key] = backoff_to_dict(backoff)
                if backoffs:
                    data[BACKOFF_KEY] = backoffs
                else:
                    data.pop(BACKOFF_KEY, None)
                self._write(data)
        except Exception as exc:
            log.warning("token file %s: recording the login back-off failed (%s); carrying on without it",
                        self.path, type(exc).__name__)

    @staticmethod
    def _backoffs(data: dict[str, Any]) -> dict[str, Any]:
        backoffs = data.get(BACKOFF_KEY)
        return backoffs if isinstance(backoffs, dict) else {}

    # -- the file ------------------------------------------------------------------------------------------------

    def _write_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".wlock")

    def _read(self) -> dict[str, Any]:
        """The file's JSON object; ``{}`` (with a warning) for anything that is not a readable token file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            log.warning("token file %s is a symlink; not following it (the next write replaces it)", self.path)
            return {}
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                log.warning("token file %s is not a regular file; ignoring it", self.path)
                return {}
            raw = _read_at_most(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_FILE_BYTES:
            log.warning("token file %s is too large (over %d bytes); ignoring it, the next write replaces it",
                        self.path, MAX_FILE_BYTES)
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
        """Drop entries whose token has expired (or that are not tokens), so the file does not grow forever; the
        back-offs stay (they expire on their own writes)."""
        now = self.clock()
        kept = {}
        for key, entry in data.items():
            token = token_from_dict(entry)
            if (token is not None and token.expires_at > now) or (key == BACKOFF_KEY and isinstance(entry, dict)):
                kept[key] = entry
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
            os.replace(tmp, self.path)  # replaces a symlink or FIFO planted at the path, never what it points to
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
        """An exclusive flock on ``path``, waited for (polling, with tenacity) up to ``timeout`` seconds. A symlink
        or a non-regular file at ``path`` is refused (``OSError``): the store never creates or locks a file
        somewhere a link points to."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("token file lock %s is a symlink; refusing to follow it", path)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            log.warning("token file lock %s is not a regular file; refusing it", path)
            raise OSError(errno.EINVAL, "a lock file must be a regular file", str(path))
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


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd`` (the file may grow while it is read: the cap holds whatever its size)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1024 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
