"""``NacosTokenAuth``: an ``httpx.Auth`` that attaches the token, recognises rejections, and replays.

Every rule is written once: :meth:`NacosTokenAuth._plan` (does this request get a token?), ``_attach``, and
:meth:`NacosTokenAuth._recover` — a generator that, after a 401/403, yields either an ``httpx.Request`` for httpx
to send or a small command (``need a token``, ``read the body``, ``renew``). ``sync_auth_flow`` and
``async_auth_flow`` only carry those out; they differ in nothing but ``await``. The common case (no rejection)
never enters the generator, which keeps the per-request cost within a few microseconds of a static header.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from cachetools import LRUCache
from httpx._multipart import FileField, MultipartStream

from .errors import AuthenticationError, ConfigurationError, LoginResponseError, NacosTokenError, public_name
from .events import AuthStats, EventHooks, TokenEvent
from .lifecycle import RefreshPolicy, RefreshReason, RejectionVerdict, Ticket, Token, TokenInfo, TokenLifecycle
from .login import LoginClient, RetrySettings
from .options import (
    check_bool,
    check_callable,
    check_has,
    check_instance,
    check_int,
    check_number,
    check_path,
    check_text,
    check_timeout,
    check_verify,
)
from .protocol import (
    LOGIN_PATHS,
    ApiVersion,
    RejectionClassifier,
    RejectionKind,
    ServerAddress,
    classify_rejection,
    parse_server_addresses,
    rejection_message,
)
from .redaction import install_log_redaction
from .refresher import StormBackOff, TokenSource, shared_state
from .stores.base import TokenStore
from .stores.memory import default_store

__all__ = ["NacosTokenAuth", "TokenPlacement"]

log = logging.getLogger("nacos_token_client")

TokenPlacement = Literal["header", "query", "bearer"]
"""Where the token goes: the ``accessToken`` header (the default: kept out of URLs and so out of access logs), the
``accessToken`` query parameter (for servers or proxies that read only that), or ``Authorization: Bearer``."""
TOKEN_NAME = "accessToken"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RELOGIN_KINDS = frozenset({RejectionKind.TOKEN})


MAX_REPLAYS = 2


@dataclass(frozen=True, slots=True)
class _NeedToken:
    """A token for this ticket (raises StormBackOff, LoginUnavailableError … into the flow)."""

    ticket: Ticket


@dataclass(frozen=True, slots=True)
class _ReadBody:
    response: httpx.Response


@dataclass(frozen=True, slots=True)
class _Reject:
    """Tell the core ``token`` was refused; answers its :class:`RejectionVerdict`."""

    token: Token


@dataclass(frozen=True, slots=True)
class _Renew:
    """Log in now (the rejected request cannot be replayed), but return the original response whatever happens."""

    ticket: Ticket


_Step = httpx.Request | _NeedToken | _ReadBody | _Reject | _Renew


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """httpx normalises scheme and host to lower case, and gives ``port`` None for the scheme's default."""
    return (url.scheme, url.host, url.port)


def _origins(servers: Sequence[ServerAddress]) -> frozenset[tuple[str, str, int | None]]:
    found: set[tuple[str, str, int | None]] = set()
    for server in servers:
        host = httpx.URL(server.base_url).host  # the same normalisation (IDNA, brackets) a request URL gets
        found.add((server.scheme, host, server.port))
        if _DEFAULT_PORTS.get(server.scheme) == server.port:
            found.add((server.scheme, host, None))
    return frozenset(found)


#: PBKDF2 verifiers already computed in this process (bounded; as large as the default memory store).
_verifiers: LRUCache[str, str] = LRUCache(maxsize=16_384)
_verifiers_lock = threading.Lock()
#: Keys for the process-local store: a keyed hash with a key that never leaves the process.
_PROCESS_KEY = secrets.token_bytes(32)


