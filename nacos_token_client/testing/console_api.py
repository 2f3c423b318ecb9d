"""Health, namespaces, and the 3.x server port's answers for endpoints that moved.

Sources: 2.x console ``controller/HealthController.java`` and ``controller/NamespaceController.java``; 3.x core
``controller/v3/ServerStateController.java``, ``controller/v3/NamespaceControllerV3.java`` (``@NacosApi``: errors
through core ``exception/NacosApiExceptionHandler.java``), ``service/NamespaceOperationService.java`` and
``controller/compatibility/ApiCompatibilityFilter.java`` (runs before the auth filter, order 5 vs 6).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from .config_api import resource_token
from .model import Hold, MockRequest, MockResponse, is_blank, json_answer, text
from .state import Handler, NacosState, Route

__all__ = ["ROUTES"]

V2 = frozenset({"2.2", "2.5"})
V3 = frozenset({"3.1"})
_NAMESPACE_ID = re.compile(r"[A-Za-z0-9_-]+")  # "^[\\w-]+" with matches(): the whole id
_NAMESPACE_NAME = re.compile(r"[^@#$%^&*]+")
#: NamespaceTypeEnum: GLOBAL(0) for the default namespace, CUSTOM(2) for the others.
_GLOBAL, _CUSTOM = 0, 2


def _ok(data: Any) -> MockResponse:
    """A 3.x ``Result.success(data)``."""
    return json_answer(200, {"code": 0, "message": "success", "data": data})


def liveness_v2(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``GET /v1/console/health/liveness`` and ``/readiness`` (2.x console): ``OK``."""
    return text(200, "OK")


