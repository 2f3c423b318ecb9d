"""The naming API: register/deregister/list requests and the heartbeat flow — each written once.

The heartbeat is a generator of the same I/O commands as the config watch (see :mod:`nacos_token_client.config`),
carried out by the sync and async clients. Wire formats read from the Nacos source (alibaba/nacos 2.5.1, 3.0.3):

* v1 open API, every version (3.x keeps it by default: core/controller/compatibility/ApiCompatibilityConfig.java):
  naming/controllers/InstanceController.java — ``POST/DELETE /v1/ns/instance`` answer ``ok``;
  ``PUT /v1/ns/instance/beat`` answers ``{"clientBeatInterval": ms, "code": 10200|20404, "lightBeatEnabled": b}``
  (20404: the server does not know the instance and the beat carried no ``beat`` info, so register again —
  InstanceOperatorClientImpl.handleBeat); ``GET /v1/ns/instance/list`` answers a ServiceInfo with ``hosts``.
* 3.x client API: naming/controllers/v3/InstanceOpenApiController.java — ``POST /v3/client/ns/instance``
  (``heartBeat=true`` is a light beat; ``Result`` code 21003 means register again), ``DELETE``, ``GET .../list``.

An ephemeral instance turns unhealthy 15 s after its last accepted beat and is removed after 30 s
(api/common/Constants.java, naming/healthcheck/heartbeat/UnhealthyInstanceChecker.java): a beat that fails is
retried within a fraction of the interval, through the client's fail-over and token healing, never a full
interval later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .config import UNREACHABLE, Call, Flow, Send, Sleep, backoff_seconds, fail
from .errors import RequestFailedError

__all__ = ["Instance", "NamingApi"]

log = logging.getLogger("nacos_token_client")
NamingApi = Literal["v1", "v3"]
DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
SERVICE_SPLITTER = "@@"
CODE_OK = 10200
CODE_RESOURCE_NOT_FOUND = 20404  # api/naming/NamingResponseCode.java
V3_INSTANCE_NOT_FOUND = 21003  # api/model/v2/ErrorCode.java
DEFAULT_BEAT_INTERVAL = 5.0  # api/common/Constants.java DEFAULT_HEART_BEAT_INTERVAL; SwitchDomain.clientBeatInterval


@dataclass(frozen=True, slots=True)
class Instance:
    """A service instance as the server lists it; ``service_name`` without its ``group@@`` prefix.

    ``ip`` and ``port`` say where to reach it; ``weight`` (Nacos's load-balancing weight), ``healthy`` (beats
    arrive in time), ``enabled`` (an operator has not taken it out), ``ephemeral`` (kept by heartbeats rather
    than persisted), ``cluster_name`` and ``metadata`` are as the server reports them.
    """

    ip: str
    port: int
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    ephemeral: bool = True
    cluster_name: str = DEFAULT_CLUSTER
    service_name: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What a registration sends (and beats re-send)."""

    service_name: str
    ip: str
    port: int
    group_name: str = DEFAULT_GROUP
    cluster_name: str = DEFAULT_CLUSTER
    weight: float = 1.0
    metadata: Mapping[str, str] = field(default_factory=dict)
    ephemeral: bool = True
    namespace: str = ""

    def __post_init__(self) -> None:
        if not self.service_name or SERVICE_SPLITTER in self.service_name:
            raise ValueError(f"service_name must be a plain, non-empty name, not {self.service_name!r}")
        if not self.ip:
            raise ValueError("ip must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port!r}")
        if not 0.0 <= self.weight <= 10000.0:
            raise ValueError("weight must be 0..10000 (HttpRequestInstanceBuilder)")

    @property
    def grouped(self) -> str:
        return f"{self.group_name}{SERVICE_SPLITTER}{self.service_name}"


def _base(spec: InstanceSpec, api: NamingApi) -> dict[str, str]:
    params = {"serviceName": spec.grouped if api == "v1" else spec.service_name, "groupName": spec.group_name,
              "ip": spec.ip, "port": str(spec.port), "clusterName": spec.cluster_name,
              "ephemeral": "true" if spec.ephemeral else "false"}
    if spec.namespace:
        params["namespaceId"] = spec.namespace
    return params


