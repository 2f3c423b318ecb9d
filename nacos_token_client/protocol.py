"""The Nacos wire: server addresses, login requests, login answers, and the rejection classifier.

Pure functions over httpx request/response objects; no sending happens here. Everything a server can answer is
turned into a value or a typed error from ``errors.py``, never a ``KeyError``/``TypeError``.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeGuard
from urllib.parse import urlsplit

import httpx
import jwt

from .errors import AuthenticationError, ConfigurationError, LoginResponseError, LoginUnavailableError
from .lifecycle import fingerprint
from .redaction import redact

__all__ = [
    "ApiVersion",
    "LoginAnswer",
    "RejectionClassifier",
    "RejectionKind",
    "ServerAddress",
    "TransientLoginError",
    "LoginEndpointMissing",
    "classify_rejection",
    "classify_rejection_message",
    "is_token_value",
    "jwt_expiry",
    "login_request",
    "parse_login_response",
    "parse_server_addresses",
    "rejection_message",
]

ApiVersion = Literal["v1", "v3", "auto"]
LOGIN_PATHS: dict[str, str] = {"v1": "/v1/auth/login", "v3": "/v3/auth/user/login"}
DEFAULT_PORT = 8848
MAX_TOKEN_LENGTH = 16 * 1024
MAX_TOKEN_TTL = 10 * 365 * 24 * 3600  # ten years: anything longer is a broken answer, not a token life
MAX_LOGIN_BODY = 1024 * 1024
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no spaces, no CR/LF (header injection)


def is_token_value(value: object) -> TypeGuard[str]:
    """Could ``value`` be a token? 1 to MAX_TOKEN_LENGTH visible ASCII characters: what can be sent as a header
    value or query parameter as it is. Login answers and stored tokens are both held to it."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LENGTH and _TOKEN_CHARS.fullmatch(value) is not None


# -- server addresses ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One Nacos server: where it is and under which context path its API lives.

    ``scheme`` (``http``/``https``), ``host``, ``port`` and ``context_path`` (``""`` or ``/nacos``-like, no
    trailing slash). Its ``str`` is its :attr:`base_url`, which never carries credentials.
    """

    scheme: str
    host: str
    port: int
    context_path: str

    @property
    def base_url(self) -> str:
        """``scheme://host:port/context``: what API paths are appended to (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.context_path}"

    def url(self, path: str) -> str:
        """The full URL of an API ``path`` (which starts with ``/``) on this server."""
        return self.base_url + path

    def __str__(self) -> str:
        return self.base_url


def _normalise_context(path: str) -> str:
    path = path.strip()
    if path in ("", "/"):
        return ""
    return "/" + path.strip("/")


