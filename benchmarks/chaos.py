"""Chaos soak and login-storm measures (issue #8, "Measure"): real loopback HTTP, real wall clock, a 4 s token.

    python benchmarks/chaos.py --seconds 25 --runs 1 [--seed 1] [--json]
    python benchmarks/chaos.py --storm [--json]

Soak: 8 sync threads (one ``httpx.Client`` each) and 32 asyncio tasks (one ``httpx.AsyncClient``, its loop on its
own thread) share one ``NacosTokenAuth`` and read a config from ``MockNacosServer(token_ttl=4)`` (on loopback, in a
child process: see :class:`ServerProcess`) at a paced total rate: 400 requests/s, 10,000 slots in 25 s; a worker
held up by a slow request skips the slots it missed rather than catching up in a burst, so fewer are sent under
faults. A chaos thread, driven by a plan drawn from ``--seed``, rotates the server's key every 2-3 s, makes two
logins in a row answer 503 every 3-5 s, slows logins to 300 ms for 1-2 s every 5-8 s, and a task on the event loop
blocks it (``time.sleep`` 0.2-0.5 s) every 1.5-2.5 s.
Each run reports:

* requests and failed requests (an exception or a status other than 200; goal 0), each failure kind with its
  count and where in ``nacos_token_client`` it was raised;
* logins the server granted against the ideal count, login attempts (503s and retries included), logins by the
  client's reason;
* the slowest request (also split sync/async: async requests also wait out the deliberate loop blocks) and the
  p50/p99 latency, and the CPU this process used (cores): near 1.0 the latencies include GIL queueing.

Ideal logins. A client needs one login at the start, one after each key rotation (the rotation invalidates the
token, so at least one request is rejected and one re-login follows), and one each time the token it holds reaches
``refresh_ratio`` (0.9) of its life without a rotation in between. A rotation's login restarts that life, so the
refreshes are counted per stretch between forced logins, not over the whole run: for the stretches
``[0, r1), [r1, r2), ..., [rn, end)`` bounded by the rotations actually carried out,

    ideal = sum over stretches of (1 + floor(stretch_length / (0.9 * life)))

where the first 1 is the initial login and each later 1 is a rotation's. ``life`` is the lifetime the client
holds (``token_info().lifetime``: 3-4 s, as the mock signs ``exp = floor(now) + 4``). With rotations every 2-3 s
and a life near 4 s (refresh at about 3.5 s) a stretch rarely needs a refresh, so ``ideal`` is close to
``1 + rotations``; the naive ``1 + rotations + duration / (0.9 * life)`` would count refreshes that a rotation
already made unnecessary. Logins above ``ideal`` are the price of the chaos (a login
signed just before a rotation, a retry after a 503) or waste.

Storm (``--storm``), logins per 1,000 rejected requests (goal: a handful, not 1,000):

(a) a proxy that answers 401 to every request but forwards logins to the mock server (in-process transport);
(b) two mock servers with different keys behind one client: requests alternate between the two hosts, logins go
    through a transport routing by host, so a token from one server is always refused by the other.

Each is measured twice, 1,000 requests back to back and 1,000 paced over ``--storm-seconds`` (10 s): the client's
storm back-off is timed, so the paced shape shows how many logins it lets through as time passes.

The process stops by itself: every thread is joined with a deadline, the servers are stopped. Exit status 1 when a
soak request failed or a storm cost more than 100 logins per 1,000 rejected requests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import random
import re
import statistics
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from nacos_token_client import MemoryTokenStore, NacosTokenAuth, TokenEvent
from nacos_token_client.testing import MockNacosServer

PARAMS = {"dataId": "app.yaml", "group": "DEFAULT_GROUP"}
CONFIG_PATH = "/nacos/v1/cs/configs"
LOGIN_SUFFIXES = ("/auth/login", "/auth/users/login", "/auth/user/login")
TOKEN_TTL = 4
JOIN_GRACE = 15.0  # seconds a worker may overrun the run before it is reported as stuck
PACKAGE = "nacos_token_client"


# -- recording ---------------------------------------------------------------------------------------------------

@dataclass
class Failure:
    """One kind of failed request: how often, and where the first one came from."""

    count: int = 0
    where: str = ""


@dataclass
class Tally:
    """What one worker saw; merged after the run (no lock on the hot path)."""

    latencies: list[float] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)

    def fail(self, kind: str, where: str = "") -> None:
        failure = self.failures.setdefault(kind, Failure(where=where))
        failure.count += 1

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        for kind, failure in other.failures.items():
            mine = self.failures.setdefault(kind, Failure(where=failure.where))
            mine.count += failure.count


def _normalise(text: str) -> str:
    """Numbers vary between otherwise equal failures (timings, ports): fold them so kinds group."""
    return re.sub(r"\d+(\.\d+)?", "N", " ".join(text.split()))[:140]


def response_failure(response: httpx.Response) -> str:
    """``HTTP 403: invalid signature``-style kind: the status and the server's message, not the timestamp."""
    text = response.content[:2000].decode("utf-8", "replace")
    try:
        body = json.loads(text)
        message = str(body.get("message", text)) if isinstance(body, dict) else text
    except ValueError:
        message = text
    return f"HTTP {response.status_code}: {_normalise(message)}"


