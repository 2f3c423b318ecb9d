"""The v1 config API and its long poll (config ``controller/ConfigController.java``, ``ConfigServletInner.java``,
``service/LongPollingService.java``, ``utils/MD5Util.java``, ``utils/ParamUtils.java``).

Its exceptions reach config's ``GlobalExceptionHandler``: ``IllegalArgumentException`` and ``NacosException`` as
``<status> caused: <message>;`` text, on 2.x and 3.x alike.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote_plus

from .model import (
    LINE_SEPARATOR,
    WORD_SEPARATOR,
    Hold,
    MockRequest,
    MockResponse,
    Probe,
    is_blank,
    poll_answer,
    required,
    text,
)
from .state import NacosState, Route

__all__ = ["ROUTES", "config_resource", "resource_token"]

_VALID_CHARS = frozenset("_-.:")
#: FileTypeEnum: the Content-Type a config of each type is served with (anything else: text).
_CONTENT_TYPES = {"json": "application/json;charset=UTF-8", "xml": "application/xml;charset=UTF-8",
                  "html": "text/html;charset=UTF-8"}
_TEXT = "text/plain;charset=UTF-8"


class _Invalid(Exception):
    """IllegalArgumentException / NacosApiException(400): config's GlobalExceptionHandler writes ``caused: …;``."""


def resource_token(request: MockRequest, params: dict[str, str]) -> str | None:
    """Where the filter finds a token, identically in 2.2.3, 2.5.1, 3.0.3 and the 3.1 snapshot.

    ``auth/.../context/HttpIdentityContextBuilder.java`` collects the plugin's identity names (``Authorization``
    and ``accessToken``, ``NacosAuthPluginService.IDENTITY_NAMES``) from the headers, then from the parameters —
    names compared case-insensitively, a parameter overwriting a header. ``NacosAuthPluginService.resolveToken``
    then takes a non-blank ``Authorization`` starting with ``Bearer `` (case-sensitive) as the token — the rest
    unstripped, and even when blank, in which case ``accessToken`` is not looked at and the credentials are —
    else ``accessToken``."""
    identity: dict[str, str] = {}
    for name, value in (*request.headers.items(), *params.items()):
        if name.lower() in ("authorization", "accesstoken"):
            identity[name.lower()] = value
    bearer = identity.get("authorization", "")
    if not is_blank(bearer) and bearer.startswith("Bearer "):
        return bearer[len("Bearer "):]
    return identity.get("accesstoken") or None


def config_resource(tenant: str | None, group: str | None, data_id: str | None) -> str:
    """NacosRoleServiceImpl.joinResource for a config: ``namespace:group:config/dataId``, the namespace left out
    when blank or "public", ``*`` for a blank group or data id."""
    namespace = "" if is_blank(tenant) or tenant == "public" else tenant
    return f"{namespace}:{'*' if is_blank(group) else group}:config/{'*' if is_blank(data_id) else data_id}"


def _is_valid(value: str) -> bool:
    """ParamUtils.isValid: letters, digits and ``_ - . :``."""
    return all(ch.isalnum() or ch in _VALID_CHARS for ch in value)


def _check_tenant(tenant: str) -> None:
    """ParamUtils.checkTenant."""
    if not is_blank(tenant):
        if not _is_valid(tenant.strip()):
            raise _Invalid("invalid tenant")
        if len(tenant) > 128:
            raise _Invalid("too long tenant, over 128")


def _check_param(data_id: str, group: str, content: str) -> None:
    """ParamUtils.checkParam(dataId, group, datumId, content): the first failure, worded as Nacos words it."""
    if is_blank(data_id) or not _is_valid(data_id.strip()):
        raise _Invalid("invalid dataId : " + data_id)
    if is_blank(group) or not _is_valid(group):
        raise _Invalid("invalid group : " + group)
    if is_blank(content):
        raise _Invalid("content is blank : " + content)


