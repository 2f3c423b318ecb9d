"""The config API: requests, the long-poll watch flow, and on-disk snapshots — each written once.

Every flow here is a generator of I/O commands (:class:`Send`, :class:`Poll`, :class:`Sleep`, :class:`Deliver`,
:class:`Save`, :class:`Load`, :class:`Emit`); ``client.py`` carries them out on a thread or on an event loop, so the
sync and async clients cannot drift. The wire format is Nacos's v1 config API, which every server version serves
to clients: 3.x keeps ``/v1/cs/configs`` and ``/v1/cs/configs/listener`` while
``nacos.core.api.compatibility.client.enabled`` is true, its default (alibaba/nacos 3.0.3,
core/controller/compatibility/ApiCompatibilityConfig.java), and its own client API (``/v3/client/cs/config``,
config/controller/v3/ConfigOpenApiController.java) has no listener.

The watch follows Nacos's long-polling listener (config/server/controller/ConfigController.java ``listener`` and
service/LongPollingService.java): every watched key with its content's MD5 in one ``Listening-Configs`` form
field, ``Long-Pulling-Timeout`` asking the server to hold the poll (it answers at that time less 500 ms, or at
once when a key differs), and the changed keys in the answer, each then read with a GET.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote, unquote_plus

import httpx
from tenacity import RetryCallState, Retrying, wait_random_exponential

from .errors import NacosTokenError, PermissionDeniedError, RequestFailedError
from .events import TokenEvent
from .protocol import RejectionKind, classify_rejection

__all__ = ["ConfigChange", "ConfigWatch", "WatchSettings"]

log = logging.getLogger("nacos_token_client")
T = TypeVar("T")
DEFAULT_GROUP = "DEFAULT_GROUP"
WORD_SEPARATOR = "\x02"
LINE_SEPARATOR = "\x01"
#: What "no server answered" looks like: a connection that failed everywhere, or a login that could not be made.
UNREACHABLE = (httpx.TransportError, NacosTokenError)
Key = tuple[str, str, str]  # data_id, group, tenant


# -- requests --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer; the config and naming modules describe every request this way."""

    method: str
    path: str
    params: dict[str, str] | None
    data: dict[str, str] | None
    read: Callable[[httpx.Response], T]
    headers: dict[str, str] | None = None
    timeout: httpx.Timeout | None = None


def server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])[:300]
    except ValueError:
        pass
    return response.text.strip()[:300]


def fail(response: httpx.Response) -> RequestFailedError:
    """The typed error for an answer that is not a success."""
    message = server_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (401, 403) and classify_rejection(response) is RejectionKind.PERMISSION:
        return PermissionDeniedError(f"{where}: permission denied: {message}", status_code=response.status_code,
                                     server_message=message)
    return RequestFailedError(f"{where}: HTTP {response.status_code}: {message}", status_code=response.status_code,
                              server_message=message)


def read_config(response: httpx.Response) -> str | None:
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise fail(response)
    return response.text


def read_true(response: httpx.Response) -> bool:
    if response.status_code != 200:
        raise fail(response)
    return response.text.strip() == "true"


def _config_key(data_id: str, group: str, tenant: str) -> dict[str, str]:
    params = {"dataId": data_id, "group": group}
    if tenant:
        params["tenant"] = tenant
    return params


def get_config_call(data_id: str, group: str, tenant: str) -> Call[str | None]:
    return Call("GET", "/v1/cs/configs", _config_key(data_id, group, tenant), None, read_config)


def publish_config_call(data_id: str, content: str, group: str, tenant: str, type: str | None) -> Call[bool]:
    form = {**_config_key(data_id, group, tenant), "content": content}
    if type:
        form["type"] = type
    return Call("POST", "/v1/cs/configs", None, form, read_true)


def remove_config_call(data_id: str, group: str, tenant: str) -> Call[bool]:
    return Call("DELETE", "/v1/cs/configs", _config_key(data_id, group, tenant), None, read_true)


def read_changed_keys(response: httpx.Response) -> list[Key]:
    """The listener's answer: URL-encoded ``dataId%02group[%02tenant]%01`` per changed key."""
    if response.status_code != 200:
        raise fail(response)
    keys: list[Key] = []
    for line in unquote_plus(response.text.strip()).split(LINE_SEPARATOR):
        fields = line.split(WORD_SEPARATOR)
        if len(fields) in (2, 3) and fields[0]:
            keys.append((fields[0], fields[1], fields[2] if len(fields) == 3 else ""))
    return keys


def listener_call(probes: Mapping[Key, str], settings: WatchSettings) -> Call[list[Key]]:
    """All keys in one poll; the read timeout exceeds the hold so a held poll never times out on our side."""
    text = "".join(WORD_SEPARATOR.join((d, g, md5, t) if t else (d, g, md5)) + LINE_SEPARATOR
                   for (d, g, t), md5 in probes.items())
    hold_ms = str(int(settings.hold * 1000))
    timeout = httpx.Timeout(settings.connect_timeout, read=settings.hold + settings.margin)
    return Call("POST", "/v1/cs/configs/listener", None, {"Listening-Configs": text}, read_changed_keys,
                headers={"Long-Pulling-Timeout": hold_ms}, timeout=timeout)


