"""Benchmarks S1-S6 for issue #9 (scale). Every figure is measured for this checkout and for a baseline
checkout (``--baseline REV``, default the commit before the scale work) in the same run, interleaved.

    python benchmarks/scale.py                 # full run (about 8 minutes)
    python benchmarks/scale.py --quick         # smaller figures, for a smoke test (about 2 minutes)
    python benchmarks/scale.py --only S4,S5    # some measures only

S1  RSS growth for N identities (default HTTP settings, loopback server), each logged in once.
S2  open sockets to the server afterwards.
S3  CPU per async login (and per sync login), one event loop, sequential logins of distinct identities; the
    loop's first login (which builds the loop's shared client) is reported apart.
S4  building one identity (memory store).
S5  a herd of asyncio tasks meeting an expired token (300 ms login) ÷ the same herd with a fresh token.
S6  login attempts during a login outage: 16 processes sharing a file store ÷ one process.
S7  the hot path with all of it (sync and async): requests/s with NacosTokenAuth ÷ a static Bearer header, the same
    in-process mock transport, interleaved rounds; median ratio of process CPU time with a 95 % interval.

Each client-side measure runs in a fresh interpreter whose ``PYTHONPATH`` selects the implementation; the mock
server runs in a child process of this one (``chaos.ServerProcess``) so that it does not share a GIL with the
clients being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "92ec1fc"  # main before the scale work (issue #9)


# -- measures, run in a child interpreter ---------------------------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _sockets_to(port: int) -> int:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[9] in inodes and fields[3] == "01":
                count += 1
    return count


def child_identities(url: str, count: int) -> dict[str, Any]:
    """S1 + S2: ``count`` identities (one user, ``count`` namespaces), each logged in once over loopback."""
    import httpx

    from nacos_token_client import NacosTokenAuth

    gc.collect()
    before = _rss_kb()
    auths = [NacosTokenAuth(url, "nacos", "nacos", namespace=f"ns-{i}") for i in range(count)]
    for auth in auths:
        auth.get_token()
    gc.collect()
    after = _rss_kb()
    port = httpx.URL(url).port
    assert port is not None
    return {"identities": count, "rss_growth_mb": (after - before) / 1024,
            "kb_per_identity": (after - before) / count, "sockets": _sockets_to(port)}


def child_login_cpu(url: str, count: int) -> dict[str, Any]:
    """S3: CPU seconds per login, async (one loop) and sync, distinct identities, sequential."""
    from nacos_token_client import NacosTokenAuth

    async_auths = [NacosTokenAuth(url, "nacos", "nacos", namespace=f"cpu-a-{os.getpid()}-{i}") for i in range(count)]
    sync_auths = [NacosTokenAuth(url, "nacos", "nacos", namespace=f"cpu-s-{os.getpid()}-{i}") for i in range(count)]

    async def logins() -> tuple[float, float]:
        started = time.process_time()
        await async_auths[0].aget_token()  # the loop's first login (builds what the loop's logins share)
        first = time.process_time() - started
        started = time.process_time()
        for auth in async_auths[1:]:
            await auth.aget_token()
        return first, (time.process_time() - started) / (count - 1)

    async_first, async_cpu = asyncio.run(logins())
    sync_auths[0].get_token()
    started = time.process_time()
    for auth in sync_auths[1:]:
        auth.get_token()
    sync_cpu = (time.process_time() - started) / (count - 1)
    return {"async_ms": async_cpu * 1e3, "async_first_ms": async_first * 1e3, "sync_ms": sync_cpu * 1e3}


def child_identity_cost(count: int) -> dict[str, Any]:
    """S4: wall time to build one identity on the memory store (no login)."""
    from nacos_token_client import NacosTokenAuth
    from nacos_token_client.testing import MockNacosServer

    transport = MockNacosServer().transport()
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    started = time.perf_counter()
    auths = [NacosTokenAuth("http://nacos.bench:8848", f"user-{tag}-{i}", "pw", transport=transport)
             for i in range(count)]
    elapsed = time.perf_counter() - started
    assert len(auths) == count
    return {"ms_per_identity": elapsed / count * 1e3}


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def child_herd(tasks: int, rounds: int) -> dict[str, Any]:
    """S5: ``tasks`` concurrent requests meeting an expired token (the login takes 300 ms) ÷ the same herd with a
    fresh token, rounds interleaved (fresh, expired, fresh, expired ...) on one loop."""
    import httpx

    from nacos_token_client import MemoryTokenStore, NacosTokenAuth
    from nacos_token_client.testing import MockNacosServer

    clock = _Clock()
    server = MockNacosServer(clock=clock, token_ttl=18000)
    server.set_config("herd.yaml", "x: 1")
    transport = server.transport()
    auth = NacosTokenAuth("http://nacos.bench:8848", "nacos", "nacos", clock=clock, transport=transport,
                          store=MemoryTokenStore())
    params = {"dataId": "herd.yaml", "group": "DEFAULT_GROUP"}

    async def herd(client: httpx.AsyncClient) -> float:
        async def one() -> None:
            response = await client.get("http://nacos.bench:8848/nacos/v1/cs/configs", params=params)
            assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        return time.perf_counter() - started

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(auth=auth, transport=transport) as client:
            await herd(client)  # warm up; the token is fresh afterwards
            server.login_delay = 0.3
            fresh: list[float] = []
            expired: list[float] = []
            logins_before = server.stats.logins
            for _ in range(rounds):
                fresh.append(await herd(client))
                clock.now += 20_000  # past the token's expiry (and the server's)
                expired.append(await herd(client))
            logins = server.stats.logins - logins_before
        ratios = [e / f for f, e in zip(fresh, expired, strict=True)]
        return {"tasks": tasks, "fresh_s": statistics.median(fresh), "expired_s": statistics.median(expired),
                "ratios": ratios, "logins_per_expired_round": logins / rounds}

    return asyncio.run(run())


def child_fleet_member(url: str, store_path: str, seconds: float) -> dict[str, Any]:
    """S6 member: ask for a token every 100 ms for ``seconds`` through a file store shared with the others."""
    import logging

    from nacos_token_client import FileTokenStore, NacosTokenAuth, NacosTokenError

    logging.disable(logging.WARNING)
    auth = NacosTokenAuth(url, "nacos", "nacos", store=FileTokenStore(store_path), login_timeout=5.0)
    end = time.monotonic() + seconds
    failed = ok = 0
    while time.monotonic() < end:
        try:
            auth.get_token()
            ok += 1
        except NacosTokenError:
            failed += 1
        time.sleep(0.1)
    return {"ok": ok, "failed": failed}


CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "identities": child_identities, "login_cpu": child_login_cpu, "identity_cost": child_identity_cost,
            "herd": child_herd, "fleet_member": child_fleet_member}


# -- the orchestrator -------------------------------------------------------------------------------------------


def _impl_path(rev: str) -> Path:
    """A detached worktree of ``rev`` (kept under the temp dir between runs)."""
    path = Path(tempfile.gettempdir()) / f"nacos-token-baseline-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path


def run_child(impl: Path, name: str, *args: Any, timeout: float = 900) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(impl)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(list(args))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed on {impl}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def start_children(impl: Path, name: str, count: int, *args: Any) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(impl)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(list(args))]
    return [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(count)]


def _interval(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.3g} [{ordered[0]:.3g}-{ordered[-1]:.3g}]"


def s1_s2(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    from chaos import ServerProcess

    counts = {"new": 2_000 if quick else 10_000, "baseline": 300 if quick else 1_000}
    out: dict[str, Any] = {}
    server = ServerProcess(token_ttl=18_000)
    try:
        for label, impl in impls.items():
            out[label] = run_child(impl, "identities", server.url, counts["new" if label == "new" else "baseline"])
    finally:
        server.stop()
    for label, r in out.items():
        print(f"S1/S2 {label:8}: {r['identities']:>6} identities  RSS +{r['rss_growth_mb']:.1f} MB "
              f"({r['kb_per_identity']:.1f} KB each; 10,000 -> {r['kb_per_identity'] * 10_000 / 1024:.0f} MB)  "
              f"open sockets {r['sockets']}")
    return out


def s3(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    from chaos import ServerProcess

    rounds, count = (2, 50) if quick else (5, 200)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in impls}
    server = ServerProcess(token_ttl=18_000)
    try:
        for _ in range(rounds):
            for label, impl in impls.items():
                results[label].append(run_child(impl, "login_cpu", server.url, count))
    finally:
        server.stop()
    for label, rows in results.items():
        print(f"S3    {label:8}: CPU per async login {_interval([r['async_ms'] for r in rows])} ms "
              f"(the loop's first: {_interval([r['async_first_ms'] for r in rows])} ms), "
              f"per sync login {_interval([r['sync_ms'] for r in rows])} ms ({rounds} rounds x {count})")
    return results


def s4(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    results: dict[str, list[float]] = {label: [] for label in impls}
    for _ in range(rounds):
        for label, impl in impls.items():
            count = 2_000 if label == "new" else 300
            results[label].append(run_child(impl, "identity_cost", count)["ms_per_identity"])
    for label, rows in results.items():
        print(f"S4    {label:8}: building one identity {_interval(rows)} ms ({rounds} rounds)")
    return results


def s5(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    tasks, rounds, runs = (2_000, 3, 1) if quick else (10_000, 5, 5)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in impls}
    for _ in range(runs):
        for label, impl in impls.items():
            results[label].append(run_child(impl, "herd", tasks, rounds))
    for label, rows in results.items():
        ratios = [ratio for r in rows for ratio in r["ratios"]]
        fresh = [r["fresh_s"] for r in rows]
        expired = [r["expired_s"] for r in rows]
        logins = max(r["logins_per_expired_round"] for r in rows)
        median, low, high = _median_interval(ratios)
        print(f"S5    {label:8}: {tasks} tasks: expired ÷ fresh {median:.3f} (95 % interval {low:.3f}-{high:.3f}; "
              f"range {min(ratios):.3f}-{max(ratios):.3f}) "
              f"(fresh {_interval(fresh)} s, expired {_interval(expired)} s; {logins:g} login(s) per round; "
              f"{len(ratios)} paired rounds)")
    return results


def s6(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    from chaos import ServerProcess

    seconds = 15.0 if quick else 60.0
    results: dict[str, dict[str, Any]] = {}
    for label, impl in impls.items():
        results[label] = {}
        for processes in (1, 16):
            server = ServerProcess(token_ttl=18_000)
            try:
                server.set_down(True)
                with tempfile.TemporaryDirectory() as tmp:
                    members = start_children(impl, "fleet_member", processes, server.url,
                                             os.path.join(tmp, "tokens.json"), seconds)
                    for member in members:
                        member.wait(seconds + 120)
                    failures = [m for m in members if m.returncode != 0]
                    if failures:
                        raise RuntimeError(failures[0].stderr.read() if failures[0].stderr else "member failed")
                results[label][str(processes)] = server.stats()["login_attempts"]
            finally:
                server.stop()
        one, fleet = results[label]["1"], results[label]["16"]
        print(f"S6    {label:8}: login attempts in a {seconds:g} s outage: 1 process {one}, 16 processes {fleet} "
              f"-> ratio {fleet / max(one, 1):.2f}")
    return results


def _median_interval(values: list[float]) -> tuple[float, float, float]:
    """The median and a distribution-free 95 % interval for it (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    k = max(int(n / 2 - 0.98 * n ** 0.5), 0)
    return statistics.median(ordered), ordered[k], ordered[min(n - 1 - k, n - 1)]


def s7(impls: dict[str, Path], quick: bool) -> dict[str, Any]:
    """Run in this process on this checkout only: the baseline is a static header, in the same rounds."""
    import httpx

    from nacos_token_client import MemoryTokenStore, NacosTokenAuth
    from nacos_token_client.testing import MockNacosServer

    class StaticBearer(httpx.Auth):
        def __init__(self, token: str) -> None:
            self.token = token

        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {self.token}"
            yield request

    rounds, per_round = (9, 300) if quick else (41, 1000)
    server = MockNacosServer(token_ttl=18_000)
    server.set_config("bench.yaml", "x: 1")
    transport = server.transport()
    url, params = "http://nacos.bench:8848/nacos/v1/cs/configs", {"dataId": "bench.yaml", "group": "DEFAULT_GROUP"}
    auth = NacosTokenAuth("http://nacos.bench:8848", "nacos", "nacos", store=MemoryTokenStore(), transport=transport)
    static = StaticBearer(auth.get_token())
    out: dict[str, Any] = {}

    def sync_round(client: httpx.Client) -> float:
        started = time.process_time()
        for _ in range(per_round):
            client.get(url, params=params)
        return time.process_time() - started

    async def async_round(client: httpx.AsyncClient) -> float:
        started = time.process_time()
        for _ in range(per_round):
            await client.get(url, params=params)
        return time.process_time() - started

    with httpx.Client(auth=auth, transport=transport) as ours, httpx.Client(auth=static, transport=transport) as base:
        for client in (ours, base):
            sync_round(client)
        ratios = []
        for r in range(rounds):
            if r % 2 == 0:
                mine, theirs = sync_round(ours), sync_round(base)
            else:
                theirs, mine = sync_round(base), sync_round(ours)
            ratios.append(theirs / mine)  # requests/s ours ÷ base = CPU base ÷ CPU ours
        out["sync"] = ratios

    async def run_async() -> list[float]:
        async with httpx.AsyncClient(auth=auth, transport=transport) as ours, \
                httpx.AsyncClient(auth=static, transport=transport) as base:
            for client in (ours, base):
                await async_round(client)
            ratios = []
            for r in range(rounds):
                if r % 2 == 0:
                    mine, theirs = await async_round(ours), await async_round(base)
                else:
                    theirs, mine = await async_round(base), await async_round(ours)
                ratios.append(theirs / mine)
            return ratios

    out["async"] = asyncio.run(run_async())
    for mode in ("sync", "async"):
        median, low, high = _median_interval(out[mode])
        print(f"S7    {mode:8}: hot path ÷ static Bearer header {median:.3f} (95 % interval {low:.3f}-{high:.3f}; "
              f"{rounds} interleaved rounds x {per_round} requests, process CPU time)")
    return out


MEASURES = {"S1": s1_s2, "S3": s3, "S4": s4, "S5": s5, "S6": s6, "S7": s7}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision measured as the baseline")
    parser.add_argument("--only", default=",".join(MEASURES), help="comma-separated: S1 (with S2), S3 ... S7")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](*json.loads(args.child_args))))
        return 0
    impls = {"new": ROOT, "baseline": _impl_path(args.baseline)}
    print(f"# {platform.node()} {platform.processor() or platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, baseline {args.baseline}")
    for name in args.only.split(","):
        MEASURES[name.strip().upper()](impls, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