def configs(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse:
    """``GET/POST/DELETE /v1/cs/configs`` (``@Secured`` read for GET, write otherwise)."""
    rejection = state.guard(request, params, resource_token(request, params),
                            resource=config_resource(params.get("tenant"), params.get("group"), params.get("dataId")),
                            action="r" if request.method == "GET" else "w", data_id=params.get("dataId"))
    if rejection is not None:
        return rejection
    data_id = required(params, "dataId")
    group = required(params, "group")
    raw_tenant = params.get("tenant", "")
    try:
        if request.method == "POST":
            content = required(params, "content")
            tenant = state.normalize_tenant(raw_tenant)
            _check_tenant(tenant)
            _check_param(data_id, group, content)
            state.set_config(data_id, content, group, tenant, params.get("type") or "text")
            return text(200, "true")
        _check_tenant(raw_tenant)
        tenant = state.normalize_tenant(raw_tenant)
        _check_param(data_id, group, "content" if request.method == "GET" else "rm")
    except _Invalid as exc:
        return text(400, f"caused: {exc};")
    if request.method == "DELETE":
        state.remove_config(data_id, group, tenant)
        return text(200, "true")
    entry = state.config_entry(data_id, group, tenant)
    if entry is None:
        return text(404, "config data not exist\n")
    content, config_type = entry
    md5 = hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()
    # ConfigServletInner.setCommonResponseHead / ConfigContentTypeHandler
    return MockResponse(200, content.encode(), (
        ("Content-Type", _CONTENT_TYPES.get(config_type, _TEXT)), ("Config-Type", config_type),
        ("Content-MD5", md5), ("Pragma", "no-cache"), ("Cache-Control", "no-cache,no-store")))


def _client_md5_map(state: NacosState, probe_modify: str) -> tuple[Probe, ...]:
    """MD5Util.getClientMd5Map. 2.x keys a probe by its tenant as sent (a ``public`` probe is another key than
    the default namespace ""); 3.x normalizes it and leaves a transferred tenant out of the answer."""
    probes: dict[tuple[str, str, str], Probe] = {}
    fields: list[str] = []
    start = 0
    for i, ch in enumerate(probe_modify):
        if ch == WORD_SEPARATOR:
            fields.append(probe_modify[start:i])
            start = i + 1
            if len(fields) > 3:
                raise _Invalid("invalid probeModify")
        elif ch == LINE_SEPARATOR:
            end = probe_modify[start:i]
            start = i + 1
            if len(fields) < 2:
                raise _Invalid("invalid probeModify")
            data_id, group = fields[0], fields[1]
            md5, sent = (end, "") if len(fields) == 2 else (fields[2], end)
            if state.major == 2:
                tenant, shown = sent, sent or None
            else:
                tenant = state.normalize_tenant(sent)
                shown = None if is_blank(sent) else tenant
            probes[(data_id, group, tenant)] = Probe(data_id, group, md5, tenant, shown)
            fields = []
    return tuple(probes.values())


def listener(state: NacosState, request: MockRequest, params: dict[str, str]) -> MockResponse | Hold:
    """``POST /v1/cs/configs/listener``: changed keys at once, else a hold of ``max(10 s, timeout - 0.5 s)``."""
    rejection = state.guard(request, params, resource_token(request, params),
                            resource=config_resource(params.get("tenant"), params.get("group"), params.get("dataId")),
                            action="r")
    if rejection is not None:
        return rejection
    try:
        probe_modify = params.get("Listening-Configs")
        if is_blank(probe_modify):
            raise _Invalid("invalid probeModify")
        # ConfigController.listener URL-decodes the parameter a second time
        probes = _client_md5_map(state, unquote_plus(probe_modify))  # type: ignore[arg-type]
        hold = Hold(probes, 0.0)
        changed = state.changed_keys(hold)
        if changed is not None:
            return poll_answer(changed)
        timeout = request.headers.get("long-pulling-timeout")
        if timeout is None or request.headers.get("long-pulling-timeout-no-hangup", "").lower() == "true":
            return poll_answer(b"")
        try:
            millis = int(timeout)
        except ValueError:
            raise _Invalid(f'For input string: "{timeout}"') from None  # Long.parseLong's NumberFormatException
    except _Invalid as exc:
        return text(400, f"caused: {exc};")
    # LongPollingService.addLongPollingClient: max(MIN_LONG_POOLING_TIMEOUT 10 s, timeout - 500 ms), no upper bound
    seconds = max(state.poll_min_hold, millis / 1000 - 0.5)
    if state.poll_max_hold is not None:
        seconds = min(seconds, state.poll_max_hold)
    return Hold(probes, max(seconds, 0.0))


ROUTES: tuple[Route, ...] = (
    Route("/v1/cs/configs", ("GET", "POST", "DELETE"), configs),
    Route("/v1/cs/configs/listener", ("POST",), listener),
)