def _valid_host(host: str) -> bool:
    """A DNS name (letters, digits, ``-``, ``_``, dots; IDNA names too), an IPv4 or a bracketed IPv6 address."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True
    return all(ch.isalnum() or ch in "-._" for ch in host) and not host.startswith(("-", "."))


def parse_server_addresses(value: str | Sequence[str], *, context_path: str = "/nacos") -> tuple[ServerAddress, ...]:
    """``"host:port"``, ``"http(s)://host:port[/context]"``, a comma-separated string of those, or a list.

    Anything else is refused with a :class:`ConfigurationError` naming ``server_addresses``: a port outside
    1-65535, a host with spaces, credentials, and a query or fragment — which a server address has no place for
    (requests would silently go without it).
    """
    items: list[str] = []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Sequence):
        for item in value:
            if not isinstance(item, str):
                raise ConfigurationError(f"server_addresses must be strings, got {type(item).__name__}")
            items.extend(item.split(","))
    else:
        raise ConfigurationError(f"server_addresses must be a string or a list of strings, got {type(value).__name__}")
    default_context = _normalise_context(context_path)
    servers: list[ServerAddress] = []
    for raw in (item.strip() for item in items):
        if not raw:
            continue
        has_scheme = "://" in raw
        parts = urlsplit(raw if has_scheme else f"http://{raw}")
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"server_addresses: unsupported scheme in {raw!r} (http or https)")
        if parts.username or parts.password or "@" in parts.netloc:  # first: later messages repeat the address
            raise ConfigurationError("server_addresses must not carry credentials; use username=/password=")
        if parts.query or parts.fragment or "?" in raw or "#" in raw:  # the query is not repeated: it may hold secrets
            bare = raw.split("?", 1)[0].split("#", 1)[0]
            raise ConfigurationError(f"server_addresses: {bare!r} has a query or fragment ('?…' or '#…'); a server "
                                     "address cannot carry one, so it is refused rather than dropped")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"server_addresses: bad port in {raw!r} (1-65535)") from None
        host = parts.hostname
        if not host:
            raise ConfigurationError(f"server_addresses: no host in {raw!r}")
        if not _valid_host(host):
            raise ConfigurationError(f"server_addresses: {host!r} in {raw!r} is not a host name or IP address")
        if port is None:
            port = (443 if scheme == "https" else 80) if has_scheme else DEFAULT_PORT
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"server_addresses: bad port in {raw!r} (1-65535)")
        if any(ch.isspace() for ch in parts.path) or any(s in (".", "..") for s in parts.path.split("/")):
            raise ConfigurationError(f"server_addresses: bad path in {raw!r}")
        ctx = _normalise_context(parts.path) if parts.path not in ("", "/") else default_context
        server = ServerAddress(scheme, host, port, ctx)
        if server not in servers:
            servers.append(server)
    if not servers:
        raise ConfigurationError("server_addresses: no server address given")
    return tuple(servers)


# -- login ---------------------------------------------------------------------------------------------------------


def login_request(server: ServerAddress, api: Literal["v1", "v3"], username: str, password: str) -> httpx.Request:
    """A login: credentials in the form body (never the URL), and no token (a token would be checked instead)."""
    return httpx.Request(
        "POST",
        server.url(LOGIN_PATHS[api]),
        data={"username": username, "password": password},
        headers={"Accept": "application/json"},
    )


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    """A parsed successful login. ``repr`` hides the token."""

    token: str
    token_ttl: float
    jwt_exp: float | None
    username: str | None
    global_admin: bool | None

    def __repr__(self) -> str:
        return (f"LoginAnswer(token=<{fingerprint(self.token)}>, token_ttl={self.token_ttl!r}, "
                f"jwt_exp={self.jwt_exp!r}, username={self.username!r})")


class TransientLoginError(LoginUnavailableError):
    """One login attempt failed in a way another attempt may not (connection error, 5xx, 429, 408)."""


class LoginEndpointMissing(LoginResponseError):
    """The login path answered 404/501: with ``api="auto"`` the client falls back from v3 to v1."""


_CREDENTIAL_500 = re.compile(r"caused:\s*User\b.*\bnot found", re.IGNORECASE | re.DOTALL)


def _short_text(body: bytes, limit: int = 200, secrets: Sequence[str] = ()) -> str:
    """The start of a server's text, on one line, with secrets redacted *before* it is cut short (a secret cut
    in half would no longer be recognised)."""
    text = redact(body[:8192].decode("utf-8", "replace").strip(), secrets)
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def parse_login_response(status_code: int, body: bytes, *, server: str = "",
                         secrets: Sequence[str] = ()) -> LoginAnswer:
    """Turn a login answer into a :class:`LoginAnswer` or a typed error.

    The body is never echoed when it could carry a token (a 200); error bodies are short server messages, with
    ``secrets`` (the password sent), ``password=`` fields and token-like strings redacted: a proxy may echo the
    login form back.
    """
    where = f" from {server}" if server else ""
    if status_code in (401, 403):
        message = _short_text(body, secrets=secrets) or f"HTTP {status_code}"
        raise AuthenticationError(f"login refused{where}: {message}", status_code=status_code, server=server)
    if status_code == 500 and _CREDENTIAL_500.search(body[:4096].decode("utf-8", "replace")):
        raise AuthenticationError(f"login refused{where}: unknown user (HTTP 500)", status_code=500, server=server)
    if status_code in (404, 501):
        raise LoginEndpointMissing(f"login endpoint not found{where} (HTTP {status_code}); check context_path and api",
                                   server=server)
    if status_code >= 500 or status_code in (408, 425, 429):
        raise TransientLoginError(f"login failed{where}: HTTP {status_code} {_short_text(body, 80, secrets)}".rstrip())
    if status_code != 200:
        shown = _short_text(body, 80, secrets)
        raise LoginResponseError(f"unexpected login answer{where}: HTTP {status_code} {shown}".rstrip(), server=server)
    if len(body) > MAX_LOGIN_BODY:
        raise LoginResponseError(f"login answer{where} is too large ({len(body)} bytes)", server=server)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        kind = "HTML" if body.lstrip()[:1] == b"<" else "not JSON"
        raise LoginResponseError(f"login answer{where} is {kind} ({len(body)} bytes)", server=server) from None
    if not isinstance(data, dict):
        raise LoginResponseError(f"login answer{where} is JSON {type(data).__name__}, not an object", server=server)
    token = data.get("accessToken")
    if token is None:
        raise LoginResponseError(f"login answer{where} has no accessToken", server=server)
    if not isinstance(token, str) or not token:
        raise LoginResponseError(f"login answer{where}: accessToken is not a non-empty string", server=server)
    if not is_token_value(token):
        raise LoginResponseError(f"login answer{where}: accessToken has characters or a length no token has",
                                 server=server)
    ttl = data.get("tokenTtl")
    if ttl is None:
        raise LoginResponseError(f"login answer{where} has no tokenTtl", server=server)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise LoginResponseError(f"login answer{where}: tokenTtl is {type(ttl).__name__}, not a number", server=server)
    if not math.isfinite(ttl) or ttl <= 0:
        raise LoginResponseError(f"login answer{where}: tokenTtl must be positive, got {ttl!r}", server=server)
    if ttl > MAX_TOKEN_TTL:
        raise LoginResponseError(f"login answer{where}: tokenTtl {ttl!r} s is absurdly large", server=server)
    username = data.get("username")
    admin = data.get("globalAdmin")
    return LoginAnswer(
        token=token,
        token_ttl=float(ttl),
        jwt_exp=jwt_expiry(token),
        username=username if isinstance(username, str) else None,
        global_admin=admin if isinstance(admin, bool) else None,
    )


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (we hold no key); None for anything else."""
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    if not math.isfinite(exp) or exp <= 0 or exp > 1e11:
        return None
    return float(exp)