def _read_ok(response: httpx.Response) -> bool:
    if response.status_code != 200:
        raise fail(response)
    try:
        data = response.json()
    except ValueError:
        return response.text.strip() == "ok"
    if isinstance(data, dict) and data.get("code", 0) != 0:
        raise RequestFailedError(f"{response.request.method} {response.request.url.path}: code {data.get('code')}: "
                                 f"{data.get('message')}", status_code=200, server_message=str(data.get("message")))
    return True


def register_call(spec: InstanceSpec, api: NamingApi) -> Call[bool]:
    form = {**_base(spec, api), "weight": repr(float(spec.weight)), "enabled": "true", "healthy": "true",
            "metadata": json.dumps(dict(spec.metadata))}
    path = "/v1/ns/instance" if api == "v1" else "/v3/client/ns/instance"
    return Call("POST", path, None, form, _read_ok)


def deregister_call(spec: InstanceSpec, api: NamingApi) -> Call[bool]:
    path = "/v1/ns/instance" if api == "v1" else "/v3/client/ns/instance"
    return Call("DELETE", path, _base(spec, api), None, _read_ok)


@dataclass(frozen=True, slots=True)
class BeatAnswer:
    """What a beat told us: accepted, or the server does not know the instance; the next interval."""

    known: bool
    interval: float | None
    light: bool


def _read_beat(response: httpx.Response) -> BeatAnswer:
    if response.status_code != 200:
        raise fail(response)
    data = response.json()
    if not isinstance(data, dict):
        raise RequestFailedError("beat answer is not a JSON object", status_code=200, server_message="")
    if "clientBeatInterval" in data:  # v1
        interval = data.get("clientBeatInterval")
        seconds = interval / 1000 if isinstance(interval, (int, float)) and interval > 0 else None
        return BeatAnswer(data.get("code") != CODE_RESOURCE_NOT_FOUND, seconds, bool(data.get("lightBeatEnabled")))
    code = data.get("code")
    if code not in (0, V3_INSTANCE_NOT_FOUND):
        raise RequestFailedError(f"beat: code {code}: {data.get('message')}", status_code=200,
                                 server_message=str(data.get("message")))
    return BeatAnswer(code == 0, None, True)


def beat_call(spec: InstanceSpec, api: NamingApi, *, light: bool) -> Call[BeatAnswer]:
    """A v1 beat carries the instance (``beat`` JSON) unless the server enabled light beats, so a server that
    lost the instance re-registers it at once; a v3 beat is always light (``heartBeat=true``)."""
    if api == "v3":
        return Call("POST", "/v3/client/ns/instance", None, {**_base(spec, api), "heartBeat": "true"}, _read_beat)
    params = _base(spec, api)
    if not light:
        params["beat"] = json.dumps({"serviceName": spec.grouped, "ip": spec.ip, "port": spec.port,
                                     "cluster": spec.cluster_name, "weight": spec.weight,
                                     "metadata": dict(spec.metadata), "ephemeral": spec.ephemeral})
    return Call("PUT", "/v1/ns/instance/beat", params, None, _read_beat)


def _instance(data: Mapping[str, Any]) -> Instance:
    service = str(data.get("serviceName", ""))
    metadata = data.get("metadata") or {}
    return Instance(ip=str(data["ip"]), port=int(data["port"]), weight=float(data.get("weight", 1.0)),
                    healthy=bool(data.get("healthy", True)), enabled=bool(data.get("enabled", True)),
                    ephemeral=bool(data.get("ephemeral", True)),
                    cluster_name=str(data.get("clusterName") or DEFAULT_CLUSTER),
                    service_name=service.split(SERVICE_SPLITTER, 1)[-1],
                    metadata={str(k): str(v) for k, v in dict(metadata).items()})