def exception_failure(exc: BaseException) -> tuple[str, str]:
    """The kind (type and message) and a short traceback: the innermost frames inside the library, and the cause."""
    kind = f"{type(exc).__module__}.{type(exc).__name__}: {_normalise(str(exc))}"
    frames = [f"{f.filename.rsplit(PACKAGE + '/', 1)[-1]}:{f.lineno} {f.name}"
              for f in traceback.extract_tb(exc.__traceback__) if f"/{PACKAGE}/" in f.filename]
    where = " <- ".join(reversed(frames[-4:])) or "(no frame inside " + PACKAGE + ")"
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        where += f" [cause: {type(cause).__name__}: {_normalise(str(cause))[:60]}]"
    return kind, where


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


class LoginsByReason:
    """``on_event`` hook: the client's own account of its logins and failures, by reason (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.longest = 0.0  # seconds of the slowest successful login request (retries before it not included)
        self.most_attempts = 0  # the most attempts one login needed

    def __call__(self, event: TokenEvent) -> None:
        if event.kind in ("login", "failure"):
            reason = event.reason.value if event.reason else "none"
            label = reason if event.kind == "login" else f"failed-{reason}"
            with self.lock:
                self.counts[label] += 1
                if event.kind == "login":
                    self.longest = max(self.longest, event.duration or 0.0)
                    self.most_attempts = max(self.most_attempts, event.attempts or 0)


# -- the chaos plan ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Fault times (seconds from the start), drawn once from the seed so a run can be repeated."""

    events: list[tuple[float, str]]  # (when, "rotate" | "fail2" | "slow" | "fast") for the chaos thread
    blocks: list[tuple[float, float]]  # (pause before, block length) for the event-loop blocker


def make_plan(rng: random.Random, seconds: float) -> Plan:
    events: list[tuple[float, str]] = []
    t = rng.uniform(2, 3)
    while t < seconds - 0.5:
        events.append((t, "rotate"))
        t += rng.uniform(2, 3)
    t = rng.uniform(1, 3)
    while t < seconds - 0.5:
        events.append((t, "fail2"))
        t += rng.uniform(3, 5)
    t = rng.uniform(2, 4)
    while t < seconds - 0.5:
        events.append((t, "slow"))
        events.append((min(t + rng.uniform(1, 2), seconds - 0.1), "fast"))
        t += rng.uniform(5, 8)
    events.sort()
    blocks: list[tuple[float, float]] = []
    t = 0.0
    while True:
        pause, block = rng.uniform(1.5, 2.5), rng.uniform(0.2, 0.5)
        t += pause + block
        if t > seconds - 0.5:
            break
        blocks.append((pause, block))
    return Plan(events, blocks)


