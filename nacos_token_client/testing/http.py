"""Two ways to reach a :class:`Servable`: real HTTP on loopback, and an in-process httpx transport.

Both turn a request into a :class:`MockRequest`, ask the server, and carry out its answer: a response, a delay
(``login_delay``), or a hold (a long poll waiting for a change). Neither has a rule of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .model import Hold, MockRequest, MockResponse, Servable, poll_answer

__all__ = ["LoopbackServer", "MockNacosTransport"]


def _poll_result(server: Servable, hold: Hold) -> MockResponse:
    return poll_answer(server.changed_keys(hold) or b"")


def wait_sync(server: Servable, hold: Hold) -> MockResponse:
    """Hold a long poll on this thread until a watched key changes, the hold ends, or the server stops."""
    wake = threading.Event()
    server.add_watcher(wake.set)
    try:
        deadline = time.monotonic() + hold.seconds
        while server.changed_keys(hold) is None and not server.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wake.wait(remaining)
            wake.clear()
    finally:
        server.remove_watcher(wake.set)
    return _poll_result(server, hold)


async def wait_async(server: Servable, hold: Hold) -> MockResponse:
    """The same hold without blocking the event loop: publishes wake it thread-safely."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(wake.set)

    server.add_watcher(notify)
    try:
        deadline = loop.time() + hold.seconds
        while server.changed_keys(hold) is None and not server.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)
            wake.clear()
    finally:
        server.remove_watcher(notify)
    return _poll_result(server, hold)


def _mock_request(request: httpx.Request, body: bytes) -> MockRequest:
    return MockRequest(
        method=request.method,
        path=unquote(request.url.path),
        query=request.url.query.decode("ascii", "replace"),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
    )


def _read_timeout(request: httpx.Request) -> float | None:
    timeout: Any = request.extensions.get("timeout", {})
    value = timeout.get("read") if isinstance(timeout, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


class MockNacosTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serves a :class:`Servable` in-process, to ``httpx.Client`` and ``httpx.AsyncClient`` alike.

    A ``login_delay`` longer than the request's read timeout raises ``httpx.ReadTimeout``, as a real socket would.
    ``server`` is what answers; pass the transport as ``transport=`` to ``NacosTokenAuth``, a wrapper client or
    ``httpx.Client``/``AsyncClient`` for tests with no sockets at all.
    """

    def __init__(self, server: Servable) -> None:
        self.server = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer for ``httpx.Client`` (a held long poll blocks this thread until a change or its hold ends)."""
        answer = self.server.handle(_mock_request(request, request.read()))
        if isinstance(answer, Hold):
            answer = wait_sync(self.server, answer)
        if answer.delay:
            limit = _read_timeout(request)
            time.sleep(answer.delay if limit is None else min(answer.delay, limit))
            if limit is not None and answer.delay > limit:
                raise httpx.ReadTimeout("mock login delay exceeded the read timeout", request=request)
        return httpx.Response(answer.status, headers=list(answer.headers), content=answer.body, request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer for ``httpx.AsyncClient``, without blocking the event loop."""
        answer = self.server.handle(_mock_request(request, await request.aread()))
        if isinstance(answer, Hold):
            answer = await wait_async(self.server, answer)
        if answer.delay:
            limit = _read_timeout(request)
            await asyncio.sleep(answer.delay if limit is None else min(answer.delay, limit))
            if limit is not None and answer.delay > limit:
                raise httpx.ReadTimeout("mock login delay exceeded the read timeout", request=request)
        return httpx.Response(answer.status, headers=list(answer.headers), content=answer.body, request=request)


class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, 40 ms delayed ACKs
    server: _HTTPServer

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise _BodyTooLarge from None
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise _BodyTooLarge
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length", "0") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            raise _BodyTooLarge
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        mock = self.server.mock
        try:
            body = self._read_body(mock.max_body)
        except _BodyTooLarge:
            self.close_connection = True
            accept = self.headers.get("Accept", "")
            request = MockRequest(self.command, urlsplit(self.path).path, headers={"accept": accept})
            self._send(mock.error_response(request, 413, "request body too large"))
            return
        url = urlsplit(self.path)
        request = MockRequest(self.command, unquote(url.path), url.query,
                              {k.lower(): v for k, v in self.headers.items()}, body)
        answer = mock.handle(request)
        if isinstance(answer, Hold):
            answer = wait_sync(mock, answer)
        if answer.delay:
            time.sleep(answer.delay)
        self._send(answer)

    def _send(self, answer: MockResponse) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True  # the client went away; keep serving the others

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines carry query strings, and query strings may carry tokens


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], mock: Servable) -> None:
        self.mock = mock
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hangs up mid-request is not the server's problem


class LoopbackServer:
    """A :class:`Servable` served over real HTTP by a background thread.

    ``mock`` is what answers (usually a :class:`~nacos_token_client.testing.MockNacosServer`); ``host`` and
    ``port`` are where to listen (port 0: a free one). ``url`` is the address actually bound. Most tests use
    ``MockNacosServer.run()`` instead, which starts and stops one of these.
    """

    def __init__(self, mock: Servable, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), mock)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mock-nacos", daemon=True)
        bound_host, bound_port = self._httpd.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        self.url = f"http://{shown}:{bound_port}"

    def start(self) -> None:
        """Start serving (the socket is already bound, so ``url`` works before this)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut every open keep-alive connection, so no client hangs on a dead server."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._httpd.connections_lock:  # keep-alive connections must not outlive the server
            connections = list(self._httpd.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
