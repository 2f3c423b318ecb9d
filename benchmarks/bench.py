"""Benchmarks P1-P4 (see BENCHMARKS.md). Every figure is compared with a baseline measured in the same run.

    python benchmarks/bench.py            # full run (about a minute)
    python benchmarks/bench.py --quick    # fewer rounds, for a smoke test

P1  requests/s with NacosTokenAuth ÷ a static-header httpx.Auth, same in-process transport, interleaved rounds,
    median ratio (two transports: the mock server, and a bare 200 answer that exposes every microsecond).
P2  logins when 1,000 asyncio tasks and 64 threads meet an expired token (and: the official Python client's
    logins when 64 threads start at once).
P3  the slowest request while a 300 ms login refreshes in the advisory window, against the baseline p99.
P4  failed requests across a server key rotation (ours and the official Python client's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

from nacos_token_client import MemoryTokenStore, NacosTokenAuth
from nacos_token_client.testing import MockNacosServer

PARAMS = {"dataId": "bench.yaml", "group": "DEFAULT_GROUP"}
ADDRESS = "http://nacos.bench:8848"
URL = ADDRESS + "/nacos/v1/cs/configs"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class StaticAuth(httpx.Auth):
    """The baseline: a token in a header, nothing else."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["accessToken"] = self.token
        yield request


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, httpx {httpx.__version__}, "
            f"{platform.system()} {platform.release()}")


# -- P1 ------------------------------------------------------------------------------------------------------------

def p1(rounds: int, per_round: int) -> dict[str, Any]:
    server = MockNacosServer()
    server.set_config("bench.yaml", "x: 1")
    results: dict[str, Any] = {}
    bare = httpx.MockTransport(lambda request: httpx.Response(200, text="x: 1"))
    for name, transport in (("mock server", server.transport()), ("bare 200", bare)):
        auth = NacosTokenAuth(ADDRESS, "nacos", "nacos", store=MemoryTokenStore(), transport=server.transport())
        static = StaticAuth(auth.get_token())
        wall_ratios, cpu_ratios, overheads, base_costs = [], [], [], []
        with httpx.Client(auth=auth, transport=transport) as ours, \
                httpx.Client(auth=static, transport=transport) as base:
            for client in (ours, base):  # warm up
                for _ in range(300):
                    client.get(URL, params=PARAMS)
            for r in range(rounds):
                wall, cpu = {}, {}
                order = [("ours", ours), ("base", base)] if r % 2 == 0 else [("base", base), ("ours", ours)]
                for label, client in order:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    for _ in range(per_round):
                        client.get(URL, params=PARAMS)
                    wall[label] = per_round / (time.perf_counter() - started)
                    cpu[label] = per_round / max(time.process_time() - started_cpu, 1e-9)
                wall_ratios.append(wall["ours"] / wall["base"])
                cpu_ratios.append(cpu["ours"] / cpu["base"])
                overheads.append((1 / cpu["ours"] - 1 / cpu["base"]) * 1e6)
                base_costs.append(1e6 / cpu["base"])
        results[name] = {"median_ratio_cpu": statistics.median(cpu_ratios),
                         "median_ratio_wall": statistics.median(wall_ratios),
                         "wall_ratio_range": [min(wall_ratios), max(wall_ratios)], "rounds": rounds,
                         "requests_per_round": per_round, "logins": auth.stats.logins,
                         "overhead_us_median": statistics.median(overheads),
                         "baseline_request_us_median": statistics.median(base_costs)}
    return results


# -- P2 ------------------------------------------------------------------------------------------------------------

def p2(threads: int, tasks: int) -> dict[str, Any]:
    clock = FakeClock()
    server = MockNacosServer(clock=clock)
    server.set_config("bench.yaml", "x: 1")
    server.login_delay = 0.05
    auth = NacosTokenAuth(ADDRESS, "nacos", "nacos", store=MemoryTokenStore(), transport=server.transport(),
                          clock=clock)
    auth.get_token()
    info = auth.token_info()
    assert info is not None
    clock.now = info.expires_at + 1  # everybody meets an expired token at once
    server.reset_stats()
    barrier = threading.Barrier(threads + 1)
    codes: list[int] = []
    lock = threading.Lock()

    def sync_worker() -> None:
        with httpx.Client(auth=auth, transport=server.transport()) as client:
            barrier.wait()
            code = client.get(URL, params=PARAMS).status_code
        with lock:
            codes.append(code)

    async def async_herd() -> None:
        async with httpx.AsyncClient(auth=auth, transport=server.transport()) as client:
            await asyncio.to_thread(barrier.wait)
            responses = await asyncio.gather(*(client.get(URL, params=PARAMS) for _ in range(tasks)))
        with lock:
            codes.extend(r.status_code for r in responses)

    workers = [threading.Thread(target=sync_worker) for _ in range(threads)]
    workers.append(threading.Thread(target=lambda: asyncio.run(async_herd())))
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    return {"logins": server.stats.logins, "requests": len(codes), "ok": codes.count(200),
            "threads": threads, "tasks": tasks}