def identity_key(servers: Sequence[ServerAddress], username: str, password: str, namespace: str, *,
                 portable: bool = True) -> str:
    """The key under which a token is cached and shared: server list, user, namespace — and a verifier of the
    password, so an auth object with a wrong password never shares (or adopts) a token it could not get itself.

    A ``portable`` key leaves the process (a file or Redis store): its verifier is PBKDF2 (20,000 rounds, salted
    with the identity), so a shared store's keys do not hand out a cheap hash of the password; it is computed once
    per identity and password in a process. A key that stays in the process (the memory store) is an HMAC with a
    random per-process key instead: microseconds, and worthless outside the process.
    """
    identity = "|".join([",".join(sorted(str(s) for s in servers)), username, namespace])
    if not portable:
        digest = hmac.new(_PROCESS_KEY, f"{identity}\0{password}".encode("utf-8", "surrogatepass"),
                          hashlib.sha256).hexdigest()[:32]
        return f"nacos-token:{digest}"
    memo = hashlib.sha256(f"{identity}\0{password}".encode("utf-8", "surrogatepass")).hexdigest()
    with _verifiers_lock:
        verifier = _verifiers.get(memo)
    if verifier is None:
        verifier = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8", "surrogatepass"),
                                       b"nacos-token-client|" + identity.encode(), 20_000).hex()[:16]
        with _verifiers_lock:
            _verifiers[memo] = verifier
    digest = hashlib.sha256(f"{identity}|{verifier}".encode()).hexdigest()[:32]
    return f"nacos-token:{digest}"