class ServerProcess:
    """``MockNacosServer(token_ttl=4)`` on loopback in a child process, driven through a pipe.

    The server runs in its own process so that its request handling does not compete with the clients for this
    process's GIL (at 400 requests/s the two together would saturate one core and every latency would measure
    GIL queueing). The chaos controls are the server's own: ``rotate_secret()``, ``fail_logins()``,
    ``login_delay``, ``stats``. Every call has a deadline; the child ends itself if the parent goes away.
    """

    def __init__(self, token_ttl: int = TOKEN_TTL) -> None:
        import multiprocessing

        self._lock = threading.Lock()
        self._conn, child = multiprocessing.get_context("fork").Pipe()
        self._process = multiprocessing.get_context("fork").Process(target=_serve, args=(child, token_ttl),
                                                                      daemon=True,
                                                                      name="chaos-mock-nacos")
        self._process.start()
        child.close()
        self.url: str = self._call("url")

    def _call(self, command: str, arg: float = 0.0) -> Any:
        with self._lock:
            self._conn.send((command, arg))
            if not self._conn.poll(10):
                raise TimeoutError(f"the mock server did not answer {command!r} within 10 s")
            return self._conn.recv()

    def rotate_secret(self) -> None:
        self._call("rotate")

    def fail_logins(self, n: int) -> None:
        self._call("fail", n)

    def set_login_delay(self, seconds: float) -> None:
        self._call("delay", seconds)

    def set_down(self, down: bool) -> None:
        """While down, every login answers 503 (an outage)."""
        self._call("down", float(down))

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("stats")
        return answer

    def stop(self) -> None:
        with suppress(OSError, EOFError, TimeoutError):
            self._call("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()


def _serve(conn: Any, token_ttl: int) -> None:
    server = MockNacosServer(token_ttl=token_ttl)
    server.set_config("app.yaml", "x: 1")
    try:
        while conn.poll(120):  # no word from the parent for 2 minutes: it is gone, end
            command, arg = conn.recv()
            if command == "url":
                conn.send(server.start())
            elif command == "rotate":
                server.rotate_secret()
                conn.send(None)
            elif command == "fail":
                server.fail_logins(int(arg), status=503)
                conn.send(None)
            elif command == "delay":
                server.login_delay = arg
                conn.send(None)
            elif command == "down":
                server.down = bool(arg)
                conn.send(None)
            elif command == "stats":
                stats = server.stats
                conn.send({"logins": stats.logins, "login_attempts": stats.login_attempts,
                           "requests": stats.requests, "rejections": dict(stats.rejections)})
            else:
                conn.send(None)
                break
    except (EOFError, OSError):
        pass
    finally:
        server.stop()


def chaos(server: ServerProcess, plan: Plan, start: float, stop: threading.Event,
          done: list[tuple[float, str]]) -> None:
    """Carry out the plan against the server on wall-clock time; records what it did in ``done``."""
    try:
        for when, action in plan.events:
            if stop.wait(max(0.0, start + when - time.monotonic())):
                return
            if action == "rotate":
                server.rotate_secret()
            elif action == "fail2":
                server.fail_logins(2)
            else:
                server.set_login_delay(0.3 if action == "slow" else 0.0)
            done.append((time.monotonic() - start, action))
    finally:
        server.set_login_delay(0.0)


# -- load --------------------------------------------------------------------------------------------------------

def sync_worker(url: str, auth: NacosTokenAuth, interval: float, phase: float, start: float, end: float,
                tally: Tally) -> None:
    """Paced requests (one every ``interval`` s, never catching up in a burst) until ``end``."""
    budget = math.ceil((end - start) / interval) + 1  # a bounded loop, whatever the clock does
    due = start + phase
    with httpx.Client(auth=auth, timeout=10.0) as client:
        for _ in range(budget):
            now = time.monotonic()
            if now >= end:
                break
            if due > now:
                time.sleep(due - now)
            due = max(due + interval, time.monotonic() - interval)
            began = time.perf_counter()
            try:
                response = client.get(url + CONFIG_PATH, params=PARAMS)
            except Exception as exc:
                tally.latencies.append(time.perf_counter() - began)
                tally.fail(*exception_failure(exc))
                continue
            tally.latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                tally.fail(response_failure(response))


async def async_worker(client: httpx.AsyncClient, url: str, interval: float, phase: float, start: float,
                       end: float, tally: Tally) -> None:
    budget = math.ceil((end - start) / interval) + 1
    due = start + phase
    for _ in range(budget):
        now = time.monotonic()
        if now >= end:
            break
        if due > now:
            await asyncio.sleep(due - now)
        due = max(due + interval, time.monotonic() - interval)
        began = time.perf_counter()
        try:
            response = await client.get(url + CONFIG_PATH, params=PARAMS)
        except Exception as exc:
            tally.latencies.append(time.perf_counter() - began)
            tally.fail(*exception_failure(exc))
            continue
        tally.latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            tally.fail(response_failure(response))


async def blocker(blocks: list[tuple[float, float]], end: float, blocked: list[float]) -> None:
    """The deliberately busy event loop: every so often this task holds the loop with a blocking sleep."""
    for pause, block in blocks:
        await asyncio.sleep(pause)
        if time.monotonic() + block > end:
            return
        time.sleep(block)  # blocking the loop is the fault being injected
        blocked.append(block)


async def async_load(url: str, auth: NacosTokenAuth, tasks: int, interval: float, start: float, end: float,
                     tally: Tally, blocks: list[tuple[float, float]], blocked: list[float]) -> None:
    async with httpx.AsyncClient(auth=auth, timeout=10.0) as client:
        jobs = [async_worker(client, url, interval, interval * i / tasks, start, end, tally) for i in range(tasks)]
        work = asyncio.gather(blocker(blocks, end, blocked), *jobs)
        try:
            await asyncio.wait_for(work, timeout=end - time.monotonic() + JOIN_GRACE)
        except asyncio.TimeoutError:
            tally.fail("stuck: async tasks still running after the grace period")


# -- one soak run ------------------------------------------------------------------------------------------------

def ideal_logins(rotations: list[float], duration: float, life: float, ratio: float = 0.9) -> int:
    """See the module docstring: 1 per forced login (start, each rotation) + refreshes within each stretch."""
    marks = [0.0, *sorted(t for t in rotations if t < duration), duration]
    return sum(1 + math.floor((b - a) / (ratio * life)) for a, b in itertools.pairwise(marks))


def soak(seconds: float, seed: int, threads: int, tasks: int, rate: float) -> dict[str, Any]:
    plan = make_plan(random.Random(seed), seconds)
    server = ServerProcess()
    url = server.url
    reasons = LoginsByReason()
    auth = NacosTokenAuth(url, "nacos", "nacos", store=MemoryTokenStore(), on_event=reasons)
    interval = (threads + tasks) / rate  # every worker sends one request per interval
    sync_tallies = [Tally() for _ in range(threads)]
    async_tally = Tally()
    blocked: list[float] = []
    done: list[tuple[float, str]] = []
    stop = threading.Event()
    start = time.monotonic() + 0.2  # let every thread get to its start line
    cpu_start = time.process_time()
    end = start + seconds
    workers = [threading.Thread(target=sync_worker, name=f"chaos-sync-{i}", daemon=True,
                                args=(url, auth, interval, interval * i / threads, start, end, sync_tallies[i]))
               for i in range(threads)]
    workers.append(threading.Thread(
        target=lambda: asyncio.run(async_load(url, auth, tasks, interval, start, end, async_tally, plan.blocks,
                                              blocked)),
        name="chaos-async", daemon=True))
    chaos_thread = threading.Thread(target=chaos, args=(server, plan, start, stop, done), name="chaos-faults",
                                    daemon=True)
    try:
        for w in workers:
            w.start()
        chaos_thread.start()
        for w in workers:
            w.join(max(0.0, end + JOIN_GRACE - time.monotonic()))
        stop.set()
        chaos_thread.join(5)
        duration = min(time.monotonic(), end) - start
        cpu = (time.process_time() - cpu_start) / max(duration, 1e-9)
        stuck = [w.name for w in (*workers, chaos_thread) if w.is_alive()]
        info = auth.token_info()
        stats = server.stats()
    finally:
        stop.set()
        auth.close()
        server.stop()
    sync_tally = Tally()
    for t in sync_tallies:
        sync_tally.merge(t)
    total = Tally()
    total.merge(sync_tally)
    total.merge(async_tally)
    ordered = sorted(total.latencies)
    life = info.lifetime if info is not None else float(TOKEN_TTL)
    rotations = [t for t, action in done if action == "rotate"]
    return {
        "seed": seed, "seconds": round(duration, 2), "requests": len(ordered),
        "paced_slots": round(rate * duration),
        "failed": sum(f.count for f in total.failures.values()),
        "failures": {kind: {"count": f.count, "where": f.where}
                     for kind, f in sorted(total.failures.items(), key=lambda kv: -kv[1].count)},
        "logins": stats["logins"], "ideal_logins": ideal_logins(rotations, duration, life),
        "login_attempts": stats["login_attempts"], "token_life_seen": round(life, 3),
        "logins_by_reason": dict(sorted(reasons.counts.items())),
        "longest_login_s": round(reasons.longest, 3), "most_login_attempts": reasons.most_attempts,
        "slowest_s": round(ordered[-1], 4) if ordered else 0.0,
        "slowest_sync_s": round(max(sync_tally.latencies, default=0.0), 4),
        "slowest_async_s": round(max(async_tally.latencies, default=0.0), 4),
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2), "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "p99_sync_ms": round(percentile(sorted(sync_tally.latencies), 0.99) * 1000, 2),
        "p99_async_ms": round(percentile(sorted(async_tally.latencies), 0.99) * 1000, 2),
        "rotations": len(rotations), "fail_bursts": sum(1 for _, a in done if a == "fail2"),
        "slow_windows": sum(1 for _, a in done if a == "slow"),
        "loop_blocks": len(blocked), "loop_blocked_s": round(sum(blocked), 2),
        "server_rejections": stats["rejections"], "stuck_threads": stuck,
        "client_cpu_cores": round(cpu, 2),
    }


