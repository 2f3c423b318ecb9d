"""Values the mock's state, its HTTP APIs and its transports share: requests, answers, and how Nacos parses them.

Nothing here knows the server's state or how a request arrived; ``http.py`` depends on this module only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote_plus

__all__ = ["Hold", "MockRequest", "MockResponse", "MockStats", "Servable", "poll_answer"]

WORD_SEPARATOR = "\x02"
LINE_SEPARATOR = "\x01"
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 410: "Gone", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class MockRequest:
    """One HTTP request, independent of how it arrived. Header names are lower-case.

    ``method`` (upper case), ``path`` (with the context path), ``query`` (the raw query string), ``headers`` and
    ``body`` (raw bytes), so a handler reads it the same way over loopback and in-process.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class MockResponse:
    """One answer: ``status``, ``body`` (bytes) and ``headers`` (name, value pairs, in order); ``delay`` is real
    seconds the transport waits before sending it (``login_delay``)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Probe:
    """One listened key: where its content is stored, and the tenant field the answer names (None: left out)."""

    data_id: str
    group: str
    md5: str
    tenant: str
    shown_tenant: str | None


@dataclass(frozen=True, slots=True)
class Hold:
    """A long poll with nothing changed yet: wait up to ``seconds`` for a change to ``probes``."""

    probes: tuple[Probe, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class MockStats:
    """A snapshot of what the server has seen, so tests can assert on server-side effects (how many logins).

    ``logins``: logins that got a token; ``login_attempts``: every login request, refused or failed ones
    included; ``requests``: requests that went through the auth filter; ``rejections``: rejection message →
    count; ``logins_by_user``: user → successful logins.
    """

    logins: int
    login_attempts: int
    requests: int
    rejections: Mapping[str, int]
    logins_by_user: Mapping[str, int]


class Servable(Protocol):
    """What a transport needs from a server: answers, and change notifications for held long polls."""

    @property
    def max_body(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def handle(self, request: MockRequest) -> MockResponse | Hold: ...

    def changed_keys(self, hold: Hold) -> bytes | None: ...

    def add_watcher(self, wake: Callable[[], None]) -> None: ...

    def remove_watcher(self, wake: Callable[[], None]) -> None: ...

    def error_response(self, request: MockRequest, status: int, message: str,
                       extra: tuple[tuple[str, str], ...] = ()) -> MockResponse: ...


class BadRequest(Exception):
    """Input no servlet container would accept (bad UTF-8, malformed probes): a 400 error answer."""


class MissingParameter(Exception):
    """A ``@RequestParam`` that is not there; answered by ``NacosState.missing_parameter``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# -- parsing --------------------------------------------------------------------------------------------------------


def params_of(request: MockRequest) -> dict[str, str]:
    """Servlet-style parameters: query string first, then a form body; the first value of a name wins."""
    params: dict[str, str] = {}
    sources = [request.query]
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") and request.body:
        try:
            sources.append(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("request body is not UTF-8") from None
    for source in sources:
        try:
            pairs = parse_qsl(source, keep_blank_values=True, encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("parameters are not valid UTF-8") from None
        for name, value in pairs:
            params.setdefault(name, value)
    return params


def required(params: Mapping[str, str], name: str) -> str:
    """A Spring ``@RequestParam`` without a default: absent raises :class:`MissingParameter`."""
    value = params.get(name)
    if value is None:
        raise MissingParameter(name)
    return value


def is_blank(value: str | None) -> bool:
    """Apache/Nacos ``StringUtils.isBlank``."""
    return value is None or not value.strip()


def java_html_escape(value: str) -> str:
    """Spring's ``HtmlUtils.htmlEscape``: ``& < > " '`` as ``&amp; &lt; &gt; &quot; &#39;``."""
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#39;")):
        value = value.replace(raw, entity)
    return value


def java_split_dots(text: str) -> list[str]:
    """Java's ``text.split("\\\\.")``: trailing empty strings are dropped (``"h.p."`` has two parts)."""
    parts = text.split(".")
    while parts and parts[-1] == "":
        parts.pop()
    return parts


# -- answers --------------------------------------------------------------------------------------------------------


def text(status: int, body: str, *, delay: float = 0.0, extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
    """A plain-text answer, as Spring writes a ``String`` body."""
    return MockResponse(status, body.encode(), (("Content-Type", "text/plain;charset=UTF-8"), *extra), delay=delay)


def json_answer(status: int, body: Any, *, delay: float = 0.0, extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
    """A JSON answer, compact and with non-ASCII written as is, as Jackson writes it."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return MockResponse(status, data, (("Content-Type", "application/json"), *extra), delay=delay)


def spring_error(request: MockRequest, timestamp: str, status: int, message: str,
                 extra: tuple[tuple[str, str], ...] = ()) -> MockResponse:
    """Spring Boot's error answer (``server.error.include-message=ALWAYS`` in Nacos's application.properties):
    JSON, or the whitelabel HTML page when the client asks for text/html."""
    reason = _REASONS.get(status, "Error")
    if "text/html" in request.headers.get("accept", ""):
        page = (f"<html><body><h1>Whitelabel Error Page</h1><p>This application has no explicit mapping for "
                f"/error, so you are seeing this as a fallback.</p><div>There was an unexpected error "
                f"(type={reason}, status={status}).</div><div>{escape(message)}</div></body></html>")
        return MockResponse(status, page.encode(), (("Content-Type", "text/html;charset=UTF-8"), *extra))
    body = {"timestamp": timestamp, "status": status, "error": reason, "message": message, "path": request.path}
    return MockResponse(status, json.dumps(body).encode(), (("Content-Type", "application/json"), *extra))


def poll_answer(body: bytes) -> MockResponse:
    """A long poll's answer: the changed keys (or nothing), never cached."""
    return MockResponse(200, body, (("Content-Type", "text/html;charset=UTF-8"), ("Pragma", "no-cache"),
                                    ("Cache-Control", "no-cache,no-store")))


def encode_changed(changed: list[Probe]) -> bytes:
    """``dataId%02group[%02tenant]%01`` per key, URL-encoded like Java's URLEncoder, then a newline."""
    line = ""
    for probe in changed:
        line += probe.data_id + WORD_SEPARATOR + probe.group
        if probe.shown_tenant:
            line += WORD_SEPARATOR + probe.shown_tenant
        line += LINE_SEPARATOR
    return (quote_plus(line, safe="*").replace("~", "%7E") + "\n").encode()