# -- rejections ----------------------------------------------------------------------------------------------------


class RejectionKind(enum.Enum):
    """What a 401/403 means to the client."""

    NOT_A_REJECTION = "none"
    TOKEN = "token"  # invalid, expired, wrong key, frozen: a re-login fixes it
    PERMISSION = "permission"  # the token is fine, the user may not do this: never re-login
    MISSING = "missing"  # the server saw no token at all (a proxy dropped it?): re-login cannot help
    REPLACED = "replaced"  # Sa-Token: another login replaced this one
    KICKED_OUT = "kicked_out"  # Sa-Token: an operator kicked this session out


RejectionClassifier = Callable[[httpx.Response], RejectionKind]

_TOKEN_MESSAGES = (
    "token invalid!",
    "token expired!",
    "invalid signature",
    "unsupported signature algorithm",
    "token frozen!",
    # Sa-Token's NotLoginException messages
    "token 无效",
    "token 已过期",
    "token 已被冻结",
)
_CODE_PREFIX = re.compile(r"Code:\s*(\d{3})\s*,\s*Message:", re.IGNORECASE)


def _message_of(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            return stripped
        if isinstance(data, dict):
            for key in ("message", "msg", "error_description", "errMsg"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    return value
    return stripped


def classify_rejection_message(status_code: int, text: str) -> RejectionKind:
    """Classify a rejection by status and body text (Spring error JSON, plain text or HTML)."""
    if status_code not in (401, 403):
        return RejectionKind.NOT_A_REJECTION
    message = _message_of(text[:8192])
    lowered = message.lower()
    coded = _CODE_PREFIX.search(message)
    if coded:  # Nacos 3.x: the embedded code is the only way to tell token from permission problems
        if coded.group(1) == "403":
            return RejectionKind.PERMISSION
        return RejectionKind.MISSING if "user not found" in lowered else RejectionKind.TOKEN
    if "authorization failed" in lowered:
        return RejectionKind.PERMISSION
    if any(m in lowered for m in _TOKEN_MESSAGES):
        return RejectionKind.TOKEN
    if "顶下线" in message or "replaced" in lowered:
        return RejectionKind.REPLACED
    if "踢下线" in message or "kicked out" in lowered or "kick out" in lowered:
        return RejectionKind.KICKED_OUT
    if "user not found" in lowered:
        return RejectionKind.MISSING
    if status_code == 401:
        return RejectionKind.TOKEN
    return RejectionKind.PERMISSION


def rejection_message(response: httpx.Response, limit: int = 120, secrets: Sequence[str] = ()) -> str:
    """The server's words for a rejection (Spring's ``message``, or the text), shortened; token-like strings and
    ``secrets`` (the token sent) redacted."""
    message = redact(_message_of(response.content[:8192].decode("utf-8", "replace")), secrets)
    return " ".join(message.split())[:limit]


def classify_rejection(response: httpx.Response) -> RejectionKind:
    """The default classifier: the response body must already be read."""
    if response.status_code not in (401, 403):
        return RejectionKind.NOT_A_REJECTION
    return classify_rejection_message(response.status_code, response.content[:8192].decode("utf-8", "replace"))