def soak_line(i: int, runs: int, r: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in r["logins_by_reason"].items())
    line = (f"run {i}/{runs} seed={r['seed']} {r['seconds']:.1f}s: {r['requests']} requests "
            f"(of {r['paced_slots']} paced slots), {r['failed']} failed; "
            f"logins {r['logins']} (ideal {r['ideal_logins']}; client says: {reasons}), "
            f"login attempts {r['login_attempts']} (at most {r['most_login_attempts']} for one login; longest "
            f"login request {r['longest_login_s']:.2f}s); slowest {r['slowest_s']:.3f}s "
            f"(sync {r['slowest_sync_s']:.3f}, async {r['slowest_async_s']:.3f}), p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms (sync {r['p99_sync_ms']:.1f}, async {r['p99_async_ms']:.1f}); "
            f"chaos: {r['rotations']} rotations, {r['fail_bursts']} 503x2 bursts, "
            f"{r['slow_windows']} slow-login windows, {r['loop_blocks']} loop blocks ({r['loop_blocked_s']:.1f}s); "
            f"client process CPU {r['client_cpu_cores']:.2f} cores")
    for kind, f in r["failures"].items():
        line += f"\n    {f['count']:>6} x {kind}\n           at {f['where'] or '(a response, no exception)'}"
    if r["stuck_threads"]:
        line += f"\n    STUCK: {', '.join(r['stuck_threads'])}"
    return line