def content_md5(content: str | None) -> str:
    """Nacos's MD5 of a config (empty for an absent one, as the listener compares it)."""
    return "" if content is None else hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()


# -- values ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A config's new content as a listener sees it; ``content`` is None when the config was removed.

    ``data_id``, ``group`` and ``tenant`` (the namespace, ``""`` for the default) name the config; ``md5`` is the
    MD5 of the content the server sent (``""`` after a removal), the value the next long poll compares against.
    """

    data_id: str
    group: str
    tenant: str
    content: str | None
    md5: str


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How the watch polls: ``hold`` (seconds the server may hold a poll; Nacos clients ask 30), ``margin`` (added
    to the hold for the read timeout, 10 s), ``connect_timeout`` (5 s to open a poll's connection, so a dead server
    is left quickly), ``backoff`` ((first, max) seconds, jittered, after a failed poll; (0.2, 10)).

    Pass one as ``watch=`` to a wrapper client. Bad values raise ``ValueError`` at construction.
    """

    hold: float = 30.0
    margin: float = 10.0
    connect_timeout: float = 5.0
    backoff: tuple[float, float] = (0.2, 10.0)

    def __post_init__(self) -> None:
        if not (self.hold > 0 and self.margin > 0 and 0 < self.backoff[0] <= self.backoff[1]):
            raise ValueError("watch settings: hold, margin and backoff must be positive, backoff (first, max)")


def backoff_seconds(first: float, most: float, attempt: int) -> float:
    """Bounded, jittered exponential backoff (tenacity's ``wait_random_exponential``) for the ``attempt``-th try."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = max(attempt, 1)
    return float(wait_random_exponential(multiplier=first, max=most)(state))


class ConfigWatch:
    """One listener's registration: ``cancel()`` stops its callbacks (at once; no I/O).

    Returned by ``add_config_listener`` on either wrapper client; not made directly. ``data_id``, ``group``,
    ``tenant`` name the config and ``callback`` is what receives each :class:`ConfigChange`.
    """

    def __init__(self, key: Key, callback: Callable[[ConfigChange], Any], state: WatchState) -> None:
        self.data_id, self.group, self.tenant = key
        self.callback = callback
        self._state = state
        self._active = True

    @property
    def key(self) -> Key:
        """``(data_id, group, tenant)``: the config this listener watches, as the poll keys it."""
        return self.data_id, self.group, self.tenant

    @property
    def active(self) -> bool:
        """False once cancelled or once its client closed: no more callbacks will come."""
        return self._active and not self._state.closed

    def cancel(self) -> None:
        """Stop this listener; the poll drops its key when no other listener wants it."""
        if self._active:
            self._active = False
            self._state.remove(self)

    def __repr__(self) -> str:
        return f"ConfigWatch(data_id={self.data_id!r}, group={self.group!r}, tenant={self.tenant!r}, " \
               f"active={self.active})"


@dataclass
class WatchState:
    """A client's watched keys, their last known MD5, and their listeners; shared by the flow and the shell.

    ``generation`` changes whenever the key set does (or the watch closes), which interrupts a poll in flight.
    """

    on_change: Callable[[], None] = lambda: None
    generation: int = 0
    closed: bool = False
    _md5: dict[Key, str] = field(default_factory=dict)
    _listeners: dict[Key, list[ConfigWatch]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def needs_baseline(self, key: Key) -> bool:
        with self._lock:
            return key not in self._md5

    def add(self, watch: ConfigWatch, baseline: str | None) -> None:
        """Register a listener; a new key starts from ``baseline`` (the content read at registration)."""
        with self._lock:
            if watch.key not in self._md5:
                self._md5[watch.key] = content_md5(baseline)
                self.generation += 1
            self._listeners.setdefault(watch.key, []).append(watch)
        self.on_change()

    def remove(self, watch: ConfigWatch) -> None:
        with self._lock:
            listeners = self._listeners.get(watch.key, [])
            if watch in listeners:
                listeners.remove(watch)
            if not listeners:
                self._listeners.pop(watch.key, None)
                self._md5.pop(watch.key, None)
                self.generation += 1
        self.on_change()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.generation += 1
            self._listeners.clear()
            self._md5.clear()
        self.on_change()

    def probes(self) -> tuple[int, dict[Key, str]]:
        with self._lock:
            return self.generation, dict(self._md5)

    def accept(self, key: Key, content: str | None) -> tuple[ConfigChange, list[ConfigWatch]] | None:
        """Record ``content`` for ``key``; the change and who gets it when the MD5 differs from the known one,
        else None — so a change is delivered once, whatever number of polls report it."""
        md5 = content_md5(content)
        with self._lock:
            if key not in self._md5 or self._md5[key] == md5:
                return None
            self._md5[key] = md5
            listeners = list(self._listeners.get(key, []))
        return ConfigChange(key[0], key[1], key[2], content, md5), listeners


# -- commands --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request; the answer is the response (transport errors are thrown into the flow)."""

    call: Call[Any]


