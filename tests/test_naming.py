"""Naming: the mock's registry (as real Nacos answers, expiry on the injected clock) and the wrapper clients'
register / heartbeat / list / deregister, sync and async, through rotations, restarts and fail-over."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nacos_token_client import (
    AsyncNacosTokenClient,
    ConfigurationError,
    Instance,
    MemoryTokenStore,
    NacosTokenClient,
    RequestFailedError,
)
from nacos_token_client.testing import MockNacosServer

from .conftest import Harness
from .helpers import wait_until

# -- the mock registry, over raw HTTP ------------------------------------------------------------------------------


def raw(h: Harness) -> tuple[httpx.Client, dict[str, str]]:
    client = httpx.Client(transport=h.transport) if h.transport else httpx.Client()
    token = h.server.issue_token()
    return client, {"accessToken": token}


def test_mock_v1_register_beat_list_and_expiry(h: Harness) -> None:
    client, auth = raw(h)
    with client:
        form = {"serviceName": "svc", "ip": "10.0.0.1", "port": "8080", "metadata": "a=1,b=2", "weight": "2"}
        assert client.post(h.url("/v1/ns/instance"), data=form, headers=auth).text == "ok"
        listed = client.get(h.url("/v1/ns/instance/list"), params={"serviceName": "svc"}, headers=auth).json()
        assert listed["name"] == "DEFAULT_GROUP@@svc" and listed["groupName"] == "DEFAULT_GROUP"
        host = listed["hosts"][0]
        assert (host["ip"], host["port"], host["weight"], host["healthy"], host["metadata"]) == (
            "10.0.0.1", 8080, 2.0, True, {"a": "1", "b": "2"})
        assert host["instanceId"] == "10.0.0.1#8080#DEFAULT#DEFAULT_GROUP@@svc"
        beat = {"serviceName": "DEFAULT_GROUP@@svc", "ip": "10.0.0.1", "port": "8080"}
        answer = client.put(h.url("/v1/ns/instance/beat"), params=beat, headers=auth).json()
        assert answer == {"clientBeatInterval": 5000, "code": 10200, "lightBeatEnabled": True}
        h.clock.advance(15.5)  # no beat for > 15 s: unhealthy, still listed
        assert h.server.naming.instances("svc")[0]["healthy"] is False
        healthy = client.get(h.url("/v1/ns/instance/list"), params={"serviceName": "svc", "healthyOnly": "true"},
                             headers=auth).json()
        assert healthy["hosts"] == []
        client.put(h.url("/v1/ns/instance/beat"), params=beat, headers=auth)  # a beat heals it
        assert h.server.naming.instances("svc")[0]["healthy"] is True
        h.clock.advance(30.5)  # > 30 s: removed
        assert h.server.naming.instances("svc") == []
        assert h.server.naming.unhealthy_transitions == 1 and h.server.naming.expirations == 1
        lost = client.put(h.url("/v1/ns/instance/beat"), params=beat, headers=auth).json()
        assert lost["code"] == 20404  # a light beat for an unknown instance
        full = {**beat, "beat": json.dumps({"ip": "10.0.0.1", "port": 8080, "serviceName": "DEFAULT_GROUP@@svc",
                                            "cluster": "DEFAULT", "weight": 1.0})}
        assert client.put(h.url("/v1/ns/instance/beat"), params=full, headers=auth).json()["code"] == 10200
        assert len(h.server.naming.instances("svc")) == 1  # a full beat registers it again


def test_mock_v1_rules(h: Harness) -> None:
    client, auth = raw(h)
    with client:
        url = h.url("/v1/ns/instance")
        assert client.post(url, data={"serviceName": "svc", "ip": "1.1.1.1", "port": "1"}).status_code == 403
        missing = client.post(url, data={"serviceName": "svc", "port": "1"}, headers=auth)
        assert (missing.status_code, missing.text) == (400, "Param 'ip' is required.")
        heavy = client.post(url, data={"serviceName": "svc", "ip": "1.1.1.1", "port": "1", "weight": "10001"},
                            headers=auth)
        assert heavy.status_code == 400 and "weights range" in heavy.text
        short = {"serviceName": "svc", "ip": "1.1.1.1", "port": "1",
                 "metadata": json.dumps({"preserved.heart.beat.timeout": "1000"})}
        assert client.post(url, data=short, headers=auth).status_code == 400  # timeout < interval
        grouped = {"serviceName": "svc", "groupName": "G", "ip": "1.1.1.1", "port": "1", "enabled": "false"}
        assert client.post(url, data=grouped, headers=auth).text == "ok"
        listed = client.get(h.url("/v1/ns/instance/list"), params={"serviceName": "G@@svc"}, headers=auth).json()
        assert listed["hosts"] == []  # disabled instances are not listed
        assert h.server.naming.instances("svc", "G")[0]["enabled"] is False
        assert client.delete(url, params={"serviceName": "svc", "ip": "9.9.9.9", "port": "1"},
                             headers=auth).text == "ok"  # removing an unknown instance is fine
        persistent = {"serviceName": "db", "ip": "1.1.1.2", "port": "5432", "ephemeral": "false"}
        client.post(url, data=persistent, headers=auth)
        h.clock.advance(100)
        assert h.server.naming.instances("db")[0]["healthy"] is True  # no beats needed
        assert client.get(h.url("/v3/client/ns/instance/list"), params={"serviceName": "db"},
                          headers=auth).status_code == 404  # a 2.x server has no v3 client API


@pytest.mark.parametrize("server_options", [{"nacos_version": 3}])
def test_mock_v3_client_api(h: Harness) -> None:
    client, auth = raw(h)
    with client:
        url = h.url("/v3/client/ns/instance")
        form = {"serviceName": "svc", "groupName": "G", "ip": "10.0.0.3", "port": "80"}
        assert client.post(url, data=form, headers=auth).json() == {"code": 0, "message": "success", "data": "ok"}
        beat = client.post(url, data={**form, "heartBeat": "true"}, headers=auth).json()
        assert beat["code"] == 0
        listed = client.get(url + "/list", params={"serviceName": "svc", "groupName": "G"}, headers=auth).json()
        assert [i["ip"] for i in listed["data"]] == ["10.0.0.3"]
        client.delete(url, params=form, headers=auth)
        lost = client.post(url, data={**form, "heartBeat": "true"}, headers=auth).json()
        assert lost == {"code": 21003, "message": "instance not found", "data": None}
        missing = client.post(url, data={"serviceName": "svc"}, headers=auth)
        assert missing.status_code == 400 and missing.json()["code"] == 10000


# -- the wrapper clients -------------------------------------------------------------------------------------------


def fast(server: MockNacosServer, interval: float = 0.05) -> None:
    server.naming.client_beat_interval = interval


def sync_client(h: Harness, **options: Any) -> NacosTokenClient:
    options.setdefault("transport", h.transport)
    return NacosTokenClient(h.address, "nacos", "nacos", store=h.store, clock=h.clock, login_backoff=(0.01, 0.05),
                            heartbeat_backoff=(0.01, 0.05), **options)


def test_register_beat_list_deregister(h: Harness) -> None:
    fast(h.server)
    with sync_client(h) as client:
        registration = client.register_instance("svc", "10.0.0.1", 8080, weight=3.0, metadata={"zone": "a"},
                                                cluster_name="C1")
        assert registration.active and "svc" in repr(registration)
        assert wait_until(lambda: len(h.server.naming.beats) >= 3)
        assert registration.interval == 0.05  # the server's clientBeatInterval
        h.clock.advance(20)  # past 15 s on the server's clock, but beats keep coming
        assert wait_until(lambda: h.server.naming.beats[-1].at == h.clock())
        [instance] = client.list_instances("svc", healthy_only=True)
        assert instance == Instance("10.0.0.1", 8080, 3.0, True, True, True, "C1", "svc", {"zone": "a"})
        registration.deregister()
        assert not registration.active
        beats = len(h.server.naming.beats)
        assert client.list_instances("svc") == []
        assert len(h.server.naming.beats) == beats  # no beat after the deregistration
        persistent = client.register_instance("db", "10.0.0.2", 5432, ephemeral=False)
        assert not persistent.active and client.list_instances("db")[0].ephemeral is False
        client.deregister_instance("db", "10.0.0.2", 5432)  # as an ephemeral one: not the same instance
        assert len(client.list_instances("db")) == 1
        persistent.deregister()
        assert client.list_instances("db") == []
        with pytest.raises(ConfigurationError):
            client.register_instance("svc", "10.0.0.1", 0)


def test_an_instance_the_server_lost_is_registered_again(h: Harness) -> None:
    fast(h.server)
    with sync_client(h) as client:
        client.register_instance("svc", "10.0.0.1", 8080, metadata={"v": "1"})
        assert wait_until(lambda: len(h.server.naming.beats) >= 2)  # light beats from now on
        h.server.naming.deregister("public", "DEFAULT_GROUP@@svc", "10.0.0.1", 8080, True)
        assert wait_until(lambda: h.server.naming.instances("svc") != [])
        assert h.server.naming.instances("svc")[0]["metadata"] == {"v": "1"}
        # The server holds the instance as soon as the register request arrives; the heartbeat thread counts the
        # re-registration only once it has read the answer: wait for that too.
        assert wait_until(lambda: client._registrations[0].reregistrations >= 1)


def test_close_stops_heartbeats_and_the_server_expires_the_instance(h: Harness) -> None:
    fast(h.server)
    client = sync_client(h)
    client.register_instance("svc", "10.0.0.1", 8080)
    assert wait_until(lambda: len(h.server.naming.beats) >= 2)
    client.close()
    beats = len(h.server.naming.beats)
    h.clock.advance(31)
    assert h.server.naming.instances("svc") == [] and len(h.server.naming.beats) == beats


def test_heartbeats_survive_rotations_without_turning_unhealthy() -> None:
    """Real time: beats every 0.1 s, unhealthy after 1 s of silence (Nacos's 5 s / 15 s, scaled), 20 rotations.
    (A 10 s token: a rotation more than 1 % of its life after a login is a rotation, not a rejection storm.)"""
    server = MockNacosServer(token_ttl=10)
    fast(server, 0.1)
    server.naming.heart_beat_timeout = 1.0
    with server.run() as url, NacosTokenClient(url, "nacos", "nacos", store=MemoryTokenStore(),
                                               login_backoff=(0.01, 0.05), heartbeat_backoff=(0.01, 0.05)) as client:
        client.register_instance("svc", "10.0.0.1", 8080)
        for _ in range(20):
            before = len(server.naming.beats)
            assert wait_until(lambda before=before: len(server.naming.beats) >= before + 2)  # type: ignore[misc]
            before = len(server.naming.beats)
            server.rotate_secret()
            assert wait_until(lambda before=before: len(server.naming.beats) > before)  # type: ignore[misc]
        assert server.naming.unhealthy_transitions == 0
        assert server.naming.last_beat_gap("10.0.0.1", 8080) < 0.6
        assert client.list_instances("svc", healthy_only=True) != []
        assert client.auth.stats.replays >= 20


@pytest.fixture
def cluster() -> Iterator[tuple[MockNacosServer, MockNacosServer]]:
    key = MockNacosServer().secret_key
    servers = (MockNacosServer(secret_key=key, clock=time.time), MockNacosServer(secret_key=key, clock=time.time))
    for server in servers:
        fast(server)
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_heartbeats_survive_restart_and_fail_over(cluster: tuple[MockNacosServer, MockNacosServer]) -> None:
    first, second = cluster
    port = int(first.url.rsplit(":", 1)[1])
    with NacosTokenClient([first.url, second.url], "nacos", "nacos", store=MemoryTokenStore(),
                          login_backoff=(0.01, 0.05), heartbeat_backoff=(0.01, 0.05)) as client:
        client.register_instance("svc", "10.0.0.1", 8080)
        assert wait_until(lambda: len(first.naming.beats) >= 2)
        first.stop()  # fail-over: beats go to the second server, which learns the instance
        assert wait_until(lambda: second.naming.instances("svc") != [])
        first.start(port=port)
        second.stop()  # and back to the restarted first one, which still knows it
        before = len(first.naming.beats)
        assert wait_until(lambda: len(first.naming.beats) > before + 2)
        assert first.naming.instances("svc")[0]["healthy"] is True


async def test_async_register_beat_list_deregister(h: Harness) -> None:
    fast(h.server)
    async with AsyncNacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store,
                                     clock=h.clock, heartbeat_backoff=(0.01, 0.05)) as client:
        registration = await client.register_instance("svc", "10.0.0.5", 9000, group_name="G")
        for _ in range(3):
            before = len(h.server.naming.beats)
            h.server.rotate_secret()
            while len(h.server.naming.beats) <= before + 1:
                await asyncio.sleep(0.01)
        [instance] = await client.list_instances("svc", group_name="G")
        assert (instance.ip, instance.port, instance.healthy) == ("10.0.0.5", 9000, True)
        await registration.deregister()
        assert await client.list_instances("svc", group_name="G") == []
        with pytest.raises(RequestFailedError):
            await client.list_instances("")


@pytest.mark.parametrize("server_options", [{"nacos_version": 3}])
async def test_async_v3_client_api(h: Harness) -> None:
    fast(h.server)
    async with AsyncNacosTokenClient(h.address, "nacos", "nacos", transport=h.transport, store=h.store,
                                     clock=h.clock, api="v3") as client:
        registration = await client.register_instance("svc", "10.0.0.6", 9000,
                                                      metadata={"preserved.heart.beat.interval": "50"})
        assert registration.interval == 0.05  # a v3 beat answers no interval: the instance's own
        while len(h.server.naming.beats) < 2:
            await asyncio.sleep(0.01)
        h.server.naming.deregister("public", "DEFAULT_GROUP@@svc", "10.0.0.6", 9000, True)
        while not h.server.naming.instances("svc"):  # code 21003: registered again
            await asyncio.sleep(0.01)
        assert [i.ip for i in await client.list_instances("svc", healthy_only=True)] == ["10.0.0.6"]
        await registration.deregister()