def _replayable(request: httpx.Request) -> bool:
    """Bodies that can be sent again whole: bytes, str, JSON, form (all ``ByteStream``) and multipart whose file
    parts are bytes, str or seekable files (httpx rewinds them). A read-once file part would be sent empty."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return True
    if not isinstance(stream, MultipartStream):
        return False
    for part in stream.fields:
        if isinstance(part, FileField) and not isinstance(part.file, (bytes, str)):
            seekable = getattr(part.file, "seekable", None)
            try:
                if seekable is None or not seekable():
                    return False
            except (OSError, ValueError):
                return False
    return True


def _check_options(options: dict[str, Any]) -> None:
    """Every option of :class:`NacosTokenAuth`, checked before anything is built: a
    :class:`ConfigurationError` naming the option, never showing a password."""
    if options["api"] not in ("v1", "v3", "auto"):
        raise ConfigurationError(f"api must be 'v1', 'v3' or 'auto', not {options['api']!r}")
    placement = options["token_placement"]
    if placement not in ("header", "query", "bearer"):
        raise ConfigurationError(f"token_placement must be 'header', 'query' or 'bearer', not {placement!r}")
    username, password = options["username"], options["password"]
    if username is None:
        if password is not None:
            raise ConfigurationError("password given without a username: pass both, or neither for no auth")
    else:
        check_text("username", username, empty=False)
        if password is None:
            raise ConfigurationError("password missing: a username needs a password")
        if isinstance(password, str):
            check_text("password", password, empty=False, secret=True)
        elif not callable(password):
            raise ConfigurationError(f"password must be a str or a callable returning one, not "
                                     f"{type(password).__name__}")
    check_text("namespace", options["namespace"])
    check_path("context_path", options["context_path"])
    check_number("refresh_ratio", options["refresh_ratio"], low=0.0, high=1.0, low_inclusive=False)
    if options["refresh_ratio"] >= 1.0:
        raise ConfigurationError(f"refresh_ratio must be below 1, got {options['refresh_ratio']!r}")
    jitter = check_number("refresh_jitter", options["refresh_jitter"], high=1.0)
    if jitter >= 1.0 - options["refresh_ratio"]:
        raise ConfigurationError(f"refresh_jitter must be below 1 - refresh_ratio "
                                 f"({1.0 - options['refresh_ratio']:.3f}), got {jitter!r}")
    check_number("login_timeout", options["login_timeout"], low_inclusive=False)
    check_number("negative_cache_seconds", options["negative_cache_seconds"])
    check_number("store_sync_interval", options["store_sync_interval"], low_inclusive=False)
    check_int("login_attempts", options["login_attempts"], low=1, high=100)
    backoff = options["login_backoff"]
    if not isinstance(backoff, (tuple, list)) or len(backoff) != 2:
        raise ConfigurationError(f"login_backoff must be a (first, max) pair of seconds, not {backoff!r}")
    first = check_number("login_backoff (first)", backoff[0])
    if check_number("login_backoff (max)", backoff[1]) < first:
        raise ConfigurationError(f"login_backoff must be (first, max) with first <= max, got {tuple(backoff)!r}")
    if options["store"] is not None:
        check_instance("store", options["store"], TokenStore, "a TokenStore (e.g. FileTokenStore(path))")
    if options["transport"] is not None:
        check_has("transport", options["transport"], "handle_request", "an httpx transport")
    if options["async_transport"] is not None:
        check_has("async_transport", options["async_transport"], "handle_async_request", "an httpx async transport")
    check_verify("verify", options["verify"])
    check_timeout("timeout", options["timeout"])
    for flag in ("trust_env", "relogin_on_replaced"):
        check_bool(flag, options[flag])
    for name in ("clock", "timer", "rejection_classifier"):
        check_callable(name, options[name])
    check_callable("on_event", options["on_event"], optional=True)


class NacosTokenAuth(httpx.Auth):
    """Token auth for Nacos-style servers, for any ``httpx.Client`` or ``httpx.AsyncClient``.

    Logs in when needed (once per identity across the process), refreshes in the background past 90 % of the
    token's life, re-logs in and replays (up to twice) when the server rejects the token, backs off when fresh
    tokens keep being rejected, and never sends the token to another origin. Without a username requests pass
    untouched.

    ``server_addresses``: ``"host:port"``, ``"http(s)://host:port[/context]"``, a comma-separated string of those,
    or a list; the token is attached only to requests for these origins. ``username`` and ``password``: the
    Nacos credentials (both or neither). After construction ``servers`` holds the parsed
    :class:`~nacos_token_client.ServerAddress` list and ``store`` the token store in use; ``identity_key`` (set
    only with a username) is the key under which the token is cached and shared.

    Options (keyword-only, bounded defaults):

    * ``namespace``: part of the identity that token sharing is keyed on; ``context_path`` (``/nacos``) applies to
      addresses without a path; ``api``: ``"v1"`` (the default), ``"v3"`` or ``"auto"`` (v3, then v1 on 404/501).
    * ``token_placement``: ``"bearer"`` (the default: ``Authorization: Bearer <token>``, which every Nacos
      version reads first and which httpx itself strips from a redirect to another origin, so a client with
      ``follow_redirects=True`` needs no hook), ``"header"`` (an ``accessToken`` header) or ``"query"`` (an
      ``accessToken`` parameter: it shows in URLs and log lines). httpx keeps the ``accessToken`` header and
      query on redirects: with ``"header"`` or ``"query"`` and ``follow_redirects=True``, install
      :meth:`redirect_guard` (the wrapper clients do), or a redirect elsewhere carries the token there.
    * ``password``: a string, or a zero-argument callable returning the current password — for secrets that
      rotate: it is asked before each login and again after refused credentials (the new password is tried
      once before the refusal is negative-cached). The identity key (what token sharing is keyed on) uses the
      password the callable returned when the auth object was made.
    * ``refresh_ratio`` (0.9), ``refresh_jitter`` (0.03), ``login_timeout`` (30 s: what a request with no usable
      token may spend getting one, and the hard deadline of every login, reading the answer included),
      ``login_attempts`` (3, and at least one per server), ``login_backoff`` ((first, max) seconds; (0.2, 5)),
      ``negative_cache_seconds`` (5 s after refused credentials).
    * ``store``: a :class:`~nacos_token_client.stores.TokenStore` (default: the process-wide memory store);
      ``store_sync_interval`` (1 s): how often a shared store is looked at in the background.
    * ``transport``, ``async_transport``, ``verify``, ``timeout``, ``trust_env``: the HTTP settings logins use
      (an ``httpx.MockTransport`` or the mock server's transport serves sync and async logins).
    * ``clock``: wall-clock seconds and ``timer``: monotonic seconds, for tests;
      ``rejection_classifier``: ``Response -> RejectionKind``; ``relogin_on_replaced``: also re-login when a
      Sa-Token session was replaced or kicked out;
      ``on_event``: receives every :class:`~nacos_token_client.events.TokenEvent`.
    """

    def __init__(
        self,
        server_addresses: str | Sequence[str],
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        *,
        namespace: str = "",
        context_path: str = "/nacos",
        api: ApiVersion = "v1",
        token_placement: TokenPlacement = "bearer",
        refresh_ratio: float = 0.9,
        refresh_jitter: float = 0.03,
        login_timeout: float = 30.0,
        login_attempts: int = 3,
        login_backoff: tuple[float, float] = (0.2, 5.0),
        negative_cache_seconds: float = 5.0,
        store_sync_interval: float = 1.0,
        store: TokenStore | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        timeout: Any = 10.0,
        trust_env: bool = True,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        rejection_classifier: RejectionClassifier = classify_rejection,
        relogin_on_replaced: bool = False,
        on_event: Callable[[TokenEvent], None] | None = None,
    ) -> None:
        _check_options(locals())  # every parameter by name, before anything is built
        self.servers = parse_server_addresses(server_addresses, context_path=context_path)
        self.username = username
        self.namespace = namespace
        self.token_placement: TokenPlacement = token_placement
        self.clock = clock
        self._origins = _origins(self.servers)
        self._login_paths = frozenset(s.context_path + p for s in self.servers for p in (
            *LOGIN_PATHS.values(), "/v1/auth/users/login"))
        self._classify = rejection_classifier
        self._relogin_kinds = _RELOGIN_KINDS | (
            {RejectionKind.REPLACED, RejectionKind.KICKED_OUT} if relogin_on_replaced else set())
        self._hooks = EventHooks(on_event)
        self._source: TokenSource | None = None
        install_log_redaction()
        self.store: TokenStore = store if store is not None else default_store()
        policy = RefreshPolicy(refresh_ratio=refresh_ratio, jitter=refresh_jitter, login_timeout=login_timeout,
                               negative_cache_seconds=negative_cache_seconds, store_sync_interval=store_sync_interval)
        if username is None:
            return
        assert password is not None
        login = LoginClient(self.servers, username, password, api=api, clock=clock, timer=timer,
                            retry=RetrySettings(login_attempts, *login_backoff), transport=transport,
                            async_transport=async_transport, verify=verify, timeout=timeout, trust_env=trust_env)
        try:
            initial_password = login.password()
        except NacosTokenError as exc:
            raise ConfigurationError(f"the password callable failed: {exc}") from None
        self.identity_key = identity_key(self.servers, username, initial_password, namespace,
                                         portable=not self.store.local)
        shared = not self.store.local
        state = shared_state(self.store, self.identity_key, lambda: TokenLifecycle(policy, shared_store=shared))
        self._source = TokenSource(state, login, clock=clock, timer=timer, hooks=self._hooks)

    def __repr__(self) -> str:
        return (f"NacosTokenAuth(servers={[str(s) for s in self.servers]!r}, username={self.username!r}, "
                f"namespace={self.namespace!r}, token_placement={self.token_placement!r})")

    # -- public API -------------------------------------------------------------------------------------------

    def get_token(self) -> str:
        """A usable token, logging in if needed (blocking)."""
        return self._require_source().get_token().value

    async def aget_token(self) -> str:
        """A usable token, logging in if needed, without blocking the event loop."""
        return (await self._require_source().aget_token()).value

    def invalidate(self, token: str | None = None) -> bool:
        """Drop the cached token — only if it is still ``token`` when given — so the next request logs in.
        Safe from any thread or task. True if a token was dropped."""
        if self._source is None:
            return False
        return self._source.invalidate(token)

    async def ainvalidate(self, token: str | None = None) -> bool:
        """:meth:`invalidate` for async code: the shared store's copy is deleted off the event loop, and the
        call returns once it is gone. (``invalidate()`` on a running loop does that on a worker thread.)"""
        if self._source is None:
            return False
        return await self._source.ainvalidate(token)

    def token_info(self) -> TokenInfo | None:
        """A secret-free snapshot of the cached token, or None."""
        token = self._source.current() if self._source else None
        return token.info() if token else None

    @property
    def stats(self) -> AuthStats:
        """Counters of this auth object (a snapshot), not of its identity: auth objects sharing an identity share
        one token and its logins, and each counts only what its own requests did (see :class:`AuthStats`)."""
        return self._hooks.snapshot()

    def close(self) -> None:
        """Stop background refreshes and close the login connection pool."""
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> NacosTokenAuth:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_source(self) -> TokenSource:
        if self._source is None:
            raise ConfigurationError("this NacosTokenAuth has no username, so it never logs in")
        return self._source

    # -- redirect guards (install as request event hooks when the client follows redirects) -----------------------

    def redirect_guard(self, request: httpx.Request) -> None:
        """``event_hooks={"request": [auth.redirect_guard]}``: httpx follows redirects without asking the auth,
        and strips only ``Authorization`` on a cross-origin hop (and keeps it on an http→https upgrade of the
        same host); this strips our token, in any placement, from every hop that leaves the configured servers.
        Needed with ``token_placement="header"`` or ``"query"``; harmless (and stricter) with the default."""
        if _origin(request.url) not in self._origins:
            self._strip(request)

    async def async_redirect_guard(self, request: httpx.Request) -> None:
        """:meth:`redirect_guard` for ``httpx.AsyncClient``, whose event hooks must be coroutines."""
        self.redirect_guard(request)

    # -- the flow, written once -------------------------------------------------------------------------------

    def _strip(self, request: httpx.Request) -> None:
        request.headers.pop(TOKEN_NAME, None)
        if TOKEN_NAME in request.url.params:
            request.url = request.url.copy_remove_param(TOKEN_NAME)
        current = self._source.current() if self._source else None
        if current is not None and request.headers.get("Authorization") == f"Bearer {current.value}":
            del request.headers["Authorization"]

    def _attach(self, request: httpx.Request, token: Token) -> None:
        if self.token_placement == "header":
            request.headers[TOKEN_NAME] = token.value
        elif self.token_placement == "query":
            request.url = request.url.copy_set_param(TOKEN_NAME, token.value)
        else:
            request.headers["Authorization"] = f"Bearer {token.value}"

    def _plan(self, request: httpx.Request) -> bool:
        """Should this request carry a token? Strips ours from requests that leave the configured servers."""
        if _origin(request.url) not in self._origins:
            self._strip(request)  # e.g. a redirect's next_request sent on by hand
            return False
        # no credentials, or a login (a token on a login would be checked instead of the password)
        return self._source is not None and request.url.path not in self._login_paths

    def _recover(self, request: httpx.Request, token: Token, response: httpx.Response, replayable: bool,
                 ticket: Ticket) -> Generator[_Step, Any, None]:
        """After a 401/403: classify, compare-and-drop, log in once, and replay — up to twice, each time with a
        token from a login that began after the rejection was seen — as commands for a driver."""
        for replays in range(MAX_REPLAYS + 1):
            yield _ReadBody(response)
            try:
                kind = self._classify(response)
            except Exception:
                log.exception("rejection_classifier raised; treating the answer as not a token rejection")
                return
            self._hooks.count("rejections")
            self._hooks.emit(TokenEvent("rejection", outcome=kind.value, fingerprint=token.fingerprint,
                                        error=rejection_message(response, secrets=(token.value,))))
            if kind not in self._relogin_kinds:
                return  # a permission denial (or a replaced session): the response goes back as it is
            verdict: RejectionVerdict = yield _Reject(token)
            if not verdict.relogin:
                self._hooks.emit(TokenEvent("replay", reason=RefreshReason.REJECTED, outcome="backing_off",
                                            fingerprint=token.fingerprint, duration=verdict.storm_seconds))
                return
            ticket.min_generation = max(ticket.min_generation, verdict.min_generation)
            if replays == MAX_REPLAYS:
                self._hooks.emit(TokenEvent("replay", reason=RefreshReason.REJECTED, outcome="gave_up",
                                            fingerprint=token.fingerprint, attempts=replays))
                return
            if not replayable:
                self._hooks.emit(TokenEvent("replay", reason=RefreshReason.REJECTED, outcome="not_replayable"))
                try:
                    yield _Renew(ticket)
                except NacosTokenError as exc:
                    log.warning("re-login after a rejection failed: %s", public_name(exc))
                return
            try:
                fresh: Token = yield _NeedToken(ticket)
            except StormBackOff:
                self._hooks.emit(TokenEvent("replay", reason=RefreshReason.REJECTED, outcome="backing_off"))
                return
            except (AuthenticationError, LoginResponseError):
                raise  # the credentials (or the server's answers) are wrong: a clear error beats a stale 403
            except NacosTokenError as exc:
                log.warning("no token for a replay (%s); the rejected response goes back", public_name(exc))
                return
            self._attach(request, fresh)
            self._hooks.count("replays")
            response = yield request
            rejected_again = response.status_code in (401, 403)
            self._hooks.emit(TokenEvent("replay", reason=RefreshReason.REJECTED,
                                        outcome="rejected_again" if rejected_again else "sent",
                                        fingerprint=fresh.fingerprint, attempts=replays + 1))
            if not rejected_again:
                return
            token = fresh

    # -- drivers: the same steps, sync or async ------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Called by ``httpx.Client`` for every request: attach the token (blocking only when none is usable),
        and after a token rejection log in once and replay (up to twice). Not called directly."""
        if not self._plan(request):
            yield request
            return
        source = self._require_source()
        replayable = _replayable(request)  # before sending: a transport may buffer a stream while sending it
        ticket = Ticket()
        token = source.get_token(ticket)
        self._attach(request, token)
        response = yield request
        if response.status_code not in (401, 403):
            if source.strikes:
                source.token_worked(token)
            return
        steps = self._recover(request, token, response, replayable, ticket)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                step = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration:
                return
            reply, error = None, None
            if isinstance(step, httpx.Request):
                reply = yield step
                continue
            try:
                if isinstance(step, _NeedToken):
                    reply = source.get_token(step.ticket)
                elif isinstance(step, _ReadBody):
                    reply = step.response.read()
                elif isinstance(step, _Reject):
                    reply = source.run_sync(source.rejected(step.token))
                else:
                    source.get_token(step.ticket)
            except NacosTokenError as exc:
                error = exc

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Called by ``httpx.AsyncClient``: :meth:`sync_auth_flow`'s steps, without blocking the event loop."""
        if not self._plan(request):
            yield request
            return
        source = self._require_source()
        replayable = _replayable(request)
        ticket = Ticket()
        token = await source.aget_token(ticket)
        self._attach(request, token)
        response = yield request
        if response.status_code not in (401, 403):
            if source.strikes:
                source.token_worked(token)
            return
        steps = self._recover(request, token, response, replayable, ticket)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                step = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration:
                return
            reply, error = None, None
            if isinstance(step, httpx.Request):
                reply = yield step
                continue
            try:
                if isinstance(step, _NeedToken):
                    reply = await source.aget_token(step.ticket)
                elif isinstance(step, _ReadBody):
                    reply = await step.response.aread()
                elif isinstance(step, _Reject):
                    reply = await source.run_async(source.rejected(step.token))
                else:
                    await source.aget_token(step.ticket)
            except NacosTokenError as exc:
                error = exc