# -- storm -------------------------------------------------------------------------------------------------------

def is_login(request: httpx.Request) -> bool:
    return request.url.path.endswith(LOGIN_SUFFIXES)


def send_rejected(client: httpx.Client, urls: list[str], count: int, spread: float) -> dict[str, Any]:
    """Send ``count`` requests (cycling through ``urls``), evenly paced over ``spread`` seconds (0: back to back),
    giving up after ``spread + 30`` seconds; count the refused ones."""
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    sent = 0
    for i in range(count):
        now = time.monotonic()
        if now - started > spread + 30:
            break
        due = started + spread * i / count
        if due > now:
            time.sleep(due - now)
        sent += 1
        try:
            response = client.get(urls[i % len(urls)] + CONFIG_PATH, params=PARAMS)
        except Exception as exc:
            outcomes[exception_failure(exc)[0]] += 1
            continue
        outcomes["ok" if response.status_code == 200 else response_failure(response)] += 1
    rejected = sent - outcomes["ok"]
    return {"sent": sent, "rejected": rejected, "outcomes": dict(outcomes),
            "seconds": round(time.monotonic() - started, 2)}


@contextmanager
def storm_auth(addresses: list[str], transport: httpx.BaseTransport) -> Iterator[NacosTokenAuth]:
    auth = NacosTokenAuth(addresses, "nacos", "nacos", store=MemoryTokenStore(), transport=transport)
    try:
        yield auth
    finally:
        auth.close()


def storm_proxy(count: int, spread: float) -> dict[str, Any]:
    """(a) A path behind a proxy that answers 401 to everything except logins."""
    server = MockNacosServer()
    server.set_config("app.yaml", "x: 1")
    upstream = server.transport()

    def proxy(request: httpx.Request) -> httpx.Response:
        if is_login(request):
            return upstream.handle_request(request)
        return httpx.Response(401, text="Unauthorized (proxy)", request=request)

    transport = httpx.MockTransport(proxy)
    address = "http://nacos.proxy:8848"
    with storm_auth([address], transport) as auth, httpx.Client(auth=auth, transport=transport) as client:
        result = send_rejected(client, [address], count, spread)
    stats = server.stats
    return {**result, "logins": stats.logins, "login_attempts": stats.login_attempts}


