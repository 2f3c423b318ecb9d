"""Redis at scale (see BENCHMARKS.md): logins per refresh cycle for 16 processes sharing a RedisTokenStore on a
real local 3-master Redis Cluster, beside the same fleet on one redis-server (the baseline), in the same run.

    python benchmarks/fleet_cluster.py                 # 3 rounds of 5 cycles of a 6 s token (about 3 minutes)
    python benchmarks/fleet_cluster.py --rounds 1 --cycles 2 --json out.json

Each round starts a fresh mock server (``token_ttl`` seconds per token) and 16 forked processes that send a
request every 50 ms for ``cycles`` token lives. A refresh cycle is one token: the fleet's logins ÷ the distinct
tokens the processes used is the logins per refresh cycle (1.0 is one login for the whole fleet per cycle).
The rounds alternate Cluster and single server, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests/redis_servers.py

from nacos_token_client import NacosTokenAuth, RedisTokenStore, TokenStore
from nacos_token_client.testing import MockNacosServer
from tests.redis_servers import RedisCluster, RedisServer

PARAMS = {"dataId": "bench.yaml", "group": "DEFAULT_GROUP"}
FORK = multiprocessing.get_context("fork")


def _member(url: str, make_store: Callable[[], TokenStore], barrier: Any, seconds: float, results: Any) -> None:
    auth = NacosTokenAuth(url, "nacos", "nacos", store=make_store())
    fingerprints: set[str] = set()
    failed = requests = 0
    with httpx.Client(auth=auth) as client:
        barrier.wait()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            requests += 1
            if client.get(url + "/nacos/v1/cs/configs", params=PARAMS).status_code != 200:
                failed += 1
            info = auth.token_info()
            if info is not None:
                fingerprints.add(info.fingerprint)
            time.sleep(0.05)
    results.put((sorted(fingerprints), failed, requests))


def fleet_round(make_store: Callable[[], TokenStore], processes: int, token_ttl: int, cycles: int) -> dict[str, Any]:
    """One fleet for ``cycles`` token lives: logins, distinct tokens, logins per cycle, failed requests."""
    server = MockNacosServer(token_ttl=token_ttl)
    server.set_config("bench.yaml", "x: 1")
    server.login_delay = 0.05
    with server.run() as url:
        barrier = FORK.Barrier(processes + 1)
        results = FORK.Queue()
        members = [FORK.Process(target=_member, args=(url, make_store, barrier, token_ttl * cycles, results))
                   for _ in range(processes)]
        for m in members:
            m.start()
        barrier.wait(120)
        outcomes = [results.get(timeout=token_ttl * cycles + 120) for _ in members]
        for m in members:
            m.join(30)
        logins = server.stats.logins
    tokens = len({fp for fingerprints, _, _ in outcomes for fp in fingerprints})
    return {"logins": logins, "tokens": tokens, "logins_per_cycle": logins / max(tokens, 1),
            "failed_requests": sum(o[1] for o in outcomes), "requests": sum(o[2] for o in outcomes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--token-ttl", type=int, default=6)
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nacos-fleet-") as tmp:
        cluster = RedisCluster(Path(tmp) / "cluster")
        single = RedisServer(Path(tmp) / "single")
        try:
            deployments = {"cluster": cluster.url, "single": single.url}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in deployments}
            for index in range(args.rounds):
                for name, url in deployments.items():
                    prefix = f"bench:{name}:{index}:{time.time_ns()}:"  # one prefix for the whole fleet
                    make_store = functools.partial(RedisTokenStore, url, prefix=prefix)
                    outcome = fleet_round(make_store, args.processes, args.token_ttl, args.cycles)
                    runs[name].append(outcome)
                    print(f"round {index + 1} {name:8} logins {outcome['logins']:3} tokens {outcome['tokens']:3} "
                          f"logins/cycle {outcome['logins_per_cycle']:.2f} failed {outcome['failed_requests']} "
                          f"of {outcome['requests']}", flush=True)
        finally:
            cluster.stop()
            single.stop()
    summary = {name: {"median_logins_per_cycle": statistics.median(r["logins_per_cycle"] for r in rounds),
                      "median_tokens": statistics.median(r["tokens"] for r in rounds),
                      "failed_requests": sum(r["failed_requests"] for r in rounds),
                      "requests": sum(r["requests"] for r in rounds)} for name, rounds in runs.items()}
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for name, figures in summary.items():
        print(f"{name:8} median logins per refresh cycle {figures['median_logins_per_cycle']:.2f} "
              f"(median {figures['median_tokens']} cycles per round), failed requests {figures['failed_requests']} "
              f"of {figures['requests']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "runs": runs,
                                               "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
