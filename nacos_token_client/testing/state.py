"""The mock Nacos server's state and rules: users, roles, tokens, configs, namespaces, and how Nacos checks a caller.

:class:`NacosState` knows nothing of HTTP routes or transports. The API modules (``auth_api``, ``config_api``,
``console_api``, and any module a test adds) turn requests into calls on it; ``server.py`` puts them together.
Every rule cites the Nacos source file it reproduces (tags 2.2.3, 2.5.1, 3.0.3 and a 3.1 snapshot).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import jwt

from .model import (
    Hold,
    MockRequest,
    MockResponse,
    MockStats,
    encode_changed,
    is_blank,
    java_html_escape,
    java_split_dots,
    spring_error,
    text,
)

__all__ = ["ALL_VERSIONS", "NacosState", "Route"]

DEFAULT_GROUP = "DEFAULT_GROUP"
ADMIN_ROLE = "ROLE_ADMIN"
ALL_VERSIONS = frozenset({"2.2", "2.5", "3.1"})
_VERSION_ALIASES = {"2": "2.5", "3": "3.1", "2.2": "2.2", "2.5": "2.5", "3.1": "3.1"}
_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
#: NacosSignatureAlgorithm knows a token's algorithm by its exact header segment, e.g. ``eyJhbGciOiJIUzI1NiJ9``.
_HEADER_SEGMENTS = {
    base64.urlsafe_b64encode(json.dumps({"alg": alg}, separators=(",", ":")).encode()).rstrip(b"=").decode(): alg
    for alg in _ALGORITHMS
}
#: ConfigType.java: the types a publish may set; anything else is stored as "text".
CONFIG_TYPES = frozenset({"properties", "xml", "json", "text", "html", "yaml", "toml", "unset"})

# Messages, exactly as Nacos words them (plugin-default-impl AbstractAuthenticationManager, NacosSignatureAlgorithm,
# NacosRoleServiceImpl; 3.x AbstractAuthenticationManager.USER_NOT_FOUND_MESSAGE).
USER_NOT_FOUND_V2 = "user not found!"
USER_NOT_FOUND_V3 = "User not found! Please check user exist or password is right!"
TOKEN_INVALID = "token invalid!"
UNSUPPORTED_ALGORITHM = "unsupported signature algorithm"
INVALID_SIGNATURE = "Invalid signature"
TOKEN_EXPIRED = "token expired!"
TOKEN_FROZEN = "token frozen!"  # the mock's idle freeze (Sa-Token's active-timeout), not a Nacos answer
AUTHORIZATION_FAILED = "authorization failed!"


class Rejected(Exception):
    """An ``AccessException``: ``code`` is the 3.x AuthResult code (401 identity, 403 permission)."""

    def __init__(self, message: str, code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UnknownUser(Exception):
    """Spring's ``UsernameNotFoundException`` from ``loadUserByUsername``: not an AccessException, so every
    caller answers it differently (see ``answer_unknown_user`` and the login handlers)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Handler = Callable[["NacosState", MockRequest, dict[str, str]], "MockResponse | Hold"]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint below the context path: its methods, its handler, and the versions that serve it."""

    path: str
    methods: tuple[str, ...]
    handler: Handler
    versions: frozenset[str] = ALL_VERSIONS


def parse_version(value: str | int) -> str:
    """``"2.2"``, ``"2.5"``, ``"3.1"``; ``2`` means 2.5 and ``3`` means 3.1."""
    version = _VERSION_ALIASES.get(str(value))
    if version is None:
        raise ValueError("nacos_version must be one of 2.2, 2.5, 3.1 (or 2, 3)")
    return version


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class NacosState:
    """Everything a Nacos server remembers, with the rules it applies; thread-safe behind one lock."""

    def __init__(  # noqa: PLR0917 - the positional order is public API
        self,
        users: Mapping[str, str] | None = None,
        token_ttl: int = 18000,
        token_cache: bool = False,
        nacos_version: str | int = "2.5",
        active_timeout: float | None = None,
        secret_key: str | None = None,
        clock: Callable[[], float] = time.time,
        context_path: str = "/nacos",
        *,
        auth_enabled: bool = True,
        admins: tuple[str, ...] | None = None,
        unknown_user_status: int | None = None,
        poll_min_hold: float = 10.0,
        poll_max_hold: float | None = None,
        max_body: int = 10 * 1024 * 1024,
    ) -> None:
        if not isinstance(token_ttl, int) or token_ttl <= 0:
            raise ValueError("token_ttl must be a positive whole number of seconds")
        if active_timeout is not None and not active_timeout > 0:
            raise ValueError("active_timeout must be positive seconds or None")
        if unknown_user_status not in (None, 403, 500):
            raise ValueError("unknown_user_status must be None (the version's answer), 403 or 500")
        self.nacos_version = parse_version(nacos_version)
        self.users: dict[str, str] = dict({"nacos": "nacos"} if users is None else users)
        self.token_ttl = token_ttl
        self.token_cache = token_cache
        self.active_timeout = active_timeout
        self.clock = clock
        self.context_path = "" if context_path.strip("/") == "" else "/" + context_path.strip("/")
        self.auth_enabled = auth_enabled
        self.unknown_user_status = unknown_user_status
        self.poll_min_hold = poll_min_hold
        self.poll_max_hold = poll_max_hold
        self.max_body = max_body
        #: Real seconds every login waits before it is answered.
        self.login_delay = 0.0
        #: While True every login answers 503.
        self.down = False
        self._lock = threading.RLock()
        self._started = clock()
        self._key = b""
        self._alg = "HS256"
        self._secret_key = ""
        self.secret_key = secret_key or base64.b64encode(secrets.token_bytes(32)).decode()
        self._roles: dict[str, set[str]] = {
            name: {ADMIN_ROLE} for name in (self.users if admins is None else admins)}
        self._permissions: dict[str, set[tuple[str, str]]] = {}
        self._namespaces: dict[str, tuple[str, str]] = {}
        self._revoked: set[str] = set()
        self._last_used: dict[str, float] = {}
        # CachedJwtTokenManager's two maps: token -> (user, expiry ms) and user -> (token, expiry ms)
        self._token_map: dict[str, tuple[str, int]] = {}
        self._user_map: dict[str, tuple[str, int]] = {}
        self._denied: set[str] = set()
        self._fail_logins: list[int] = []
        self._configs: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._watchers: set[Callable[[], None]] = set()
        self._closed = False
        self._logins = 0
        self._login_attempts = 0
        self._requests = 0
        self._rejections: Counter[str] = Counter()
        self._logins_by_user: Counter[str] = Counter()

    @property
    def major(self) -> int:
        """2 or 3."""
        return int(self.nacos_version[0])

    @property
    def lock(self) -> threading.RLock:
        """The state's one lock, for API modules that read and write in one step."""
        return self._lock

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
            # NacosJwtParser: the key's bit length picks the algorithm. A hot reload replaces only the parser:
            # CachedJwtTokenManager's maps survive it (JwtTokenManager.onEvent).
            self._secret_key = value
            self._key = key
            self._alg = "HS512" if len(key) >= 64 else "HS384" if len(key) >= 48 else "HS256"

    def rotate_secret(self, new_key: str | None = None) -> str:
        """Hot-reload a new key (random when None): tokens signed before now fail their signature check,
        except those the token cache already holds (``token_cache=True``), as on real Nacos."""
        self.secret_key = new_key or base64.b64encode(secrets.token_bytes(len(self._key))).decode()
        return self.secret_key

    def revoke(self, token: str) -> None:
        """Refuse this exact token from now on (``token invalid!``); a mock control, Nacos has none."""
        with self._lock:
            self._revoked.add(token)
            self._token_map.pop(token, None)
            self._user_map = {u: t for u, t in self._user_map.items() if t[0] != token}

    def fail_logins(self, n: int, status: int = 503) -> None:
        """The next ``n`` login attempts answer ``status``."""
        with self._lock:
            self._fail_logins.extend([status] * n)

    def deny(self, data_id: str) -> None:
        """Every user, admins too, is refused configs with this data id (``authorization failed!``)."""
        with self._lock:
            self._denied.add(data_id)

    def allow(self, data_id: str) -> None:
        """Undo :meth:`deny`."""
        with self._lock:
            self._denied.discard(data_id)

    def add_user(self, username: str, password: str) -> None:
        """A user with no role, as Nacos creates one: it can log in but is refused every resource until
        :meth:`grant` gives it a permission."""
        with self._lock:
            self.users[username] = password

    def delete_user(self, username: str) -> None:
        """Remove a user; its roles and its tokens survive, as in Nacos (``deleteUser`` removes the user row only,
        and a token is checked without a user lookup)."""
        with self._lock:
            self.users.pop(username, None)

    def grant(self, username: str, resource: str, action: str) -> None:
        """Give ``username`` (through a role of the same name) ``action`` ("r", "w" or "rw") on ``resource``,
        in Nacos's syntax ``namespace:group:config/dataId`` with ``*`` wildcards (``:*:*`` is all of the
        default namespace, ``dev:*:*`` all of ``dev``)."""
        if action not in ("r", "w", "rw"):
            raise ValueError('action must be "r", "w" or "rw"')
        if not resource:
            raise ValueError("resource must not be empty")
        with self._lock:
            self._roles.setdefault(username, set()).add(username)
            self._permissions.setdefault(username, set()).add((resource, action))

    def make_admin(self, username: str) -> None:
        """Bind ``username`` to ROLE_ADMIN (a global admin passes every permission check)."""
        with self._lock:
            self._roles.setdefault(username, set()).add(ADMIN_ROLE)

    def is_admin(self, username: str) -> bool:
        """``hasGlobalAdminRole(username)``: roles are looked up by name, so they outlive a deleted user."""
        with self._lock:
            return ADMIN_ROLE in self._roles.get(username, ())

    def has_admin(self) -> bool:
        """``hasGlobalAdminRole()``: does any user name hold ROLE_ADMIN?"""
        with self._lock:
            return any(ADMIN_ROLE in roles for roles in self._roles.values())

    def issue_token(self, username: str = "nacos") -> str:
        """Mint a token as a login would (for tests that need one without logging in)."""
        with self._lock:
            return self.mint(username, self.clock())

    def normalize_tenant(self, tenant: str | None) -> str:
        """NamespaceUtil.processNamespaceParameter: on 2.x blank, "public" and "null" are the default namespace
        ""; on 3.x a blank tenant is "public" (and "null" is a namespace of its own)."""
        if self.major == 2:
            if is_blank(tenant) or tenant.strip().lower() in ("public", "null"):  # type: ignore[union-attr]
                return ""
            return tenant.strip()  # type: ignore[union-attr]
        return "public" if is_blank(tenant) else tenant.strip()  # type: ignore[union-attr]

    def get_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> str | None:
        """A config's content, or None."""
        with self._lock:
            entry = self._configs.get((self.normalize_tenant(tenant), group, data_id))
        return None if entry is None else entry[0]

    def config_entry(self, data_id: str, group: str, tenant: str) -> tuple[str, str] | None:
        """Content and type of a config, by its stored (normalized) tenant."""
        with self._lock:
            return self._configs.get((tenant, group, data_id))

    def set_config(self, data_id: str, content: str, group: str = DEFAULT_GROUP, tenant: str = "",
                   config_type: str = "text") -> bool:
        """Publish a config (the tenant normalized as Nacos does); True when the content changed."""
        with self._lock:
            key = (self.normalize_tenant(tenant), group, data_id)
            old = self._configs.get(key)
            self._configs[key] = (content, config_type if config_type in CONFIG_TYPES else "text")
        changed = old is None or old[0] != content
        if changed:
            self._notify()
        return changed

    def remove_config(self, data_id: str, group: str = DEFAULT_GROUP, tenant: str = "") -> bool:
        """Delete a config; True when there was one."""
        with self._lock:
            removed = self._configs.pop((self.normalize_tenant(tenant), group, data_id), None) is not None
        if removed:
            self._notify()
        return removed

    def config_count(self, tenant: str) -> int:
        """How many configs a (normalized) namespace holds."""
        with self._lock:
            return sum(1 for key in self._configs if key[0] == tenant)

    def namespaces(self) -> list[tuple[str, str, str]]:
        """Custom namespaces: (id, name, description), in creation order."""
        with self._lock:
            return [(ns, name, desc) for ns, (name, desc) in self._namespaces.items()]

    def add_namespace(self, namespace_id: str, name: str, description: str = "") -> bool:
        """Create a namespace; False when the id is taken."""
        with self._lock:
            if namespace_id in self._namespaces:
                return False
            self._namespaces[namespace_id] = (name, description)
            return True

    @property
    def stats(self) -> MockStats:
        """What the server has seen so far."""
        with self._lock:
            return MockStats(self._logins, self._login_attempts, self._requests, dict(self._rejections),
                             dict(self._logins_by_user))

    def reset_stats(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._logins = self._login_attempts = self._requests = 0
            self._rejections.clear()
            self._logins_by_user.clear()

    # -- watchers (long polling) ---------------------------------------------------------------------------------

    def add_watcher(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on every config change (a held long poll re-checks its keys)."""
        with self._lock:
            self._watchers.add(wake)

    def remove_watcher(self, wake: Callable[[], None]) -> None:
        """Stop calling ``wake``."""
        with self._lock:
            self._watchers.discard(wake)

    def _notify(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    @property
    def closed(self) -> bool:
        """True once the server stopped: held polls answer at once."""
        return self._closed

    def close(self) -> None:
        """Mark the server stopped and wake every held poll."""
        self._closed = True
        self._notify()

    def md5_of(self, data_id: str, group: str, tenant: str) -> str:
        """The stored content's md5, "" when there is none (ConfigCacheService.getContentMd5)."""
        entry = self.config_entry(data_id, group, tenant)
        return "" if entry is None else hashlib.md5(entry[0].encode(), usedforsecurity=False).hexdigest()

    def changed_keys(self, hold: Hold) -> bytes | None:
        """The long-poll answer if any probe of ``hold`` no longer matches, else None."""
        with self._lock:
            changed = [p for p in hold.probes if self.md5_of(p.data_id, p.group, p.tenant) != p.md5]
        return encode_changed(changed) if changed else None

    # -- logins ------------------------------------------------------------------------------------------------

    def begin_login(self) -> MockResponse | None:
        """Count a login attempt; the injected failure or outage answer, if any."""
        with self._lock:
            self._login_attempts += 1
            if self.down:
                return text(503, "server is DOWN now, please try again later!", delay=self.login_delay)
            if self._fail_logins:
                status = self._fail_logins.pop(0)
                return text(status, f"login failure injected by the mock ({status})", delay=self.login_delay)
        return None

    def login(self, token: str | None, username: str | None, password: str | None) -> tuple[str, str, int]:
        """AbstractAuthenticationManager.authenticate(request) for a login: a token when one is sent (no
        fallback to the credentials), else the credentials. Returns (user, token, tokenTtl)."""
        with self._lock:
            now = self.clock()
            if not is_blank(token):
                user = self.verify(token, now)  # type: ignore[arg-type]
                issued: str = token  # type: ignore[assignment]
            else:
                user = self.check_password(username, password)
                issued = self.login_token(user, now)
            self._last_used[issued] = now
            self._logins += 1
            self._logins_by_user[user] += 1
            return user, issued, self.token_ttl_of(issued, now)

    def user_not_found_message(self) -> str:
        """The AccessException message for bad credentials."""
        return USER_NOT_FOUND_V3 if self.major == 3 else USER_NOT_FOUND_V2

    def check_password(self, username: str | None, password: str | None) -> str:
        """AbstractAuthenticationManager.authenticate(username, rawPassword): blank → AccessException; an unknown
        name → UsernameNotFoundException from NacosUserDetailsServiceImpl (``User %s not found`` since 2.3,
        the bare name up to 2.2.x); a wrong password → AccessException."""
        if is_blank(username) or is_blank(password):
            raise Rejected(self.user_not_found_message())
        expected = self.users.get(username)  # type: ignore[arg-type]
        if expected is None:
            if self.unknown_user_status == 403:
                raise Rejected(self.user_not_found_message())
            name = str(username)
            raise UnknownUser(name if self.nacos_version == "2.2" else f"User {name} not found")
        if not hmac.compare_digest(expected.encode(), password.encode()):  # type: ignore[union-attr]
            raise Rejected(self.user_not_found_message())
        return username  # type: ignore[return-value]

    def login_token(self, username: str, now: float) -> str:
        """CachedJwtTokenManager.createToken: a cached token until ``now + ttl/10`` passes its expiry; else a new
        token, cached with expiry ``now + ttl`` in milliseconds. Without the cache, always a new token."""
        if self.token_cache:
            self._sweep(now)
            cached = self._user_map.get(username)
            if cached is not None and not _now_ms(now) + (self.token_ttl // 10) * 1000 > cached[1] \
                    and not self._is_frozen(cached[0], now):
                return cached[0]
        token = self.mint(username, now)
        if self.token_cache:
            expiry = _now_ms(now) + self.token_ttl * 1000
            self._token_map[token] = (username, expiry)
            self._user_map[username] = (token, expiry)
        return token

    def token_ttl_of(self, token: str, now: float) -> int:
        """``tokenTtl``: a cached token's remaining milliseconds truncated to seconds (CachedJwtTokenManager);
        else ``exp - floor(now)`` (JwtTokenManager.getTokenTtlInSeconds), or the configured life when auth is off."""
        cached = self._token_map.get(token) if self.token_cache else None
        if cached is not None:
            return math.trunc((cached[1] - _now_ms(now)) / 1000)
        if not self.auth_enabled:
            return self.token_ttl
        return self._claims(token)[1] - math.floor(now)

    def mint(self, username: str, now: float) -> str:
        """NacosJwtParser.JwtBuilder: ``{"sub":user,"exp":floor(now)+ttl}`` as Jackson writes it (UTF-8, not
        ``\\u`` escapes), header ``{"alg":...}`` without ``typ``, signed with PyJWT."""
        payload = json.dumps({"sub": username, "exp": math.floor(now) + self.token_ttl}, separators=(",", ":"),
                             ensure_ascii=False).encode()
        return jwt.api_jws.encode(payload, self._key, algorithm=self._alg, headers={"typ": None})

    @staticmethod
    def _claims(token: str) -> tuple[str, int]:
        payload = json.loads(jwt.utils.base64url_decode(java_split_dots(token)[1]))
        return payload["sub"], payload["exp"]

    # -- token checks ------------------------------------------------------------------------------------------

    def verify(self, token: str, now: float) -> str:
        """The user a token names. With the token cache a cached token is not checked at all
        (CachedJwtTokenManager.parseToken); otherwise NacosSignatureAlgorithm.verify. No user lookup either way:
        a deleted user's token keeps working."""
        cached = None
        if self.token_cache:
            self._sweep(now)
            cached = self._token_map.get(token)
        if cached is None:
            username, exp = self._check_jwt(token, now)
            if self.token_cache and exp * 1000 > _now_ms(now):
                self._token_map.setdefault(token, (username, exp * 1000))
        else:
            username = cached[0]
        if token in self._revoked:
            raise Rejected(TOKEN_INVALID)
        if self._is_frozen(token, now):
            raise Rejected(TOKEN_FROZEN)
        return username

    def _check_jwt(self, token: str, now: float) -> tuple[str, int]:
        """NacosSignatureAlgorithm.verify: Java's split (trailing empty parts dropped), the exact header segment,
        the signature compared as a string (``==`` padding fails), then ``exp >= floor(now)``."""
        if is_blank(token):
            raise Rejected(self.user_not_found_message())
        parts = java_split_dots(token)
        if len(parts) != 3:
            raise Rejected(TOKEN_INVALID)
        header, payload, signature = parts
        alg = _HEADER_SEGMENTS.get(header)
        if alg is None:
            raise Rejected(UNSUPPORTED_ALGORITHM)
        signed = f"{header}.{payload}".encode("ascii", "replace")  # Java's getBytes(US_ASCII) writes '?' too
        expected = _b64url(hmac.new(self._key, signed, _ALGORITHMS[alg]).digest())
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise Rejected(INVALID_SIGNATURE)
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            username, exp = claims["sub"], claims["exp"]
            if not isinstance(username, str) or not isinstance(exp, int):
                raise TypeError
        except (ValueError, KeyError, TypeError, binascii.Error):
            # Deliberate: a payload signed with the server's key that Jackson cannot read is a 400/500 on real
            # Nacos; only someone holding the key can make one, so the mock keeps one clear answer.
            raise Rejected(TOKEN_INVALID) from None
        if exp < math.floor(now):  # exp >= TimeUnit.MILLISECONDS.toSeconds(now) passes
            raise Rejected(TOKEN_EXPIRED)
        return username, exp

    def _sweep(self, now: float) -> None:
        """CachedJwtTokenManager.cleanExpiredToken: every 60 s after a 30 s delay, drop entries whose expiry has
        passed. Between runs an expired cached token still passes."""
        first = self._started + 30
        if now < first:
            return
        tick_ms = _now_ms(first + 60 * math.floor((now - first) / 60))
        self._token_map = {t: e for t, e in self._token_map.items() if e[1] >= tick_ms}
        self._user_map = {u: e for u, e in self._user_map.items() if e[1] >= tick_ms}

    def _is_frozen(self, token: str, now: float) -> bool:
        if self.active_timeout is None:
            return False
        last = self._last_used.get(token)
        return last is None or now - last > self.active_timeout

    # -- guarding resources ------------------------------------------------------------------------------------

    def auth_required(self, api: str) -> bool:
        """Is this kind of API ("open", "admin", "console") checked? 2.x has one switch
        (``nacos.core.auth.enabled``); 3.x keeps admin and console auth on when server auth is off
        (``nacos.core.auth.admin.enabled=true``, ``console.enabled=true`` in application.properties)."""
        return self.auth_enabled or (self.major == 3 and api != "open")

    def authorize(self, username: str, resource: str, action: str) -> None:
        """AbstractAuthenticationManager.authorize → NacosRoleServiceImpl.hasPermission: admins pass; a user
        without a role fails; ``console/`` resources are admin-only; else a role's permission whose action
        contains ``action`` and whose resource (``*`` → ``.*``) matches the whole resource."""
        with self._lock:
            if self.is_admin(username):
                return
            roles = self._roles.get(username, set())
            if roles and not resource.startswith("console/"):
                for role in roles:
                    for pattern, granted in self._permissions.get(role, ()):
                        if action in granted and _matches(pattern, resource):
                            return
        raise Rejected(AUTHORIZATION_FAILED, code=403)

    def identify(self, token: str | None, params: Mapping[str, str]) -> str:
        """NacosAuthPluginService.validateIdentity: the token if there is one, else ``username``/``password``."""
        now = self.clock()
        if not is_blank(token):
            username = self.verify(token, now)  # type: ignore[arg-type]
            self._last_used[token] = now  # type: ignore[index] # every accepted use renews the idle timer
            return username
        return self.check_password(params.get("username"), params.get("password"))

    def guard(self, request: MockRequest, params: Mapping[str, str], token: str | None, *, resource: str,
              action: str, api: str = "open", data_id: str | None = None) -> MockResponse | None:
        """AuthFilter (2.x) / AbstractWebAuthFilter (3.x) for one ``@Secured`` request: None when it may
        proceed, else the filter's answer."""
        with self._lock:
            self._requests += 1
            if not self.auth_required(api):
                return None
            try:
                username = self.identify(token, params)
                if data_id is not None and data_id in self._denied:
                    raise Rejected(AUTHORIZATION_FAILED, code=403)
                self.authorize(username, resource, action)
            except Rejected as exc:
                message = exc.message
                if self.major == 3:  # AuthResult.format()
                    message = f"Code: {exc.code}, Message: {message}."
                self._rejections[message] += 1
                return self.error_response(request, 403, message)
            except UnknownUser as exc:
                return self._unknown_user_on_resource(request, exc)
        return None

    def _unknown_user_on_resource(self, request: MockRequest, exc: UnknownUser) -> MockResponse:
        """2.x AuthFilter: ``catch (Exception e)`` → 500 ``Server failed, <message>``. 3.x AbstractWebAuthFilter's
        ``catch (Exception e)`` only logs: the response stays empty, status 200."""
        if self.major == 3:
            self._rejections["(empty 200)"] += 1
            return MockResponse(200)
        message = "Server failed, " + exc.message
        self._rejections[message] += 1
        return self.error_response(request, 500, message)

    # -- answers -----------------------------------------------------------------------------------------------

    def missing_parameter(self, request: MockRequest, name: str) -> MockResponse:
        """A missing ``@RequestParam``. 2.x: no advice but console's ConsoleExceptionHandler handles
        MissingServletRequestParameterException, so its catch-all answers 500 ``caused: ...;`` HTML-escaped
        (HtmlUtils). 3.x server port: no advice applies, Spring's DefaultHandlerExceptionResolver answers 400."""
        if self.major == 2:
            return text(500, java_html_escape(
                f"caused: Required request parameter '{name}' for method parameter type String is not present;"))
        return self.error_response(request, 400, f"Required parameter '{name}' is not present.")

    def error_response(self, request: MockRequest, status: int, message: str,
                       extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
        """Spring's error answer, stamped with the server's clock."""
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).isoformat(timespec="milliseconds")
        return spring_error(request, stamp, status, message, extra)


def _now_ms(now: float) -> int:
    return math.floor(now * 1000)


def _matches(pattern: str, resource: str) -> bool:
    try:
        return re.fullmatch(pattern.replace("*", ".*"), resource) is not None
    except re.error:
        return False
