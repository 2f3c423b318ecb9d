"""Real Redis servers for tests and benchmarks, in a temp dir on loopback: one redis-server, a 3-master Redis
Cluster (built with ``redis-cli --cluster create``), and a Sentinel (``redis-server --sentinel``) watching a master.

Everything skips with a clear reason (pytest) or raises :class:`RedisMissing` (elsewhere) when redis-server or
redis-cli is not installed (CI installs them with ``apt-get install redis-server redis-tools``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["RedisCluster", "RedisMissing", "RedisSentinel", "RedisServer", "free_port"]

SENTINEL_SERVICE = "nacos-tokens"


class RedisMissing(RuntimeError):
    """redis-server or redis-cli is not installed."""


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedisMissing(f"{name} is not installed (CI installs it with apt-get install redis-server redis-tools)")
    return path


def free_port(*, bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose Cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port + 10000))
            return port
    raise RuntimeError("no free port")


def ask(port: int, *command: str, timeout: float = 0.5) -> bytes:
    """One RESP command on a fresh connection; the raw reply ('' if the server does not answer)."""
    payload = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(part.encode())}\r\n{part}\r\n".encode() for part in command)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(payload)
            return conn.recv(65536)
    except OSError:
        return b""


def wait_for(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {seconds:.0f} s")


class RedisServer:
    """One redis-server (``extra`` arguments are appended to its command line)."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port(bus="--cluster-enabled" in extra)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [executable("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"redis-server on port {self.port} answering", lambda: ask(self.port, "PING").startswith(b"+PONG"),
                 10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class RedisCluster:
    """Three masters, no replicas: every slot is served, so keys spread over three processes."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        cli = executable("redis-cli")
        self.nodes: list[RedisServer] = []
        try:
            for i in range(masters):
                node_dir = directory / f"node{i}"
                self.nodes.append(RedisServer(node_dir, "--cluster-enabled", "yes", "--cluster-config-file",
                                              str(node_dir / "nodes.conf"), "--cluster-node-timeout", "5000"))
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            wait_for("cluster_state:ok", lambda: all(b"cluster_state:ok" in ask(n.port, "CLUSTER", "INFO")
                                                      for n in self.nodes))
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"
        self.ports = [n.port for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinel:
    """A master and one Sentinel (quorum 1) that names it as ``SENTINEL_SERVICE``."""

    def __init__(self, directory: Path) -> None:
        self.master = RedisServer(directory / "master")
        self.service = SENTINEL_SERVICE
        self.port = free_port()
        sentinel_dir = directory / "sentinel"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        config = sentinel_dir / "sentinel.conf"  # Sentinel rewrites it: it must be its own, writable file
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {sentinel_dir}\n"
                          f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
                          f"sentinel down-after-milliseconds {self.service} 5000\n")
        self.process = subprocess.Popen([executable("redis-server"), str(config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for("Sentinel naming the master", lambda: str(self.master.port).encode() in ask(
                self.port, "SENTINEL", "get-master-addr-by-name", self.service))
        except BaseException:
            self.stop()
            raise
        self.sentinels = [("127.0.0.1", self.port)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.master.stop()