def liveness_v3(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``GET /v3/admin/core/state/liveness`` and ``/readiness`` (3.x server port): ``Result.success("ok")``."""
    return _ok("ok")


def _namespace_list(state: NacosState) -> list[dict[str, Any]]:
    """NamespaceOperationService.getNamespaceList: the default namespace first, quota 200, config counts."""
    default = state.normalize_tenant(None)
    listed = [{"namespace": default, "namespaceShowName": "public", "namespaceDesc": "Default Namespace",
               "quota": 200, "configCount": state.config_count(default), "type": _GLOBAL}]
    listed += [{"namespace": ns, "namespaceShowName": name, "namespaceDesc": desc or None, "quota": 200,
                "configCount": state.config_count(ns), "type": _CUSTOM} for ns, name, desc in state.namespaces()]
    return listed


def _guard_console(state: NacosState, request: MockRequest, params: dict[str, str], action: str) -> MockResponse | None:
    """Namespace writes are ``@Secured`` console resources: admins only (NacosRoleServiceImpl)."""
    return state.guard(request, params, resource_token(request, params), resource="console/namespaces",
                       action=action, api="admin" if state.major == 3 else "console")


def namespaces_v2(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``GET /v1/console/namespaces`` (not secured) lists; ``POST`` creates and answers ``true``/``false``."""
    if request.method == "GET":
        return json_answer(200, {"code": 200, "message": None, "data": _namespace_list(state)})
    rejection = _guard_console(state, request, params, "w")
    if rejection is not None:
        return rejection
    namespace_id = params.get("customNamespaceId")
    name = params.get("namespaceName")
    if namespace_id is None or name is None:
        return state.missing_parameter(request, "customNamespaceId" if namespace_id is None else "namespaceName")
    if is_blank(namespace_id):
        namespace_id = str(uuid.uuid4())
    else:
        namespace_id = namespace_id.strip()
        if not _NAMESPACE_ID.fullmatch(namespace_id) or len(namespace_id) > 128:
            return json_answer(200, False)
    if not _NAMESPACE_NAME.fullmatch(name):
        return json_answer(200, False)
    return json_answer(200, state.add_namespace(namespace_id, name, params.get("namespaceDesc") or ""))


def _api_error(status: int, code: int, abstract: str, message: str) -> MockResponse:
    """NacosApiExceptionHandler.handleNacosApiException: ``Result(detailErrCode, errAbstract, errMsg)``."""
    return json_answer(status, {"code": code, "message": abstract, "data": message})


def namespace_list_v3(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``GET /v3/admin/core/namespace/list`` (admin API, read)."""
    rejection = _guard_console(state, request, params, "r")
    return rejection if rejection is not None else _ok(_namespace_list(state))


def namespace_create_v3(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``POST /v3/admin/core/namespace`` (admin API, write): NamespaceForm.validate, then the id and name checks."""
    rejection = _guard_console(state, request, params, "w")
    if rejection is not None:
        return rejection
    namespace_id = params.get("namespaceId")
    name = params.get("namespaceName")
    for field, value in (("namespaceId", namespace_id), ("namespaceName", name)):
        if value is None:
            return _api_error(400, 10000, "parameter missing", f"required parameter '{field}' is missing")
    assert namespace_id is not None and name is not None
    if is_blank(namespace_id):
        namespace_id = str(uuid.uuid4())
    else:
        namespace_id = namespace_id.strip()
        if not _NAMESPACE_ID.fullmatch(namespace_id):
            return _api_error(400, 22000, "illegal namespace", f"namespaceId [{namespace_id}] mismatch the pattern")
        if len(namespace_id) > 128:
            return _api_error(400, 22000, "illegal namespace", "too long namespaceId, over 128")
    if not _NAMESPACE_NAME.fullmatch(name):
        return _api_error(400, 22000, "illegal namespace", f"namespaceName [{name}] contains illegal char")
    if not state.add_namespace(namespace_id, name, params.get("namespaceDesc") or ""):
        return _api_error(500, 22002, "namespace already exist", f"namespaceId [{namespace_id}] already exist")
    return _ok(True)


def _gone(switch: str, alternatives: str | None = None) -> Handler:
    """ApiCompatibilityFilter.responseReject: 410 through ``sendError``, the message a ``Result`` as JSON text
    (``${contextPath:nacos}`` is left as written in the annotation)."""
    key = f"nacos.core.api.compatibility.{switch}.enabled"
    if alternatives is None:
        message = (f"Current API will be deprecated, If wanted continue to use, please set `{key}=true` in "
                   "application.properties.")
    else:
        message = (f"Current API will be deprecated, please use API(s) `{alternatives}` instead, or set "
                   f"`{key}=true` in application.properties.")
    body = json.dumps({"code": 40000, "message": message, "data": None}, separators=(",", ":"))

    def handler(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
        return state.error_response(request, 410, body)

    return handler


def _gone_by_method(alternatives: dict[str, str]) -> Handler:
    handlers = {method: _gone("admin", f"{method} ${{contextPath:nacos}}{path}")
                for method, path in alternatives.items()}

    def handler(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse | Hold:
        return handlers[request.method](state, request, params)

    return handler


ROUTES: tuple[Route, ...] = (
    Route("/v1/console/health/liveness", ("GET",), liveness_v2, V2),
    Route("/v1/console/health/readiness", ("GET",), liveness_v2, V2),
    Route("/v1/console/namespaces", ("GET", "POST"), namespaces_v2, V2),
    Route("/v3/admin/core/state/liveness", ("GET",), liveness_v3, V3),
    Route("/v3/admin/core/state/readiness", ("GET",), liveness_v3, V3),
    Route("/v3/admin/core/namespace/list", ("GET",), namespace_list_v3, V3),
    Route("/v3/admin/core/namespace", ("POST",), namespace_create_v3, V3),
    # moved on 3.x: config HealthController (ADMIN_API), ConfigControllerV2 (ADMIN_API), UserController.createAdminUser
    # (CONSOLE_API); client APIs (v1 config, v1 login) stay open (nacos.core.api.compatibility.client.enabled=true)
    Route("/v1/cs/health", ("GET",), _gone("admin"), V3),
    Route("/v2/cs/config", ("GET", "POST", "DELETE"), _gone_by_method(
        {"GET": "/v3/admin/cs/config", "POST": "/v3/admin/cs/config", "DELETE": "/v3/admin/cs/config"}), V3),
    Route("/v1/auth/users/admin", ("POST",), _gone("console", "POST ${contextPath:nacos}/v3/auth/user/admin"), V3),
)