#: What a :class:`Poll` or :class:`Sleep` answers when ``interrupted()`` became true first.
INTERRUPTED = object()


@dataclass(frozen=True, slots=True)
class Poll:
    """Send a long poll, abandoning it (answer :data:`INTERRUPTED`) as soon as ``interrupted()`` is true;
    ``deadline`` bounds the whole wait (then ``TimeoutError`` is thrown into the flow)."""

    call: Call[Any]
    interrupted: Callable[[], bool]
    deadline: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` (real time), or less when ``interrupted()`` turns true. The answer is None."""

    seconds: float
    interrupted: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a change to its listeners (in order, on the client's callback thread or loop)."""

    change: ConfigChange
    listeners: tuple[ConfigWatch, ...]


@dataclass(frozen=True, slots=True)
class Save:
    """Keep ``content`` for ``key`` in the snapshot directory (None removes it)."""

    key: Key
    content: str | None


@dataclass(frozen=True, slots=True)
class Load:
    """Read the snapshot of ``key``; the answer is ``(found, content)``."""

    key: Key


@dataclass(frozen=True, slots=True)
class Emit:
    """Report an event through the client's ``on_event`` hook and log."""

    event: TokenEvent


Command = Send | Poll | Sleep | Deliver | Save | Load | Emit
Flow = Generator[Command, Any, T]


# -- flows -----------------------------------------------------------------------------------------------------------


def get_config_flow(key: Key, *, snapshots: bool) -> Flow[str | None]:
    """Read a config; keep it on disk; when no server can be reached, answer from the snapshot and say so."""
    try:
        response = yield Send(get_config_call(*key))
    except UNREACHABLE as exc:
        if not snapshots:
            raise
        found, content = yield Load(key)
        if not found:
            raise
        log.warning("config %s/%s: no server reachable (%s); answering from the snapshot", key[1], key[0],
                    type(exc).__name__)
        yield Emit(TokenEvent(kind="snapshot", outcome="served", error=f"{type(exc).__name__}: {exc}"[:300]))
        return content  # type: ignore[no-any-return]
    content = read_config(response)
    if snapshots:
        yield Save(key, content)
    return content


def watch_flow(state: WatchState, settings: WatchSettings, *, snapshots: bool) -> Flow[None]:
    """The whole watch, for every key of a client: poll, read what changed, deliver each change once.

    A poll rejected for its token is healed and replayed by the auth layer inside the one request; a refused
    connection moves to the next server in the client's request path; any other failure backs off (bounded,
    jittered) and polls again. A poll that simply ran out of time is not a failure: poll again at once.
    """
    failures = 0
    while not state.closed:
        generation, probes = state.probes()

        def interrupted(generation: int = generation) -> bool:
            return state.generation != generation

        if not probes:
            yield Sleep(settings.hold, interrupted)  # nothing to watch: wait for a key (or close)
            continue
        try:
            answer = yield Poll(listener_call(probes, settings), interrupted,
                                settings.hold + settings.margin + settings.connect_timeout)
            if answer is INTERRUPTED:
                continue
            changed = read_changed_keys(answer)
        except (httpx.ReadTimeout, TimeoutError):
            continue
        except (*UNREACHABLE, RequestFailedError) as exc:
            failures += 1
            delay = backoff_seconds(*settings.backoff, failures)
            log.warning("config watch: poll failed (%s: %s); polling again in %.2f s", type(exc).__name__,
                        str(exc)[:200], delay)
            yield Sleep(delay, interrupted)
            continue
        failures = 0
        for key in changed:
            if key not in probes:
                continue
            try:
                response = yield Send(get_config_call(*key))
                content = read_config(response)
            except (*UNREACHABLE, RequestFailedError) as exc:
                failures += 1  # the key still differs, so the next poll reports it again
                delay = backoff_seconds(*settings.backoff, failures)
                log.warning("config watch: reading %s failed (%s); retrying in %.2f s", key[0], type(exc).__name__,
                            delay)
                yield Sleep(delay, interrupted)
                break
            accepted = state.accept(key, content)
            if accepted is not None:
                if snapshots:
                    yield Save(key, content)
                yield Deliver(accepted[0], tuple(accepted[1]))


# -- snapshots -------------------------------------------------------------------------------------------------------


class SnapshotStore:
    """Configs kept on disk, one file per key (``<dir>/<tenant or public>/<group>/<dataId>``, names URL-quoted),
    written atomically (temp file, fsync, rename) with mode 0600 in 0700 directories."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, key: Key) -> Path:
        data_id, group, tenant = key
        return self.directory / quote(tenant or "public", safe="") / quote(group, safe="") / quote(data_id, safe="")

    def save(self, key: Key, content: str | None) -> None:
        path = self.path(key)
        if content is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".snapshot-")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(content.encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def load(self, key: Key) -> tuple[bool, str | None]:
        try:
            return True, self.path(key).read_bytes().decode()
        except (FileNotFoundError, NotADirectoryError):
            return False, None