# -- P3 ------------------------------------------------------------------------------------------------------------

def p3(window: float, threads: int, repeats: int) -> dict[str, Any]:
    """Windows of the same length and load, with and without a 300 ms background login in them."""
    clock = FakeClock()
    server = MockNacosServer(clock=clock)
    server.set_config("bench.yaml", "x: 1")
    auth = NacosTokenAuth(ADDRESS, "nacos", "nacos", store=MemoryTokenStore(), transport=server.transport(),
                          clock=clock)

    def window_of_requests(client: httpx.Client) -> list[float]:
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.perf_counter() + window

        def worker() -> None:
            mine = []
            while time.perf_counter() < stop:
                started = time.perf_counter()
                assert client.get(URL, params=PARAMS).status_code == 200
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return latencies

    quiet: list[float] = []
    refreshing: list[float] = []
    refreshes = 0
    with httpx.Client(auth=auth, transport=server.transport()) as client:
        for _ in range(100):  # warm-up, includes the first login
            client.get(URL, params=PARAMS)
        server.login_delay = 0.3
        for _ in range(repeats):
            quiet += window_of_requests(client)  # fresh zone: no login anywhere
            info = auth.token_info()
            assert info is not None
            before = server.stats.logins
            clock.now = info.refresh_at + 1  # advisory zone: the next request starts a 300 ms background login
            refreshing += window_of_requests(client)
            refreshes += server.stats.logins - before
            clock.now = time.time() + 1.0 if clock.now < time.time() else clock.now  # keep time moving forward

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return {"quiet_p99_ms": p(quiet, 0.99), "quiet_max_ms": max(quiet) * 1000,
            "refresh_p99_ms": p(refreshing, 0.99), "refresh_max_ms": max(refreshing) * 1000,
            "requests_per_window": len(refreshing) // repeats, "windows": repeats, "refreshes": refreshes,
            "slower_than_the_login": sum(1 for d in refreshing if d >= 0.3), "login_ms": 300, "threads": threads}


# -- P4 ------------------------------------------------------------------------------------------------------------

def run_during_rotation(server: MockNacosServer, request: Callable[[], bool], threads: int,
                        seconds: float) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            success = request()
            with lock:
                counts["ok" if success else "failed"] += 1

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds / 3)
    server.rotate_secret()
    for w in workers:
        w.join()
    return counts


def p4(threads: int, seconds: float) -> dict[str, Any]:
    server = MockNacosServer()
    server.set_config("bench.yaml", "x: 1")
    with server.run() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore())
        with httpx.Client(auth=auth) as client:
            def request() -> bool:
                try:
                    return client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code == 200
                except httpx.HTTPError:
                    return False

            counts = run_during_rotation(server, request, threads, seconds)
        return {**counts, "logins": server.stats.logins, "threads": threads, "seconds": seconds}


# -- the official Python client (nacos-sdk-python 2.0.x, HTTP) on the same mock ----------------------------------------