def storm_two_keys(count: int, spread: float) -> dict[str, Any]:
    """(b) Two servers signing with different keys behind one client; requests alternate between them."""
    servers = {"nacos-a": MockNacosServer(), "nacos-b": MockNacosServer()}
    for s in servers.values():
        s.set_config("app.yaml", "x: 1")
    upstreams = {host: s.transport() for host, s in servers.items()}

    def route(request: httpx.Request) -> httpx.Response:
        return upstreams[request.url.host].handle_request(request)

    transport = httpx.MockTransport(route)
    addresses = [f"http://{host}:8848" for host in servers]
    with storm_auth(addresses, transport) as auth, httpx.Client(auth=auth, transport=transport) as client:
        result = send_rejected(client, addresses, count, spread)
    return {**result, "logins": sum(s.stats.logins for s in servers.values()),
            "login_attempts": sum(s.stats.login_attempts for s in servers.values()),
            "logins_by_server": {host: s.stats.logins for host, s in servers.items()},
            "server_rejections": sum(sum(s.stats.rejections.values()) for s in servers.values())}


def storm_line(name: str, r: dict[str, Any]) -> str:
    per_1000 = 1000 * r["logins"] / r["rejected"] if r["rejected"] else 0.0
    r["logins_per_1000_rejected"] = round(per_1000, 1)
    outcomes = "; ".join(f"{k} x{v}" for k, v in sorted(r["outcomes"].items(), key=lambda kv: -kv[1]))
    return (f"storm {name}: {r['sent']} sent in {r['seconds']:.1f}s, {r['rejected']} rejected, "
            f"logins {r['logins']} (attempts {r['login_attempts']}) = {per_1000:.1f} per 1,000 rejected; "
            f"outcomes: {outcomes}")


# -- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="length of one soak run (1-60 s)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1, help="run i uses seed + i - 1")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--rate", type=float, default=400.0, help="total requests per second (all workers)")
    parser.add_argument("--storm", action="store_true", help="measure login storms instead of the soak")
    parser.add_argument("--storm-requests", type=int, default=1000)
    parser.add_argument("--storm-seconds", type=float, default=10.0,
                        help="the paced storm spreads its requests over this many seconds (1-30)")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be between 1 and 60")
    if not 1 <= args.storm_seconds <= 30:
        parser.error("--storm-seconds must be between 1 and 30")
    if args.runs < 1 or args.threads < 1 or args.tasks < 1 or args.rate <= 0:
        parser.error("--runs, --threads, --tasks and --rate must be positive")
    logging.getLogger(PACKAGE).setLevel(logging.CRITICAL)
    summary: dict[str, Any]
    if args.storm:
        summary = {}
        for spread in (0.0, args.storm_seconds):
            shape = "back to back" if spread == 0 else f"over {spread:g}s"
            for key, name, measure in (("proxy_401", "(a) proxy answering 401", storm_proxy),
                                       ("two_keys", "(b) two servers, two keys", storm_two_keys)):
                summary[f"{key}_{'burst' if spread == 0 else 'paced'}"] = r = measure(args.storm_requests, spread)
                print(storm_line(f"{name}, {args.storm_requests} requests {shape}", r), flush=True)
        worst = max(r["logins_per_1000_rejected"] for r in summary.values())
    else:
        results = []
        for i in range(1, args.runs + 1):
            r = soak(args.seconds, args.seed + i - 1, args.threads, args.tasks, args.rate)
            results.append(r)
            print(soak_line(i, args.runs, r), flush=True)
        failed = sum(r["failed"] for r in results)
        summary = {"runs": results, "requests": sum(r["requests"] for r in results), "failed": failed,
                   "logins": sum(r["logins"] for r in results),
                   "ideal_logins": sum(r["ideal_logins"] for r in results),
                   "login_attempts": sum(r["login_attempts"] for r in results),
                   "slowest_s": max(r["slowest_s"] for r in results),
                   "p99_ms_median": statistics.median(r["p99_ms"] for r in results)}
        print(f"summary: {args.runs} run(s), {summary['requests']} requests, {failed} failed, "
              f"logins {summary['logins']} (ideal {summary['ideal_logins']}), "
              f"login attempts {summary['login_attempts']}, slowest {summary['slowest_s']:.3f}s, "
              f"median p99 {summary['p99_ms_median']:.1f} ms", flush=True)
        worst = 0.0
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    return 1 if (not args.storm and summary["failed"]) or worst > 100 else 0


if __name__ == "__main__":
    sys.exit(main())
