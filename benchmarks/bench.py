"""Benchmarks P1-P4 (see BENCHMARKS.md). Every figure is compared with a baseline measured in the same run.

    python benchmarks/bench.py            # full run (about a minute)
    python benchmarks/bench.py --quick    # fewer rounds, for a smoke test

P1  requests/s with NacosTokenAuth ÷ a static-header httpx.Auth, same in-process transport, interleaved rounds,
    median ratio (two transports: the mock server, and a bare 200 answer that exposes every microsecond).
P2  logins when 1,000 asyncio tasks and 64 threads meet an expired token (and: the official Python client's
    logins when 64 threads start at once).
P3  the slowest request while a 300 ms login refreshes in the advisory window, against the baseline p99.
P4  failed requests across a server key rotation (ours and the official Python client's).
P5  logins per refresh cycle for 16 processes with the memory, file and Redis stores, and what a shared store
    adds to the hot path.
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


# -- P5: shared stores ------------------------------------------------------------------------------------------

def _p5_member(url: str, make_store: Callable[[], Any], barrier: Any, seconds: float, results: Any) -> None:
    auth = NacosTokenAuth(url, "nacos", "nacos", store=make_store())
    failed = 0
    with httpx.Client(auth=auth) as client:
        barrier.wait()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            if client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code != 200:
                failed += 1
            time.sleep(0.05)
    results.put(failed)


def p5_cycle(make_store: Callable[[], Any], processes: int, token_ttl: int) -> dict[str, int]:
    """16 processes start together and keep sending requests past the advisory point of a short token."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    server = MockNacosServer(token_ttl=token_ttl)
    server.set_config("bench.yaml", "x: 1")
    server.login_delay = 0.05
    with server.run() as url:
        barrier = fork.Barrier(processes + 1)
        results = fork.Queue()
        seconds = token_ttl * 0.97 + 0.5  # past every jittered refresh point (90-93 %), before the next cycle
        members = [fork.Process(target=_p5_member, args=(url, make_store, barrier, seconds, results))
                   for _ in range(processes)]
        for m in members:
            m.start()
        barrier.wait(60)
        time.sleep(token_ttl * 0.5)
        first_cycle = server.stats.logins
        failed = sum(results.get(timeout=120) for _ in members)
        for m in members:
            m.join(30)
        return {"start_logins": first_cycle, "refresh_cycle_logins": server.stats.logins - first_cycle,
                "failed_requests": failed}


def p5_hot_path(rounds: int, per_round: int, stores: dict[str, Any]) -> dict[str, Any]:
    """Requests/s with a shared store ÷ with the memory store (interleaved rounds), and one store read's cost."""
    server = MockNacosServer()
    server.set_config("bench.yaml", "x: 1")
    out: dict[str, Any] = {}
    memory_auth = NacosTokenAuth(ADDRESS, "nacos", "nacos", store=MemoryTokenStore(), transport=server.transport())
    for name, store in stores.items():
        auth = NacosTokenAuth(ADDRESS, "nacos", "nacos", store=store, transport=server.transport())
        ratios = []
        with httpx.Client(auth=auth, transport=server.transport()) as shared, \
                httpx.Client(auth=memory_auth, transport=server.transport()) as memory:
            for client in (shared, memory):
                for _ in range(200):
                    client.get(URL, params=PARAMS)
            for r in range(rounds):
                cpu = {}
                order = [("shared", shared), ("memory", memory)] if r % 2 else [("memory", memory),
                                                                                ("shared", shared)]
                for label, client in order:
                    started = time.process_time()
                    for _ in range(per_round):
                        client.get(URL, params=PARAMS)
                    cpu[label] = per_round / max(time.process_time() - started, 1e-9)
                ratios.append(cpu["shared"] / cpu["memory"])
        key = auth.identity_key
        reads = []
        for _ in range(300):
            started = time.perf_counter()
            store.get(key)
            reads.append(time.perf_counter() - started)
        out[name] = {"ratio_vs_memory_cpu": statistics.median(ratios), "store_read_us": statistics.median(reads) * 1e6}
    return out


