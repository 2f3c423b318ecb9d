"""Benchmarks P7, W1, H1 (see BENCHMARKS.md): config watch latency and robustness, heartbeats across rotations.

    python benchmarks/watch.py            # full run (about 3 minutes)
    python benchmarks/watch.py --quick    # fewer rounds, a 1 s beat interval

P7  publish -> callback latency over loopback, p50/p99, without and with a key rotation just before the publish:
    our sync and async clients, and nacos-sdk-python 2.0.11's add_config_watcher on the same mock server. The
    publish is the server's own state change (``set_config``, which wakes held polls as a publish does), so every
    watcher is timed against the same event and no publisher's login is counted.
W1  200 publishes (each awaited) with random key rotations and bursts of 503 answers to the long poll in between:
    changes missed and changes delivered twice.
H1  heartbeats across 20 key rotations (real time, the server's clientBeatInterval): the longest gap between
    accepted beats, and how often the instance turned unhealthy (15 s without a beat).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacos_token_client import (
    AsyncNacosTokenClient,
    ConfigChange,
    MemoryTokenStore,
    NacosTokenClient,
)
from nacos_token_client.testing import MockNacosServer


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def summary(latencies: list[float], missed: int) -> dict[str, Any]:
    ms = [v * 1000 for v in latencies]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else None, "missed": missed}


class Arrivals:
    """Callback arrival times by content."""

    __name__ = "arrivals"  # the official client logs its callbacks by name

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.order: list[str | None] = []
        self.cond = threading.Condition()

    def __call__(self, change: Any) -> None:
        content = change.content if isinstance(change, ConfigChange) else change.get("content")
        with self.cond:
            self.order.append(content)
            if content is not None:
                self.at.setdefault(content, time.perf_counter())
            self.cond.notify_all()

    def wait(self, content: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: content in self.at, timeout)
            return self.at.get(content)


def rounds_of(server: MockNacosServer, arrivals: Arrivals, n: int, rotate: bool, tag: str,
              timeout: float = 10.0) -> dict[str, Any]:
    latencies: list[float] = []
    missed = 0
    for i in range(n):
        time.sleep(0.02)  # let the watcher settle into its next held poll
        if rotate:
            server.rotate_secret()
        content = f"{tag}-{i}"
        started = time.perf_counter()
        server.set_config("p7.yaml", content)
        arrived = arrivals.wait(content, timeout)
        if arrived is None:
            missed += 1
        else:
            latencies.append(arrived - started)
    return summary(latencies, missed)


def p7_sync(n: int) -> dict[str, Any]:
    server = MockNacosServer()
    server.set_config("p7.yaml", "start")
    out: dict[str, Any] = {}
    with server.run() as url, NacosTokenClient(url, "nacos", "nacos", store=MemoryTokenStore()) as client:
        arrivals = Arrivals()
        client.add_config_listener("p7.yaml", arrivals)
        out["plain"] = rounds_of(server, arrivals, n, False, "s")
        out["rotation"] = rounds_of(server, arrivals, n, True, "sr")
    return out


def p7_async(n: int) -> dict[str, Any]:
    server = MockNacosServer()
    server.set_config("p7.yaml", "start")
    out: dict[str, Any] = {}

    async def main(url: str) -> None:
        async with AsyncNacosTokenClient(url, "nacos", "nacos", store=MemoryTokenStore()) as client:
            arrivals = Arrivals()
            await client.add_config_listener("p7.yaml", arrivals)
            out["plain"] = await asyncio.to_thread(rounds_of, server, arrivals, n, False, "a")
            out["rotation"] = await asyncio.to_thread(rounds_of, server, arrivals, n, True, "ar")

    with server.run() as url:
        asyncio.run(main(url))
    return out


def p7_official(n: int, rotation_rounds: int) -> dict[str, Any] | str:
    try:
        import nacos
    except ImportError:
        return "nacos-sdk-python is not installed"
    logging.getLogger("nacos").setLevel(logging.CRITICAL)
    out: dict[str, Any] = {}
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            server = MockNacosServer()
            server.set_config("p7.yaml", "start")
            with server.run() as url:
                client = nacos.NacosClient(url.removeprefix("http://"), username="nacos", password="nacos",
                                           logDir=tmp)
                client.no_snapshot = True
                arrivals = Arrivals()
                client.add_config_watcher("p7.yaml", "DEFAULT_GROUP", arrivals)
                time.sleep(2.0)  # its puller thread settles into a held poll
                out["plain"] = rounds_of(server, arrivals, n, False, "o")
                out["rotation"] = rounds_of(server, arrivals, rotation_rounds, True, "or", timeout=10.0)
                client.remove_config_watcher("p7.yaml", "DEFAULT_GROUP", arrivals, remove_all=True)
        finally:
            os.chdir(old_cwd)
    return out


class Faults(httpx.BaseTransport):
    """503 to the next ``burst`` long polls."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.burst = 0
        self.refused = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if self.burst and request.url.path.endswith("/listener"):
                self.burst -= 1
                self.refused += 1
                return httpx.Response(503, text="server is DOWN now, please try again later!", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def w1(n: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    server = MockNacosServer()
    server.set_config("w1.yaml", "start")
    faults = Faults()
    rotations = bursts = 0
    published: list[str] = []
    with server.run() as url, NacosTokenClient(url, "nacos", "nacos", store=MemoryTokenStore(),
                                               transport=faults) as client:
        arrivals = Arrivals()
        client.add_config_listener("w1.yaml", arrivals)
        started = time.perf_counter()
        for i in range(n):
            if rng.random() < 0.25:
                server.rotate_secret()
                rotations += 1
            if rng.random() < 0.2:
                with faults.lock:
                    faults.burst = rng.randint(1, 5)
                bursts += 1
            content = f"w1-{i}"
            published.append(content)
            server.set_config("w1.yaml", content)
            arrivals.wait(content, 15.0)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # anything late or doubled would show up here
    delivered = [c for c in arrivals.order if c is not None]
    return {"publishes": n, "rotations": rotations, "bursts": bursts, "refused_polls": faults.refused,
            "missed": len(set(published) - set(delivered)), "twice": len(delivered) - len(set(delivered)),
            "out_of_order": delivered != [c for c in published if c in set(delivered)],
            "seconds": round(elapsed, 1), "logins": client.auth.stats.logins}


def h1(rotations: int, interval: float) -> dict[str, Any]:
    server = MockNacosServer()  # real wall clock: the registry's 15 s / 30 s apply as on a real server
    server.naming.client_beat_interval = interval
    with server.run() as url, NacosTokenClient(url, "nacos", "nacos", store=MemoryTokenStore()) as client:
        client.register_instance("h1", "10.9.0.1", 8080)
        time.sleep(interval * 1.5)
        for _ in range(rotations):
            server.rotate_secret()
            time.sleep(interval * 0.53)  # rotations land at every phase of the beat cycle
        time.sleep(interval * 1.2)
        healthy = [i.healthy for i in client.list_instances("h1")]
        replays = client.auth.stats.replays
    times = [b.at for b in server.naming.beats]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {"interval_s": interval, "rotations": rotations, "beats": len(times),
            "longest_gap_s": round(max(gaps), 3), "median_gap_s": round(statistics.median(gaps), 3),
            "unhealthy_transitions": server.naming.unhealthy_transitions, "healthy_at_end": healthy,
            "replays": replays}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    n = 30 if args.quick else 200
    results: dict[str, Any] = {}
    results["p7_sync"] = p7_sync(n)
    print("P7 sync ", json.dumps(results["p7_sync"]), flush=True)
    results["p7_async"] = p7_async(n)
    print("P7 async", json.dumps(results["p7_async"]), flush=True)
    results["p7_official"] = p7_official(min(n, 50), 3)  # about 1 s a round: 50 are plenty
    print("P7 nacos-sdk-python 2.0.11", json.dumps(results["p7_official"]), flush=True)
    results["w1"] = w1(200)
    print("W1", json.dumps(results["w1"]), flush=True)
    results["h1"] = h1(20, 1.0 if args.quick else 5.0)
    print("H1", json.dumps(results["h1"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