def _read_instances(response: httpx.Response) -> list[Instance]:
    if response.status_code != 200:
        raise fail(response)
    data = response.json()
    hosts = data.get("hosts") if "hosts" in data else data.get("data")
    if isinstance(data, dict) and data.get("code", 0) not in (0, None) and "hosts" not in data:
        raise RequestFailedError(f"list: code {data.get('code')}: {data.get('message')}", status_code=200,
                                 server_message=str(data.get("message")))
    return [_instance(h) for h in hosts or []]


def list_call(service_name: str, group_name: str, namespace: str, healthy_only: bool,
              api: NamingApi) -> Call[list[Instance]]:
    params = {"serviceName": service_name, "groupName": group_name}
    if namespace:
        params["namespaceId"] = namespace
    if api == "v1":
        params["healthyOnly"] = "true" if healthy_only else "false"
        return Call("GET", "/v1/ns/instance/list", params, None, _read_instances)
    read = _read_instances
    if healthy_only:  # the v3 list has no healthyOnly: it answers enabled instances, healthy or not
        def read(response: httpx.Response) -> list[Instance]:
            return [i for i in _read_instances(response) if i.healthy]
    return Call("GET", "/v3/client/ns/instance/list", params, None, read)


# -- the heartbeat flow -----------------------------------------------------------------------------------------------


HEART_BEAT_INTERVAL_KEY = "preserved.heart.beat.interval"  # api/naming/PreservedMetadataKeys.java, milliseconds


def initial_interval(spec: InstanceSpec) -> float:
    """The interval before the server says otherwise: the instance's own ``preserved.heart.beat.interval`` (which
    the server answers too: InstanceOperatorClientImpl.getHeartBeatInterval), else Nacos's 5 s. A v3 beat answer
    carries no interval, so this one stays."""
    try:
        return max(float(spec.metadata[HEART_BEAT_INTERVAL_KEY]) / 1000, 0.001)
    except (KeyError, ValueError):
        return DEFAULT_BEAT_INTERVAL


@dataclass
class HeartbeatState:
    """One registration's heartbeat: stopped by ``deregister()`` or ``close()``; counts for observability."""

    spec: InstanceSpec
    api: NamingApi
    interval: float = DEFAULT_BEAT_INTERVAL
    stopped: bool = False
    beats: int = 0
    failures: int = 0
    reregistrations: int = 0
    #: The thread or task that runs the flow (set by the client's shell).
    runner: Any = None

    def __post_init__(self) -> None:
        self.interval = initial_interval(self.spec)

    def is_stopped(self) -> bool:
        return self.stopped


def heartbeat_flow(state: HeartbeatState, *, backoff: tuple[float, float] = (0.1, 1.0)) -> Flow[None]:
    """Beat at once (to learn the server's interval), then every ``clientBeatInterval``; register again when the
    server does not know the instance; after a failure retry after a jittered fraction of the interval (at most
    a third of it), so a rotation, a restart or a fail-over costs well under the 15 s that turn it unhealthy."""
    light = False
    delay = 0.0
    failures = 0
    while not state.stopped:
        if delay:
            yield Sleep(delay, state.is_stopped)
            if state.stopped:
                return
        try:
            response = yield Send(beat_call(state.spec, state.api, light=light))
            answer = _read_beat(response)
            if not answer.known:
                log.info("heartbeat: %s %s:%s unknown to the server; registering again", state.spec.service_name,
                         state.spec.ip, state.spec.port)
                _read_ok((yield Send(register_call(state.spec, state.api))))
                state.reregistrations += 1
        except (*UNREACHABLE, RequestFailedError, ValueError) as exc:
            failures += 1
            state.failures += 1
            delay = min(backoff_seconds(*backoff, failures), state.interval / 3)
            log.warning("heartbeat: %s %s:%s failed (%s: %s); retrying in %.2f s", state.spec.service_name,
                        state.spec.ip, state.spec.port, type(exc).__name__, str(exc)[:200], delay)
            continue
        failures = 0
        state.beats += 1
        if answer.interval is not None:
            state.interval = answer.interval
        light = answer.light and answer.known
        delay = state.interval