def p5(quick: bool) -> dict[str, Any]:
    import shutil
    import subprocess

    from nacos_token_client import FileTokenStore, RedisTokenStore

    results: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="nacos-bench-")
    path = os.path.join(tmp, "tokens.json")
    redis_process = None
    redis_url = None
    executable = shutil.which("redis-server")
    if executable:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        redis_process = subprocess.Popen([executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", tmp],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        ttl = 6 if quick else 10
        makers: dict[str, Callable[[], Any]] = {"memory": MemoryTokenStore, "file": lambda: FileTokenStore(path)}
        if redis_url:
            prefix = f"bench:{time.time_ns()}:"  # one prefix for the whole fleet: computed here, not in each child
            makers["redis"] = lambda: RedisTokenStore(redis_url, prefix=prefix)
        for name, make in makers.items():
            if name == "file" and os.path.exists(path):
                os.unlink(path)
            results[name] = p5_cycle(make, 16, ttl)
        stores: dict[str, Any] = {"file": FileTokenStore(os.path.join(tmp, "hot.json"))}
        if redis_url:
            stores["redis"] = RedisTokenStore(redis_url, prefix="bench-hot:")
        results["hot_path"] = p5_hot_path(8 if quick else 21, 500 if quick else 1000, stores)
    finally:
        if redis_process is not None:
            redis_process.kill()
            redis_process.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


# -- M1: the mock server's own throughput ------------------------------------------------------------------------

def _m1_client(url: str, token: str, seconds: float, barrier: Any, results: Any) -> None:
    """A raw keep-alive socket client: pre-encoded requests, so the figure measures the server, not httpx."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /nacos/v1/cs/configs?dataId=bench.yaml&group=DEFAULT_GROUP HTTP/1.1\r\nHost: {host}\r\n"
               f"accessToken: {token}\r\n\r\n").encode()
    count = 0
    with socket.create_connection((host, int(port))) as sock:
        reader = sock.makefile("rb")
        barrier.wait()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            sock.sendall(request)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            if b" 200 " in status:
                count += 1
    results.put(count)


def m1(processes: int, seconds: float) -> dict[str, Any]:
    """Authenticated config reads per second served over loopback; raw-socket clients in separate processes."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    server = MockNacosServer()
    server.set_config("bench.yaml", "x: 1")
    with server.run() as url:
        token = server.issue_token()
        barrier = fork.Barrier(processes)
        results = fork.Queue()
        clients = [fork.Process(target=_m1_client, args=(url, token, seconds, barrier, results))
                   for _ in range(processes)]
        for c in clients:
            c.start()
        total = sum(results.get(timeout=60) for _ in clients)
        for c in clients:
            c.join(30)
    return {"requests_per_second": total / seconds, "client_processes": processes, "seconds": seconds}


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
    results["P5"] = p5(args.quick)
    for name in ("memory", "file", "redis"):
        if name in results["P5"]:
            r5 = results["P5"][name]
            print(f"P5 [{name}] 16 processes: logins at start {r5['start_logins']}, in one refresh cycle "
                  f"{r5['refresh_cycle_logins']} ({r5['failed_requests']} failed requests)", flush=True)
    for name, r5 in results["P5"]["hot_path"].items():
        print(f"P5 [{name}] hot path requests/s vs memory store: {r5['ratio_vs_memory_cpu']:.3f} (CPU); one store "
              f"read: {r5['store_read_us']:.0f} us (only when the token is missing, rejected, due, or once a "
              f"second in the background)", flush=True)
    results["M1"] = m1(2, 2.0 if args.quick else 5.0)
    print(f"M1 mock server over loopback: {results['M1']['requests_per_second']:.0f} authenticated config reads/s "
          f"({results['M1']['client_processes']} client processes)", flush=True)
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
