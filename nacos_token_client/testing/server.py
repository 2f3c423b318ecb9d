"""A Nacos-style server's state and request handling, faithful to real Nacos 2.x/3.x where a client can tell.

:class:`MockNacosServer` holds users, tokens, configs, faults and a clock, and answers :class:`MockRequest`
objects with :class:`MockResponse` objects — or with a :class:`Hold` for a long poll that must wait for a change.
``testing/http.py`` serves it over loopback HTTP and as an httpx transport; both carry out the same answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote_plus

import jwt
from jwt.algorithms import HMACAlgorithm

from .naming import NamingHandler, NamingRegistry

if TYPE_CHECKING:
    from .http import LoopbackServer, MockNacosTransport

__all__ = ["Hold", "MockNacosServer", "MockRequest", "MockResponse", "MockStats"]

DEFAULT_GROUP = "DEFAULT_GROUP"
WORD_SEPARATOR = "\x02"
LINE_SEPARATOR = "\x01"
_HS = {"HS256": HMACAlgorithm.SHA256, "HS384": HMACAlgorithm.SHA384, "HS512": HMACAlgorithm.SHA512}
#: Nacos recognises a token's algorithm by its exact header segment, e.g. ``eyJhbGciOiJIUzI1NiJ9``.
_HEADER_SEGMENTS = {
    base64.urlsafe_b64encode(json.dumps({"alg": alg}, separators=(",", ":")).encode()).rstrip(b"=").decode(): alg
    for alg in _HS
}
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

# Messages, exactly as real Nacos words them (see shared/docs/nacos-auth-facts.md).
USER_NOT_FOUND_V2 = "user not found!"
USER_NOT_FOUND_V3 = "User not found! Please check user exist or password is right!"
TOKEN_INVALID = "token invalid!"
UNSUPPORTED_ALGORITHM = "unsupported signature algorithm"
INVALID_SIGNATURE = "Invalid signature"
TOKEN_EXPIRED = "token expired!"
TOKEN_FROZEN = "token frozen!"
AUTHORIZATION_FAILED = "authorization failed!"


@dataclass(frozen=True, slots=True)
class MockRequest:
    """One HTTP request, independent of how it arrived. Header names are lower-case."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class MockResponse:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    #: Real seconds the front-end waits before answering (``login_delay``).
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Hold:
    """A long poll with nothing changed yet: wait up to ``seconds`` for a change to ``probes``."""

    probes: tuple[tuple[str, str, str, str | None], ...]  # data_id, group, md5, tenant (None: 3-field probe)
    seconds: float


@dataclass(frozen=True, slots=True)
class MockStats:
    """A snapshot of what the server has seen."""

    logins: int
    login_attempts: int
    requests: int
    rejections: Mapping[str, int]
    logins_by_user: Mapping[str, int]


_Handler = Callable[["MockRequest", dict[str, str]], "MockResponse | Hold"]


