""":class:`MockNacosServer`: the mock's state (``state.py``) with its HTTP APIs routed, served in-process or on
loopback.

The API modules each export ``ROUTES``; :data:`ROUTE_SETS` lists them, and a test or a new module can add more
(``MockNacosServer(extra_routes=...)`` or by extending :data:`ROUTE_SETS`). The state knows no transport: this
module hands the server to ``http.py``, which only needs the :class:`~.model.Servable` surface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from . import auth_api, config_api, console_api
from .config_api import resource_token
from .http import LoopbackServer, MockNacosTransport
from .model import BadRequest, Hold, MissingParameter, MockRequest, MockResponse, params_of
from .naming import NamingHandler, NamingRegistry
from .state import DEFAULT_GROUP, NacosState, Route

__all__ = ["DEFAULT_GROUP", "ROUTE_SETS", "MockNacosServer"]

#: The endpoint groups every server serves; each entry is an API module's ``ROUTES``.
ROUTE_SETS: list[tuple[Route, ...]] = [auth_api.ROUTES, config_api.ROUTES, console_api.ROUTES]


class MockNacosServer(NacosState):
    """An in-memory Nacos server answering like real Nacos 2.2, 2.5 or 3.1 where a client can tell.

    ``nacos_version`` is "2.2", "2.5" or "3.1" (2 means 2.5, 3 means 3.1). ``users=None`` starts with
    ``nacos``/``nacos``; ``users={}`` starts like a fresh 2.4+ server with no user, to be initialised through the
    admin API. Users given here are admins unless ``admins`` names others; :meth:`add_user` adds users without a
    role. ``auth_enabled=False`` serves requests without a token (3.x keeps admin APIs checked), logins still
    work. ``clock`` is a zero-argument callable returning wall seconds, so tests move time instead of sleeping.
    See docs/mock-server.md for what each version answers and the Nacos source file behind it.

    * ``token_ttl`` (18000 s, Nacos's default): the life of the tokens it issues; short lives make refresh tests
      fast. ``token_cache``: Nacos's ``CachedJwtTokenManager`` (the same token handed out until 90 % of its life,
      cached tokens accepted after a key rotation until the cleanup run).
    * ``active_timeout`` (None: off): seconds of disuse after which a token answers ``token frozen!``, like
      Sa-Token's idle freeze. ``secret_key``: the base64 HS256 key (at least 32 bytes; random when None);
      :meth:`rotate_secret` replaces it.
    * ``context_path`` (``/nacos``): where the API lives. ``unknown_user_status``: 403 forces the old
      ``user not found!`` answer for unknown users; None follows the version.
    * ``poll_min_hold`` (10 s, Nacos's floor) and ``poll_max_hold`` (None: uncapped) bound how long a config
      long poll is held, so tests need not wait 30 s. ``max_body`` (10 MiB): larger request bodies get a 413.
    * ``extra_routes``: more :class:`~nacos_token_client.testing.state.Route` endpoints for this server only.
    """

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
        extra_routes: Iterable[Route] = (),
    ) -> None:
        super().__init__(users, token_ttl, token_cache, nacos_version, active_timeout, secret_key, clock,
                         context_path, auth_enabled=auth_enabled, admins=admins,
                         unknown_user_status=unknown_user_status, poll_min_hold=poll_min_hold,
                         poll_max_hold=poll_max_hold, max_body=max_body)
        self._extra_routes = tuple(extra_routes)
        self._route_table: dict[str, Route] | None = None
        self._route_version = self.nacos_version
        self._loopback: LoopbackServer | None = None
        #: The naming registry (instances, beats, expiry), on this server's clock.
        self.naming = NamingRegistry(lambda: self.clock())  # noqa: PLW0108 - self.clock may be replaced

    # -- routing -----------------------------------------------------------------------------------------------

    def routes(self) -> dict[str, Route]:
        """Path below the context path → route, for this server's version (built once per version)."""
        if self._route_table is None or self._route_version != self.nacos_version:
            table: dict[str, Route] = {}
            naming = tuple(_naming_route(path, methods, handler) for path, (methods, handler)
                           in self.naming.routes(3 if self.nacos_version.startswith("3") else 2).items())
            for route in (*(r for routes in ROUTE_SETS for r in routes), *naming, *self._extra_routes):
                if self.nacos_version in route.versions:
                    table[route.path] = route
            self._route_table, self._route_version = table, self.nacos_version
        return self._route_table

    def handle(self, request: MockRequest) -> MockResponse | Hold:
        """Answer one request. Never raises: bad input gets a 4xx, a bug a 500, and the server keeps serving."""
        try:
            return self._dispatch(request)
        except BadRequest as exc:
            return self.error_response(request, 400, str(exc))
        except MissingParameter as exc:
            return self.missing_parameter(request, exc.name)
        except Exception as exc:  # a mock must survive anything a client sends
            return self.error_response(request, 500, f"caused: {type(exc).__name__};")

    def _dispatch(self, request: MockRequest) -> MockResponse | Hold:
        if len(request.body) > self.max_body:
            return self.error_response(request, 413, "request body too large")
        path = request.path
        route = None
        if path.startswith(self.context_path + "/"):
            route = self.routes().get(path[len(self.context_path):].rstrip("/") or "/")
        if route is None:  # Spring 6's NoResourceFoundException
            return self.error_response(request, 404, "No static resource " + path.lstrip("/") + ".")
        if request.method not in route.methods:
            return self.error_response(request, 405, f"Request method '{request.method}' is not supported",
                                       extra=(("Allow", ", ".join(route.methods)),))
        return route.handler(self, request, params_of(request))

    # -- serving -----------------------------------------------------------------------------------------------

    def transport(self) -> MockNacosTransport:
        """An httpx transport (sync and async) that serves this server's state in-process."""
        return MockNacosTransport(self)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve over real HTTP on a background thread; returns the base URL ``http://HOST:PORT``."""
        with self.lock:
            if self._loopback is None:
                self._closed = False
                self._loopback = LoopbackServer(self, host, port)
                self._loopback.start()
            return self._loopback.url

    def stop(self) -> None:
        """Stop serving; held long polls answer at once."""
        with self.lock:
            loopback, self._loopback = self._loopback, None
        self.close()
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


def naming_resource(params: Mapping[str, str]) -> str:
    """NamingResourceParser: ``namespace:group:naming/service`` (``group@@service`` names carry their group)."""
    service = params.get("serviceName", "")
    group = params.get("groupName") or ""
    if "@@" in service:
        group, service = service.split("@@", 1)
    namespace = params.get("namespaceId", "")
    namespace = "" if namespace in ("", "public") else namespace
    return f"{namespace}:{group or DEFAULT_GROUP}:naming/{service or '*'}"


def _naming_route(path: str, methods: tuple[str, ...], handler: NamingHandler) -> Route:
    """A naming endpoint behind the same auth filter as every ``@Secured`` API (read for GET, write otherwise)."""

    def route(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
        rejection = state.guard(request, params, resource_token(request, params), resource=naming_resource(params),
                                action="r" if request.method == "GET" else "w")
        if rejection is not None:
            return rejection
        answer = handler(request.method, params)
        kind = "application/json" if answer.json else "text/plain;charset=UTF-8"
        return MockResponse(answer.status, answer.body.encode(), (("Content-Type", kind),))

    return Route(path, methods, route)