def official(threads: int, seconds: float) -> dict[str, Any] | str:
    try:
        import nacos
    except ImportError:
        return "nacos-sdk-python is not installed"
    logging.getLogger("nacos").setLevel(logging.CRITICAL)
    results: dict[str, Any] = {}
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # it writes snapshots and failover files below the working directory
        try:
            # It logs in inside its constructor and treats a token as expired 10 s before tokenTtl says: with a
            # 12 s token (tokenTtl 11) its token is "expired" one second later, when the herd starts.
            server = MockNacosServer(token_ttl=12)
            server.set_config("bench.yaml", "x: 1")
            server.login_delay = 0.05
            with server.run() as url:
                address = url.removeprefix("http://")
                client = nacos.NacosClient(address, username="nacos", password="nacos", logDir=tmp)
                client.no_snapshot = True
                time.sleep(1.2)
                server.reset_stats()
                barrier = threading.Barrier(threads)

                def start_together() -> None:
                    barrier.wait()
                    client.get_config("bench.yaml", "DEFAULT_GROUP")

                workers = [threading.Thread(target=start_together) for _ in range(threads)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(60)
                results["p2_logins_64_threads_expired"] = server.stats.logins
            server = MockNacosServer()  # P4: a normal 5-hour token, then a key rotation
            server.set_config("bench.yaml", "x: 1")
            with server.run() as url:
                client = nacos.NacosClient(url.removeprefix("http://"), username="nacos", password="nacos",
                                           logDir=tmp)
                client.no_snapshot = True

                def request() -> bool:
                    try:
                        return bool(client.get_config("bench.yaml", "DEFAULT_GROUP") == "x: 1")
                    except Exception:
                        return False

                server.reset_stats()
                results["p4"] = run_during_rotation(server, request, threads=8, seconds=seconds)
                results["p4"]["logins"] = server.stats.logins
        finally:
            os.chdir(old_cwd)
    return results


def ours_absent_start(threads: int) -> int:
    server = MockNacosServer()
    server.set_config("bench.yaml", "x: 1")
    server.login_delay = 0.05
    with server.run() as url:
        auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore())
        barrier = threading.Barrier(threads)

        def start_together() -> None:
            with httpx.Client(auth=auth) as client:
                barrier.wait()
                client.get(url + "/nacos/v1/cs/configs", params=PARAMS)

        workers = [threading.Thread(target=start_together) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        return server.stats.logins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    logging.getLogger("nacos_token_client").setLevel(logging.ERROR)
    rounds, per_round = (8, 500) if args.quick else (41, 1000)
    results: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    print(f"machine: {results['machine']}", flush=True)
    results["P1"] = p1(rounds, per_round)
    for name, r in results["P1"].items():
        low, high = r["wall_ratio_range"]
        print(f"P1 [{name}] median ratio: CPU time {r['median_ratio_cpu']:.3f}, "
              f"wall clock {r['median_ratio_wall']:.3f} "
              f"(wall rounds {low:.3f}-{high:.3f}; {r['rounds']} rounds x {r['requests_per_round']} requests); "
              f"added CPU per request {r['overhead_us_median']:.1f} us on a {r['baseline_request_us_median']:.0f} us "
              f"baseline request",
              flush=True)
    results["P2"] = p2(64, 1000)
    print(f"P2 logins for {results['P2']['threads']} threads + {results['P2']['tasks']} tasks meeting an expired "
          f"token: {results['P2']['logins']} ({results['P2']['ok']}/{results['P2']['requests']} ok)", flush=True)
    results["P2_absent_start"] = ours_absent_start(64)
    print(f"P2' logins for 64 threads starting at once (loopback): {results['P2_absent_start']}", flush=True)
    results["P3"] = p3(0.6, 4, 3 if args.quick else 10)
    r3 = results["P3"]
    print(f"P3 windows with a 300 ms background login: p99 {r3['refresh_p99_ms']:.2f} ms, max "
          f"{r3['refresh_max_ms']:.1f} ms; same windows without: p99 {r3['quiet_p99_ms']:.2f} ms, max "
          f"{r3['quiet_max_ms']:.1f} ms ({r3['windows']} windows x ~{r3['requests_per_window']} requests, "
          f"{r3['threads']} threads; {r3['refreshes']} refreshes; requests slower than the login: "
          f"{r3['slower_than_the_login']})", flush=True)
    seconds = 1.5 if args.quick else 3.0
    results["P4"] = p4(8, seconds)
    print(f"P4 failed requests across a key rotation: {results['P4']['failed']} of "
          f"{results['P4']['failed'] + results['P4']['ok']} (logins {results['P4']['logins']})", flush=True)
    results["official_python"] = official(64, seconds)
    off = results["official_python"]
    if isinstance(off, dict):
        print(f"official nacos-sdk-python: P2 logins for 64 threads meeting an expired token: "
              f"{off['p2_logins_64_threads_expired']}; P4 failed {off['p4']['failed']} of "
              f"{off['p4']['failed'] + off['p4']['ok']} (logins {off['p4']['logins']})", flush=True)
    else:
        print(f"official nacos-sdk-python: skipped ({off})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