class _Rejected(Exception):
    def __init__(self, message: str, code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _BadRequest(Exception):
    pass


class MockNacosServer:
    """An in-memory Nacos-style server: auth exactly like Nacos 2.x/3.x, the v1 config API, long polling.

    ``clock`` is a zero-argument callable returning wall seconds, so tests move time instead of sleeping.
    """

    def __init__(  # noqa: PLR0917 - the positional order is public API
        self,
        users: Mapping[str, str] | None = None,
        token_ttl: int = 18000,
        token_cache: bool = False,
        nacos_version: int = 2,
        active_timeout: float | None = None,
        secret_key: str | None = None,
        clock: Callable[[], float] = time.time,
        context_path: str = "/nacos",
        *,
        admins: tuple[str, ...] = ("nacos",),
        unknown_user_status: int = 403,
        poll_min_hold: float = 10.0,
        poll_max_hold: float = 30.0,
        max_body: int = 10 * 1024 * 1024,
    ) -> None:
        if nacos_version not in (2, 3):
            raise ValueError("nacos_version must be 2 or 3")
        if not isinstance(token_ttl, int) or token_ttl <= 0:
            raise ValueError("token_ttl must be a positive whole number of seconds")
        if active_timeout is not None and not active_timeout > 0:
            raise ValueError("active_timeout must be positive seconds or None")
        if unknown_user_status not in (403, 500):
            raise ValueError("unknown_user_status must be 403 or 500")
        self.users: dict[str, str] = dict({"nacos": "nacos"} if users is None else users)
        self.token_ttl = token_ttl
        self.token_cache = token_cache
        self.nacos_version = nacos_version
        self.active_timeout = active_timeout
        self.clock = clock
        self.context_path = "" if context_path.strip("/") == "" else "/" + context_path.strip("/")
        self.admins = admins
        self.unknown_user_status = unknown_user_status
        self.poll_min_hold = poll_min_hold
        self.poll_max_hold = poll_max_hold
        self.max_body = max_body
        #: Real seconds every login waits before it is answered.
        self.login_delay = 0.0
        #: While True every login answers 503.
        self.down = False
        self._lock = threading.RLock()
        self._key = b""
        self._alg = "HS256"
        self._secret_key = ""
        self._revoked: set[str] = set()
        self._last_used: dict[str, float] = {}
        self._cached_tokens: dict[str, tuple[str, int]] = {}
        self.secret_key = secret_key or base64.b64encode(secrets.token_bytes(32)).decode()
        self._denied: set[str] = set()
        self._fail_logins: list[int] = []
        self._configs: dict[tuple[str, str, str], str] = {}
        self._watchers: set[Callable[[], None]] = set()
        self._closed = False
        self._logins = 0
        self._login_attempts = 0
        self._requests = 0
        self._rejections: Counter[str] = Counter()
        self._logins_by_user: Counter[str] = Counter()
        self._loopback: LoopbackServer | None = None
        self._route_table: dict[str, tuple[tuple[str, ...], _Handler]] | None = None
        self._route_version = nacos_version
        self.naming = NamingRegistry(lambda: self.clock())  # noqa: PLW0108 - self.clock may be replaced

    # -- controls ----------------------------------------------------------------------------------------------

    @property
    def secret_key(self) -> str:
        """The signing key, base64 as in ``nacos.core.auth.plugin.nacos.token.secret.key``."""
        return self._secret_key

    @secret_key.setter
    def secret_key(self, value: str) -> None:
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("secret_key must be base64") from exc
        if len(key) < 32:
            raise ValueError("secret_key must decode to at least 32 bytes")
        with self._lock:
            self._secret_key = value
            self._key = key
            self._alg = "HS512" if len(key) >= 64 else "HS384" if len(key) >= 48 else "HS256"
            self._cached_tokens.clear()

    def rotate_secret(self, new_key: str | None = None) -> str:
        """Hot-reload a new key (random when None): every token signed before now fails its signature check."""
        self.secret_key = new_key or base64.b64encode(secrets.token_bytes(len(self._key))).decode()
        return self.secret_key

    def revoke(self, token: str) -> None:
        """Refuse this exact token from now on (``token invalid!``)."""
        with self._lock:
            self._revoked.add(token)
            self._cached_tokens = {u: t for u, t in self._cached_tokens.items() if t[0] != token}

    def fail_logins(self, n: int, status: int = 503) -> None:
        """The next ``n`` login attempts answer ``status``."""
        with self._lock:
            self._fail_logins.extend([status] * n)

    def deny(self, data_id: str) -> None:
        """Every user is refused access to configs with this data id (``authorization failed!``)."""
        with self._lock:
            self._denied.add(data_id)

    def allow(self, data_id: str) -> None:
        with self._lock:
            self._denied.discard(data_id)

    def add_user(self, username: str, password: str) -> None:
        with self._lock:
            self.users[username] = password

    def issue_token(self, username: str = "nacos") -> str:
        """Mint a token as a login would (for tests that need one without logging in)."""
        with self._lock:
            return self._mint(username, self.clock())

    def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        with self._lock:
            return self._configs.get((tenant, group, data_id))

    def set_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "") -> None:
        with self._lock:
            self._configs[(tenant, group, data_id)] = content
        self._notify()

    @property
    def stats(self) -> MockStats:
        with self._lock:
            return MockStats(self._logins, self._login_attempts, self._requests, dict(self._rejections),
                             dict(self._logins_by_user))

    def reset_stats(self) -> None:
        with self._lock:
            self._logins = self._login_attempts = self._requests = 0
            self._rejections.clear()
            self._logins_by_user.clear()

    # -- serving -----------------------------------------------------------------------------------------------

    def transport(self) -> MockNacosTransport:
        """An httpx transport (sync and async) that serves this server's state in-process."""
        from .http import MockNacosTransport  # noqa: PLC0415 - http.py imports this module

        return MockNacosTransport(self)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve over real HTTP on a background thread; returns the base URL ``http://HOST:PORT``."""
        from .http import LoopbackServer  # noqa: PLC0415 - http.py imports this module

        with self._lock:
            if self._loopback is None:
                self._closed = False
                self._loopback = LoopbackServer(self, host, port)
                self._loopback.start()
            return self._loopback.url

    def stop(self) -> None:
        with self._lock:
            loopback, self._loopback = self._loopback, None
            self._closed = True
        self._notify()
        if loopback is not None:
            loopback.stop()

    @contextmanager
    def run(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """``with server.run() as url:`` serves on loopback for the duration of the block."""
        url = self.start(host, port)
        try:
            yield url
        finally:
            self.stop()

    @property
    def url(self) -> str:
        """The loopback base URL (the server must be started)."""
        if self._loopback is None:
            raise RuntimeError("the mock server is not running; call start() or run()")
        return self._loopback.url

    # -- watchers (long polling) ---------------------------------------------------------------------------------

    def add_watcher(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._watchers.add(wake)

    def remove_watcher(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._watchers.discard(wake)

    def _notify(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def changed_keys(self, hold: Hold) -> bytes | None:
        """The long-poll answer if any probe of ``hold`` no longer matches, else None."""
        with self._lock:
            changed = [p for p in hold.probes if self._md5(p[0], p[1], p[3] or "") != p[2]]
        return _encode_changed(changed) if changed else None

    # -- request handling --------------------------------------------------------------------------------------

    def handle(self, request: MockRequest) -> MockResponse | Hold:
        """Answer one request. Never raises: bad input gets a 4xx, a bug a 500, and the server keeps serving."""
        try:
            return self._route(request)
        except _BadRequest as exc:
            return self.error_response(request, 400, str(exc))
        except Exception as exc:  # a mock must survive anything a client sends
            return self.error_response(request, 500, f"caused: {type(exc).__name__};")

    def _route(self, request: MockRequest) -> MockResponse | Hold:
        if len(request.body) > self.max_body:
            return self.error_response(request, 413, "request body too large")
        path = request.path
        if not path.startswith(self.context_path + "/"):
            return self.error_response(request, 404, "No static resource " + path.lstrip("/") + ".")
        sub = path[len(self.context_path):].rstrip("/") or "/"
        route = self._routes().get(sub)
        if route is None:
            return self.error_response(request, 404, "No static resource " + path.lstrip("/") + ".")
        methods, handler = route
        if request.method not in methods:
            return self.error_response(request, 405, f"Request method '{request.method}' is not supported",
                               extra=(("Allow", ", ".join(methods)),))
        return handler(request, _params(request))

    def _routes(self) -> dict[str, tuple[tuple[str, ...], _Handler]]:
        """Path (below the context path) → allowed methods and handler; v3 login only on a 3.x server."""
        if self._route_table is None or self._route_version != self.nacos_version:
            routes: dict[str, tuple[tuple[str, ...], _Handler]] = {
                "/v1/cs/configs": (("GET", "POST", "DELETE"), self._configs_api),
                "/v1/cs/configs/listener": (("POST",), self._listener),
                "/v1/console/health/liveness": (("GET",), self._health),
                "/v1/console/health/readiness": (("GET",), self._health),
                "/v1/auth/login": (("POST",), self._login),
                "/v1/auth/users/login": (("POST",), self._login),
            }
            if self.nacos_version == 3:
                routes["/v3/auth/user/login"] = (("POST",), self._login)
            routes.update({sub: (methods, self._naming_route(handler))
                           for sub, (methods, handler) in self.naming.routes(self.nacos_version).items()})
            self._route_table, self._route_version = routes, self.nacos_version
        return self._route_table

    def _naming_route(self, handler: NamingHandler) -> _Handler:
        def route(request: MockRequest, params: dict[str, str]) -> MockResponse:
            if (rejection := self._guard(request, params)) is not None:
                return rejection
            answer = handler(request.method, params)
            kind = "application/json" if answer.json else "text/plain;charset=UTF-8"
            return MockResponse(answer.status, answer.body.encode(), (("Content-Type", kind),))
        return route

    def _health(self, request: MockRequest, params: dict[str, str]) -> MockResponse:
        return _text(200, "OK")

    # -- login -------------------------------------------------------------------------------------------------

    def _login(self, request: MockRequest, params: dict[str, str]) -> MockResponse:
        with self._lock:
            self._login_attempts += 1
            delay = self.login_delay
            if self.down:
                return _text(503, "server is DOWN now, please try again later!", delay=delay)
            if self._fail_logins:
                status = self._fail_logins.pop(0)
                return _text(status, f"login failure injected by the mock ({status})", delay=delay)
            now = self.clock()
            token = _token_of(request, params)
            try:
                if token is not None:  # a login carrying a token is authenticated by that token, no fallback
                    username = self._verify(token, now)
                else:
                    username = self._check_password(params.get("username"), params.get("password"))
                    token = self._login_token(username, now)
            except _Rejected as exc:
                if exc.code == 500:
                    return _text(500, exc.message, delay=delay)
                return _text(403, exc.message, delay=delay)
            self._last_used[token] = now
            self._logins += 1
            self._logins_by_user[username] += 1
            exp = self._claims(token)[1]
            ttl = math.floor((exp * 1000 - math.floor(now * 1000)) / 1000)  # remaining whole seconds, as Nacos
            body = {"accessToken": token, "tokenTtl": ttl, "globalAdmin": username in self.admins,
                    "username": username}
        return MockResponse(200, json.dumps(body).encode(), (("Content-Type", "application/json"),
                                                             ("Authorization", "Bearer " + token)), delay=delay)

    def _check_password(self, username: str | None, password: str | None) -> str:
        if not username or password is None:
            raise _Rejected(self._user_not_found_message())
        expected = self.users.get(username)
        if expected is None and self.unknown_user_status == 500:
            raise _Rejected(f"caused: User {username} not found;", code=500)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise _Rejected(self._user_not_found_message())
        return username

    def _user_not_found_message(self) -> str:
        return USER_NOT_FOUND_V3 if self.nacos_version == 3 else USER_NOT_FOUND_V2

    def _login_token(self, username: str, now: float) -> str:
        if self.token_cache:
            cached = self._cached_tokens.get(username)
            if cached is not None and math.floor(now) + self.token_ttl // 10 <= cached[1] \
                    and not self._is_frozen(cached[0], now) and cached[0] not in self._revoked:
                return cached[0]
        token = self._mint(username, now)
        if self.token_cache:
            self._cached_tokens[username] = (token, self._claims(token)[1])
        return token

    def _mint(self, username: str, now: float) -> str:
        payload = {"sub": username, "exp": math.floor(now) + self.token_ttl}
        return jwt.encode(payload, self._key, algorithm=self._alg, headers={"typ": None})

    @staticmethod
    def _claims(token: str) -> tuple[str, int]:
        payload = json.loads(jwt.utils.base64url_decode(token.split(".")[1]))
        return payload["sub"], payload["exp"]

    # -- token checks ------------------------------------------------------------------------------------------

    def _verify(self, token: str, now: float) -> str:
        """The user a token belongs to, checked in Nacos's order: shape, algorithm, signature, payload, expiry."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _Rejected(TOKEN_INVALID)
        alg = _HEADER_SEGMENTS.get(parts[0])
        if alg is None:
            raise _Rejected(UNSUPPORTED_ALGORITHM)
        try:
            signature = jwt.utils.base64url_decode(parts[2])
        except (binascii.Error, ValueError):
            raise _Rejected(INVALID_SIGNATURE) from None
        if not HMACAlgorithm(_HS[alg]).verify(f"{parts[0]}.{parts[1]}".encode(), self._key, signature):
            raise _Rejected(INVALID_SIGNATURE)
        try:
            payload = json.loads(jwt.utils.base64url_decode(parts[1]))
            username, exp = payload["sub"], payload["exp"]
            if not isinstance(username, str) or not isinstance(exp, int):
                raise TypeError
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _Rejected(TOKEN_INVALID) from None
        if exp < now:  # equal is still valid
            raise _Rejected(TOKEN_EXPIRED)
        if token in self._revoked:
            raise _Rejected(TOKEN_INVALID)
        if self._is_frozen(token, now):
            raise _Rejected(TOKEN_FROZEN)
        if username not in self.users:
            raise _Rejected(self._user_not_found_message())
        return username

    def _is_frozen(self, token: str, now: float) -> bool:
        if self.active_timeout is None:
            return False
        last = self._last_used.get(token)
        return last is None or now - last > self.active_timeout

    def _authenticate(self, request: MockRequest, params: dict[str, str], data_id: str | None) -> str:
        now = self.clock()
        token = _token_of(request, params)
        if token is not None:
            username = self._verify(token, now)
            self._last_used[token] = now  # every accepted use renews the idle timer
        elif params.get("username"):
            username = self._check_password(params.get("username"), params.get("password"))
        else:
            raise _Rejected(self._user_not_found_message())
        if data_id is not None and data_id in self._denied:
            raise _Rejected(AUTHORIZATION_FAILED, code=403)
        return username

    def _guard(self, request: MockRequest, params: dict[str, str]) -> MockResponse | None:
        """Authenticate a resource request; None when it may proceed, else the rejection."""
        with self._lock:
            self._requests += 1
            try:
                self._authenticate(request, params, params.get("dataId"))
            except _Rejected as exc:
                message = exc.message
                if self.nacos_version == 3:
                    message = f"Code: {exc.code if exc.code in (401, 403) else 401}, Message: {message}."
                self._rejections[message] += 1
                return self.error_response(request, 403, message)
        return None

    # -- config API --------------------------------------------------------------------------------------------

    def _configs_api(self, request: MockRequest, params: dict[str, str]) -> MockResponse:
        rejection = self._guard(request, params)
        if rejection is not None:
            return rejection
        data_id = _required(params, "dataId")
        group = _required(params, "group")
        tenant = params.get("tenant", "")
        key = (tenant, group, data_id)
        if request.method == "GET":
            with self._lock:
                content = self._configs.get(key)
            if content is None:
                return _text(404, "config data not exist\n")
            md5 = hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()
            return _text(200, content, extra=(("Content-MD5", md5), ("Config-Type", "text"),
                                              ("Pragma", "no-cache"), ("Cache-Control", "no-cache,no-store")))
        if request.method == "POST":
            content = _required(params, "content")
            if not content.strip():
                raise _BadRequest("invalid content")
            with self._lock:
                changed = self._configs.get(key) != content
                self._configs[key] = content
        else:
            with self._lock:
                changed = self._configs.pop(key, None) is not None
        if changed:
            self._notify()
        return _text(200, "true")

    def _md5(self, data_id: str, group: str, tenant: str) -> str:
        content = self._configs.get((tenant, group, data_id))
        return "" if content is None else hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()

    def _listener(self, request: MockRequest, params: dict[str, str]) -> MockResponse | Hold:
        rejection = self._guard(request, params)
        if rejection is not None:
            return rejection
        probes = _parse_probes(_required(params, "Listening-Configs"))
        hold = Hold(probes, 0.0)
        changed = self.changed_keys(hold)
        if changed is not None:
            return poll_answer(changed)
        timeout = request.headers.get("long-pulling-timeout")
        if timeout is None or request.headers.get("long-pulling-timeout-no-hangup", "").lower() == "true":
            return poll_answer(b"")
        try:
            millis = int(timeout)
        except ValueError:
            raise _BadRequest("Long-Pulling-Timeout must be a number of milliseconds") from None
        seconds = min(max(self.poll_min_hold, millis / 1000 - 0.5), self.poll_max_hold)
        return Hold(probes, max(seconds, 0.0))

    # -- answers -----------------------------------------------------------------------------------------------

    def error_response(self, request: MockRequest, status: int, message: str,
               extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
        """Spring's error answer: JSON, or an HTML page when the client asks for text/html."""
        reason = _REASONS.get(status, "Error")
        if "text/html" in request.headers.get("accept", ""):
            page = (f"<html><body><h1>Whitelabel Error Page</h1><p>This application has no explicit mapping for "
                    f"/error, so you are seeing this as a fallback.</p><div>There was an unexpected error "
                    f"(type={reason}, status={status}).</div><div>{escape(message)}</div></body></html>")
            return MockResponse(status, page.encode(), (("Content-Type", "text/html;charset=UTF-8"), *extra))
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).isoformat(timespec="milliseconds")
        body = {"timestamp": stamp, "status": status, "error": reason, "message": message, "path": request.path}
        return MockResponse(status, json.dumps(body).encode(), (("Content-Type", "application/json"), *extra))


# -- helpers -------------------------------------------------------------------------------------------------------


def _params(request: MockRequest) -> dict[str, str]:
    """Servlet-style parameters: query string first, then a form body; the first value of a name wins."""
    params: dict[str, str] = {}
    sources = [request.query]
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") and request.body:
        try:
            sources.append(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise _BadRequest("request body is not UTF-8") from None
    for source in sources:
        try:
            pairs = parse_qsl(source, keep_blank_values=True, encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise _BadRequest("parameters are not valid UTF-8") from None
        for name, value in pairs:
            params.setdefault(name, value)
    return params


def _token_of(request: MockRequest, params: Mapping[str, str]) -> str | None:
    bearer = request.headers.get("authorization", "")
    if bearer.startswith("Bearer ") and bearer[7:].strip():
        return bearer[7:].strip()
    token = params.get("accessToken") or request.headers.get("accesstoken")
    return token or None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _BadRequest(f"Required request parameter '{name}' for method parameter type String is not present")
    return value


def _parse_probes(text: str) -> tuple[tuple[str, str, str, str | None], ...]:
    probes: list[tuple[str, str, str, str | None]] = []
    for line in text.split(LINE_SEPARATOR):
        if not line:
            continue
        fields = line.split(WORD_SEPARATOR)
        if len(fields) == 3:
            probes.append((fields[0], fields[1], fields[2], None))
        elif len(fields) == 4:
            probes.append((fields[0], fields[1], fields[2], fields[3]))
        else:
            raise _BadRequest("invalid probeModify")
    if not probes:
        raise _BadRequest("invalid probeModify")
    return tuple(probes)


def _encode_changed(changed: list[tuple[str, str, str, str | None]]) -> bytes:
    """``dataId%02group[%02tenant]%01`` per key, URL-encoded like Java's URLEncoder, then a newline."""
    text = ""
    for data_id, group, _md5, tenant in changed:
        text += data_id + WORD_SEPARATOR + group
        if tenant:
            text += WORD_SEPARATOR + tenant
        text += LINE_SEPARATOR
    return (quote_plus(text, safe="*").replace("~", "%7E") + "\n").encode()


def poll_answer(body: bytes) -> MockResponse:
    return MockResponse(200, body, (("Content-Type", "text/html;charset=UTF-8"), ("Pragma", "no-cache"),
                                    ("Cache-Control", "no-cache,no-store")))


def _text(status: int, text: str, *, delay: float = 0.0, extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
    return MockResponse(status, text.encode(), (("Content-Type", "text/plain;charset=UTF-8"), *extra), delay=delay)

