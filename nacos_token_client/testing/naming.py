"""The mock server's naming registry: services, instances, heartbeats and their expiry, as real Nacos keeps them.

State and request handlers only — nothing here knows how a request arrived. ``server.py`` routes the naming paths
here (after its auth guard) and turns each :class:`NamingAnswer` into a response. Expiry is driven by the clock the
registry is given, so tests move a fake clock instead of sleeping; it is applied lazily, on every request, which is
what Nacos's 5-second check task converges to.

Every rule is read from the Nacos source (alibaba/nacos, tags 2.5.1 and 3.0.3), cited where it is applied:

* ``naming/controllers/InstanceController.java`` — the v1 open API (``/v1/ns/instance``, ``/beat``, ``/list``),
* ``naming/controllers/v3/InstanceOpenApiController.java`` — the 3.x client API (``/v3/client/ns/instance``),
* ``naming/core/InstanceOperatorClientImpl.java`` — register/remove/handleBeat/getHeartBeatInterval/listInstance,
* ``naming/healthcheck/heartbeat/UnhealthyInstanceChecker.java``, ``ExpiredInstanceChecker.java``,
  ``ClientBeatProcessorV2.java`` — an ephemeral instance turns unhealthy after 15 s without a beat, is removed
  after 30 s, and a beat makes it healthy again,
* ``api/common/Constants.java`` (DEFAULT_HEART_BEAT_TIMEOUT 15 s, DEFAULT_IP_DELETE_TIMEOUT 30 s,
  DEFAULT_HEART_BEAT_INTERVAL 5 s), ``naming/misc/SwitchDomain.java`` (clientBeatInterval 5 s,
  lightBeatEnabled true), ``api/naming/NamingResponseCode.java`` (20404), ``api/common/ResponseCode.java`` (10200).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BeatRecord", "NamingAnswer", "NamingHandler", "NamingRegistry"]

DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
DEFAULT_NAMESPACE = "public"
SERVICE_SPLITTER = "@@"
#: ResponseCode.OK and NamingResponseCode.RESOURCE_NOT_FOUND (api/common/ResponseCode.java, NamingResponseCode.java)
CODE_OK = 10200
CODE_RESOURCE_NOT_FOUND = 20404
#: ErrorCode.INSTANCE_NOT_FOUND / PARAMETER_MISSING / INSTANCE_ERROR (api/model/v2/ErrorCode.java, 3.0.3)
V3_INSTANCE_NOT_FOUND = 21003
V3_PARAMETER_MISSING = 10000
V3_INSTANCE_ERROR = 21004
#: PreservedMetadataKeys (api/naming/PreservedMetadataKeys.java): per-instance overrides, in milliseconds.
HEART_BEAT_INTERVAL_KEY = "preserved.heart.beat.interval"
HEART_BEAT_TIMEOUT_KEY = "preserved.heart.beat.timeout"
IP_DELETE_TIMEOUT_KEY = "preserved.ip.delete.timeout"
#: NamingUtils.CLUSTER_NAME_PATTERN (api/naming/utils/NamingUtils.java)
_CLUSTER_NAME = re.compile(r"[0-9a-zA-Z-]+")
_TRUE = frozenset({"true", "on", "yes", "y", "t"})  # ConvertUtils.toBoolean (BooleanUtils semantics)


@dataclass(frozen=True, slots=True)
class NamingAnswer:
    """What a naming handler answers; ``server.py`` turns it into a response."""

    status: int
    body: str
    json: bool = False


@dataclass(frozen=True, slots=True)
class BeatRecord:
    """One accepted heartbeat (for tests and benchmarks that measure gaps)."""

    namespace: str
    service: str  # group@@name
    ip: str
    port: int
    at: float  # the registry's clock


@dataclass(slots=True)
class _Instance:
    ip: str
    port: int
    cluster: str
    weight: float
    enabled: bool
    healthy: bool
    ephemeral: bool
    metadata: dict[str, str]
    last_beat: float
    instance_id: str = ""


class _BadParam(Exception):
    """A request Nacos refuses with HTTP 400 and this message."""


NamingHandler = Callable[[str, Mapping[str, str]], NamingAnswer]


@dataclass
class NamingRegistry:
    """Services and their instances, with heartbeat expiry read from the Nacos source.

    ``client_beat_interval`` is what beat answers tell clients (SwitchDomain.clientBeatInterval, 5 s), so a test can
    ask for fast heartbeats; ``heart_beat_timeout`` and ``ip_delete_timeout`` are the defaults an instance without
    ``preserved.*`` metadata gets (15 s and 30 s). All in seconds.
    """

    clock: Callable[[], float]
    client_beat_interval: float = 5.0
    heart_beat_timeout: float = 15.0
    ip_delete_timeout: float = 30.0
    light_beat_enabled: bool = True
    #: Every accepted beat, oldest first (bounded by ``max_beat_records``).
    beats: list[BeatRecord] = field(default_factory=list)
    max_beat_records: int = 100_000
    #: How many times an instance turned unhealthy / was removed for missing beats.
    unhealthy_transitions: int = 0
    expirations: int = 0
    _services: dict[tuple[str, str], dict[tuple[str, int, bool], _Instance]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- routing (server.py adds these below its context path) ------------------------------------------------------

    def routes(self, nacos_version: int) -> dict[str, tuple[tuple[str, ...], NamingHandler]]:
        """Path → methods and handler. The v1 open API on every version (3.x keeps it while
        ``nacos.core.api.compatibility.client.enabled`` is true, its default: core/controller/compatibility/
        ApiCompatibilityConfig.java); the v3 client API on 3.x only."""
        routes: dict[str, tuple[tuple[str, ...], NamingHandler]] = {
            "/v1/ns/instance": (("GET", "POST", "PUT", "DELETE"), self.v1_instance),
            "/v1/ns/instance/beat": (("PUT",), self.v1_beat),
            "/v1/ns/instance/list": (("GET",), self.v1_list),
        }
        if nacos_version >= 3:
            routes["/v3/client/ns/instance"] = (("POST", "DELETE"), self.v3_instance)
            routes["/v3/client/ns/instance/list"] = (("GET",), self.v3_list)
        return routes

    # -- direct access for tests -------------------------------------------------------------------------------------

    def instances(self, service: str, group: str = DEFAULT_GROUP, namespace: str = "") -> list[dict[str, Any]]:
        """Every instance of a service as the v1 list shows it (healthy or not, disabled included)."""
        with self._lock:
            self._sweep()
            key = (namespace or DEFAULT_NAMESPACE, _grouped(service, group))
            return [self._view(key[1], i) for i in self._services.get(key, {}).values()]

    def last_beat_gap(self, ip: str, port: int) -> float:
        """The longest time between two consecutive accepted beats of ``ip:port`` (registry clock), 0 if < 2."""
        times = [b.at for b in self.beats if b.ip == ip and b.port == port]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    # -- v1 open API (naming/controllers/InstanceController.java) --------------------------------------------------

    def v1_instance(self, method: str, params: Mapping[str, str]) -> NamingAnswer:
        try:
            namespace, service = _v1_service(params)
            if method == "GET":
                return self._v1_detail(namespace, service, params)
            instance = _instance_from(params)
            if method == "POST":
                self.register(namespace, service, instance)
            elif method == "DELETE":
                self.deregister(namespace, service, instance.ip, instance.port, instance.ephemeral)
            else:
                self._update(namespace, service, instance)
        except _BadParam as exc:
            return NamingAnswer(400, str(exc))
        return NamingAnswer(200, "ok")

    def v1_beat(self, method: str, params: Mapping[str, str]) -> NamingAnswer:
        """``PUT /v1/ns/instance/beat``: code 10200, or 20404 for an unknown instance beaten without ``beat`` info
        (a full beat re-registers it: InstanceOperatorClientImpl.handleBeat). Answers ``clientBeatInterval`` (the
        instance's preserved.heart.beat.interval, else the switch's) and ``lightBeatEnabled``."""
        try:
            namespace, service = _v1_service(params)
            beat_text = params.get("beat", "")
            beat: dict[str, Any] | None = None
            if beat_text.strip():
                try:
                    beat = json.loads(beat_text)
                except ValueError:
                    raise _BadParam(f"beat is not JSON: {beat_text[:80]}") from None
                if not isinstance(beat, dict):
                    raise _BadParam("beat is not a JSON object")
            cluster = params.get("clusterName") or DEFAULT_CLUSTER
            ip, port = params.get("ip", ""), _int(params.get("port", "0") or "0", "port")
            if beat is not None:
                if beat.get("cluster"):
                    cluster = str(beat["cluster"])
                ip, port = str(beat.get("ip", "")), _int(str(beat.get("port", 0)), "port")
            code = self.beat(namespace, service, ip, port, cluster=cluster, beat=beat)
        except _BadParam as exc:
            return NamingAnswer(400, str(exc))
        body = {"clientBeatInterval": self._interval_ms(namespace, service, ip, port), "code": code,
                "lightBeatEnabled": self.light_beat_enabled}
        return NamingAnswer(200, json.dumps(body), json=True)

    def v1_list(self, method: str, params: Mapping[str, str]) -> NamingAnswer:
        """``GET /v1/ns/instance/list``: a ServiceInfo with the enabled instances, of ``clusters`` if given
        (ServiceUtil.selectInstancesWithHealthyProtection: no protection without service metadata, which instance
        registration does not create)."""
        try:
            namespace, service = _v1_service(params)
        except _BadParam as exc:
            return NamingAnswer(400, str(exc))
        clusters = params.get("clusters", "")
        healthy_only = params.get("healthyOnly", "false").lower() == "true"  # Boolean.parseBoolean
        hosts = self._select(namespace, service, clusters, healthy_only)
        body = {"name": service, "groupName": service.split(SERVICE_SPLITTER)[0], "clusters": clusters,
                "cacheMillis": 10000,  # SwitchDomain.defaultPushCacheMillis
                "hosts": hosts, "lastRefTime": int(self.clock() * 1000), "checksum": "", "allIPs": False,
                "reachProtectionThreshold": False, "valid": True}
        return NamingAnswer(200, json.dumps(body), json=True)

    def _v1_detail(self, namespace: str, service: str, params: Mapping[str, str]) -> NamingAnswer:
        cluster = params.get("clusterName") or DEFAULT_CLUSTER
        ip = _required(params, "ip")
        port = _int(_required(params, "port"), "port")
        with self._lock:
            self._sweep()
            for found in self._services.get((namespace, service), {}).values():
                if (found.ip, found.port, found.cluster) == (ip, port, cluster):
                    view = self._view(service, found)
                    body = {"service": service, "ip": ip, "port": port, "clusterName": cluster,
                            "weight": view["weight"], "healthy": view["healthy"], "instanceId": view["instanceId"],
                            "metadata": view["metadata"]}
                    return NamingAnswer(200, json.dumps(body), json=True)
        # NacosApiException(NOT_FOUND, ...) answered by ResponseExceptionHandler: its status and message
        return NamingAnswer(404, "no matched ip found!")

    # -- v3 client API (naming/controllers/v3/InstanceOpenApiController.java, 3.x) -----------------------------------

    def v3_instance(self, method: str, params: Mapping[str, str]) -> NamingAnswer:
        """``POST`` registers, or with ``heartBeat=true`` is a light beat (code 21003 when the instance is unknown:
        register again); ``DELETE`` deregisters. Answers are ``Result`` JSON."""
        try:
            namespace, service = _v3_service(params)
            _v3_required(params, "ip")
            _v3_required(params, "port")
            instance = _instance_from(params)
            if method == "DELETE":
                self.deregister(namespace, service, instance.ip, instance.port, instance.ephemeral)
            elif params.get("heartBeat", "false").lower() == "true":
                code = self.beat(namespace, service, instance.ip, instance.port, cluster=instance.cluster, beat=None)
                if code != CODE_OK:
                    return _result(200, V3_INSTANCE_NOT_FOUND, "instance not found", None)
            else:
                self.register(namespace, service, instance)
        except _V3Error as exc:
            return _result(400, exc.code, str(exc), None)
        except _BadParam as exc:
            return _result(400, V3_INSTANCE_ERROR, str(exc), None)
        return _result(200, 0, "success", "ok")

    def v3_list(self, method: str, params: Mapping[str, str]) -> NamingAnswer:
        """``GET /v3/client/ns/instance/list``: the enabled instances (healthy or not) of a service."""
        try:
            namespace, service = _v3_service(params)
        except _V3Error as exc:
            return _result(400, exc.code, str(exc), None)
        return _result(200, 0, "success", self._select(namespace, service, params.get("clusterName", ""), False))

    # -- state ---------------------------------------------------------------------------------------------------

    def register(self, namespace: str, service: str, instance: _Instance) -> None:
        """InstanceOperatorClientImpl.registerInstance: one instance per ip:port and kind in a service (the
        IpPortBasedClient publishes one instance per service), checked by NamingUtils.checkInstanceIsLegal."""
        interval = _ms(instance.metadata, HEART_BEAT_INTERVAL_KEY, 5000)
        if _ms(instance.metadata, HEART_BEAT_TIMEOUT_KEY, 15000) < interval or \
                _ms(instance.metadata, IP_DELETE_TIMEOUT_KEY, 30000) < interval:
            raise _BadParam("Instance 'heart beat interval' must less than 'heart beat timeout' and "
                            "'ip delete timeout'.")
        if instance.cluster and not _CLUSTER_NAME.fullmatch(instance.cluster):
            raise _BadParam(f"Instance 'clusterName' should be characters with only 0-9a-zA-Z-. "
                            f"(current: {instance.cluster})")
        with self._lock:
            self._sweep()
            instance.last_beat = self.clock()
            instance.instance_id = f"{instance.ip}#{instance.port}#{instance.cluster}#{service}"
            self._services.setdefault((namespace, service), {})[
                (instance.ip, instance.port, instance.ephemeral)] = instance

    def deregister(self, namespace: str, service: str, ip: str, port: int, ephemeral: bool) -> None:
        """InstanceOperatorClientImpl.removeInstance: removing an unknown instance is not an error."""
        with self._lock:
            self._sweep()
            self._services.get((namespace, service), {}).pop((ip, port, ephemeral), None)

    def beat(self, namespace: str, service: str, ip: str, port: int, *, cluster: str,
             beat: Mapping[str, Any] | None) -> int:
        """InstanceOperatorClientImpl.handleBeat + ClientBeatProcessorV2: refresh the last beat, heal."""
        with self._lock:
            self._sweep()
            found = self._services.get((namespace, service), {}).get((ip, port, True))
            if found is None:
                if beat is None:
                    return CODE_RESOURCE_NOT_FOUND
                metadata = beat.get("metadata") or {}
                found = _Instance(ip, port, cluster, float(beat.get("weight", 1.0) or 1.0), True, True,
                                  True, {str(k): str(v) for k, v in dict(metadata).items()}, 0.0)
                self.register(namespace, service, found)
            now = self.clock()
            found.last_beat = now
            found.healthy = True
            self.beats.append(BeatRecord(namespace, service, ip, port, now))
            if len(self.beats) > self.max_beat_records:
                del self.beats[: len(self.beats) // 2]
            return CODE_OK

    def _update(self, namespace: str, service: str, instance: _Instance) -> None:
        with self._lock:
            self._sweep()
            found = self._services.get((namespace, service), {}).get((instance.ip, instance.port,
                                                                      instance.ephemeral))
            if found is None:
                raise _BadParam(f"instance not exist: {instance.ip}:{instance.port}")
            found.weight, found.enabled, found.metadata = instance.weight, instance.enabled, instance.metadata

    def _sweep(self) -> None:
        """UnhealthyInstanceChecker and ExpiredInstanceChecker, for ephemeral instances: unhealthy when the last
        beat is older than the heart-beat timeout, removed when older than the ip-delete timeout."""
        now = self.clock()
        for key, instances in list(self._services.items()):
            for ident, instance in list(instances.items()):
                if not instance.ephemeral:
                    continue
                silent = now - instance.last_beat
                if silent > _ms(instance.metadata, IP_DELETE_TIMEOUT_KEY, self.ip_delete_timeout * 1000) / 1000:
                    del instances[ident]
                    self.expirations += 1
                elif instance.healthy and \
                        silent > _ms(instance.metadata, HEART_BEAT_TIMEOUT_KEY, self.heart_beat_timeout * 1000) / 1000:
                    instance.healthy = False
                    self.unhealthy_transitions += 1
            if not instances:
                del self._services[key]

    def _select(self, namespace: str, service: str, clusters: str, healthy_only: bool) -> list[dict[str, Any]]:
        wanted = {c for c in clusters.split(",") if c}
        with self._lock:
            self._sweep()
            return [self._view(service, i) for i in self._services.get((namespace, service), {}).values()
                    if i.enabled and (not wanted or i.cluster in wanted) and (i.healthy or not healthy_only)]

    def _interval_ms(self, namespace: str, service: str, ip: str, port: int) -> int:
        """InstanceOperatorClientImpl.getHeartBeatInterval: the instance's preserved interval, else the switch's."""
        with self._lock:
            found = self._services.get((namespace, service), {}).get((ip, port, True))
            default = self.client_beat_interval * 1000
            return int(_ms(found.metadata, HEART_BEAT_INTERVAL_KEY, default) if found else default)

    def _view(self, service: str, i: _Instance) -> dict[str, Any]:
        """The api Instance JSON (api/naming/pojo/Instance.java getters, InstanceUtil.parseToApiInstance)."""
        return {"instanceId": i.instance_id, "ip": i.ip, "port": i.port, "weight": i.weight, "healthy": i.healthy,
                "enabled": i.enabled, "ephemeral": i.ephemeral, "clusterName": i.cluster, "serviceName": service,
                "metadata": dict(i.metadata),
                "instanceHeartBeatInterval": int(_ms(i.metadata, HEART_BEAT_INTERVAL_KEY, 5000)),
                "instanceHeartBeatTimeOut": int(_ms(i.metadata, HEART_BEAT_TIMEOUT_KEY, 15000)),
                "ipDeleteTimeout": int(_ms(i.metadata, IP_DELETE_TIMEOUT_KEY, 30000)),
                "instanceIdGenerator": "simple"}


# -- request parsing -------------------------------------------------------------------------------------------------


class _V3Error(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _result(status: int, code: int, message: str, data: Any) -> NamingAnswer:
    """``Result`` (api/model/v2/Result.java): code, message, data."""
    return NamingAnswer(status, json.dumps({"code": code, "message": message, "data": data}), json=True)


def _grouped(service: str, group: str) -> str:
    return service if SERVICE_SPLITTER in service else f"{group or DEFAULT_GROUP}{SERVICE_SPLITTER}{service}"


def _v1_service(params: Mapping[str, str]) -> tuple[str, str]:
    """ServiceNameFilter: ``groupName@@serviceName`` (group defaults to DEFAULT_GROUP), then
    NamingUtils.checkServiceNameFormat; ``namespaceId`` defaults to ``public``."""
    service = params.get("serviceName", "").strip()
    if not service:
        raise _BadParam("Param 'serviceName' is required.")
    grouped = _grouped(service, params.get("groupName", "").strip())
    if grouped.split(SERVICE_SPLITTER)[0] == "":
        raise _BadParam("Service name filter error,Param 'serviceName' is illegal, groupName can't be empty")
    return params.get("namespaceId") or DEFAULT_NAMESPACE, grouped


def _v3_required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        kind = "Integer" if name == "port" else "String"
        raise _V3Error(V3_PARAMETER_MISSING, f"Required parameter '{name}' type {kind} is not present")
    return value


def _v3_service(params: Mapping[str, str]) -> tuple[str, str]:
    """InstanceForm.validate / fillDefaultValue: separate groupName (DEFAULT_GROUP) and serviceName."""
    service = _v3_required(params, "serviceName")
    return params.get("namespaceId") or DEFAULT_NAMESPACE, _grouped(service, params.get("groupName", ""))


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise _BadParam(f"Param '{name}' is required.")  # WebUtils.required
    return value


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _BadParam(f"For input string: \"{text}\"") from None  # NumberFormatException's message


def _boolean(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = params.get(name, "")
    return default if value == "" else value.strip().lower() in _TRUE


def _metadata(text: str) -> dict[str, str]:
    """UtilsAndCommons.parseMetadata: a JSON object, else ``k=v,k=v``."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    except ValueError:
        pass
    result: dict[str, str] = {}
    for item in text.split(","):
        kv = item.split("=")
        if len(kv) != 2:
            raise _BadParam("metadata format incorrect:" + text)
        result[kv[0]] = kv[1]
    return result


def _instance_from(params: Mapping[str, str]) -> _Instance:
    """HttpRequestInstanceBuilder: ip, port required; weight 0..10000; clusterName (or cluster) DEFAULT;
    ``enabled`` (or ``enable``), ``healthy`` and ``ephemeral`` (SwitchDomain.defaultInstanceEphemeral) true."""
    ip = _required(params, "ip")
    port = _int(_required(params, "port"), "port")
    try:
        weight = float(params.get("weight") or "1")
    except ValueError:
        raise _BadParam(f"For input string: \"{params.get('weight')}\"") from None
    if not 0.0 <= weight <= 10000.0:
        raise _BadParam("instance format invalid: The weights range from 0.0 to 10000.0")
    cluster = params.get("clusterName") or params.get("cluster") or DEFAULT_CLUSTER
    enabled = _boolean(params, "enabled", _boolean(params, "enable", True))
    return _Instance(ip, port, cluster, weight, enabled, _boolean(params, "healthy", True),
                     _boolean(params, "ephemeral", True), _metadata(params.get("metadata", "")), 0.0)


def _ms(metadata: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(metadata[key])
    except (KeyError, ValueError):
        return default
