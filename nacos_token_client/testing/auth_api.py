"""Login and admin initialisation, as the default auth plugin answers them on the server port.

Sources: plugin-default-impl ``controller/UserController.java`` (v1, 2.x and 3.x) and
``controller/v3/UserControllerV3.java`` (3.x); exceptions from them reach console's ``ConsoleExceptionHandler``
on 2.x and no ``@ControllerAdvice`` at all on the 3.x server port (Spring Boot's error page answers).
"""

from __future__ import annotations

import secrets
import string

from .model import MockRequest, MockResponse, java_html_escape, json_answer, text
from .state import NacosState, Rejected, Route, UnknownUser

__all__ = ["ROUTES"]

#: Spring Boot's DefaultErrorAttributes when the exception has no message: AccessException(String) only sets
#: NacosException.errMsg, so getMessage() is null.
NO_MESSAGE = "No message available"


def _token_for_login(request: MockRequest, params: dict[str, str]) -> str | None:
    """AbstractAuthenticationManager.resolveToken: ``Authorization: Bearer`` header, then the ``accessToken``
    parameter (no header of that name here)."""
    bearer = request.headers.get("authorization", "")
    if bearer.startswith("Bearer "):
        return bearer[len("Bearer "):] or None
    return params.get("accessToken") or None


def _login(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    delay = state.login_delay
    try:
        user, token, ttl = state.login(_token_for_login(request, params), params.get("username"),
                                       params.get("password"))
    except Rejected as exc:
        if state.major == 2:  # ConsoleExceptionHandler.handleAccessException: 403, the message as text
            return text(403, exc.message, delay=delay)
        return _delayed(state.error_response(request, 500, NO_MESSAGE), delay)
    except UnknownUser as exc:
        if state.major == 2:  # ConsoleExceptionHandler.handleException: 500 "caused: ...;" HTML-escaped
            return text(500, java_html_escape(f"caused: {exc.message};"), delay=delay)
        return _delayed(state.error_response(request, 500, exc.message), delay)
    body = {"accessToken": token, "tokenTtl": ttl, "globalAdmin": state.is_admin(user), "username": user}
    return json_answer(200, body, delay=delay, extra=(("Authorization", "Bearer " + token),))


def _delayed(answer: MockResponse, delay: float) -> MockResponse:
    return MockResponse(answer.status, answer.body, answer.headers, delay=delay)


def login_v1(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``POST /v1/auth/login`` and ``/v1/auth/users/login``: ``@RequestParam String username, password`` are
    required (even when a token authenticates the login)."""
    refused = state.begin_login()
    if refused is not None:
        return refused
    for name in ("username", "password"):
        if params.get(name) is None:
            return _delayed(state.missing_parameter(request, name), state.login_delay)
    return _login(state, request, params)


def login_v3(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``POST /v3/auth/user/login``: no required parameters."""
    refused = state.begin_login()
    return refused if refused is not None else _login(state, request, params)


def _random_password() -> str:
    """PasswordGeneratorUtil: a random password when none is given."""
    alphabet = string.ascii_letters + string.digits + "!@#$%&"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _init_admin(state: NacosState, password: str | None) -> tuple[str, str] | None:
    with state.lock:
        if state.has_admin():
            return None
        password = password if password and password.strip() else _random_password()
        state.add_user("nacos", password)
        state.make_admin("nacos")
        return "nacos", password


def admin_v1(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``POST /v1/auth/users/admin`` (2.4+): ``RestResultUtils.failed(409, "...")`` binds the text to ``data``."""
    created = _init_admin(state, params.get("password"))
    if created is None:
        return json_answer(200, {"code": 409, "message": None, "data": "have admin user cannot use it"})
    return json_answer(200, {"username": created[0], "password": created[1]})


def admin_v3(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``POST /v3/auth/user/admin``: a ``Result`` either way."""
    created = _init_admin(state, params.get("password"))
    if created is None:
        return json_answer(200, {"code": 409, "message": "have admin user cannot use it.", "data": None})
    return json_answer(200, {"code": 0, "message": "success",
                             "data": {"username": created[0], "password": created[1]}})


ROUTES: tuple[Route, ...] = (
    Route("/v1/auth/login", ("POST",), login_v1),
    Route("/v1/auth/users/login", ("POST",), login_v1),
    Route("/v3/auth/user/login", ("POST",), login_v3, frozenset({"3.1"})),
    Route("/v1/auth/users/admin", ("POST",), admin_v1, frozenset({"2.5"})),
    Route("/v3/auth/user/admin", ("POST",), admin_v3, frozenset({"3.1"})),
)
