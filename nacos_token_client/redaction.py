"""Keep tokens out of other libraries' log records.

At DEBUG, httpcore logs every response's headers, and a Nacos login answer carries ``Authorization: Bearer
<token>``. With ``token_placement="query"``, httpx's INFO request lines carry ``accessToken=<token>``. The first
``NacosTokenAuth`` therefore adds a filter to the ``httpx`` and ``httpcore`` loggers that replaces bearer values,
``accessToken`` parameters and JWT-shaped strings with a fingerprint. A filter runs only for records that are
actually logged, so it costs nothing while those loggers are quiet. The SDK's own logger gets the same filter, a
last line of defence for anything it logs.

Server text is redacted before it enters an exception, an event or a log record (``redact(text, secrets)``): a
proxy that echoes the login form back in its error page would otherwise put the password into all three. Known
secrets (the password, a token we hold) are replaced wherever they appear — raw, URL-encoded, JSON- or
HTML-escaped — and so is the value of any ``password=`` field. A password is replaced by a plain marker, never
a fingerprint (a hash of a weak password can be brute-forced).
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from .lifecycle import fingerprint

__all__ = ["REDACTED", "SecretRedactingFilter", "install_log_redaction", "redact"]

#: What a known secret (a password) is replaced with.
REDACTED = "<redacted>"

_PATTERNS = (
    re.compile(r"(?P<lead>Bearer\s+)(?P<secret>[A-Za-z0-9\-._~+/]+=*)"),
    re.compile(r"(?P<lead>accessToken[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^&\s\"',)\]]+)", re.IGNORECASE),
    re.compile(r"(?P<lead>)(?P<secret>eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})"),
)
#: A password field's value (a form, a query, JSON, a log line): replaced by the plain marker.
_PASSWORD_FIELD = re.compile(r"(?P<lead>password[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^&\s\"',;)\]}]+)", re.IGNORECASE)
LOGGERS = ("nacos_token_client", "httpx", "httpcore", "httpcore.http11", "httpcore.http2", "httpcore.connection",
           "httpcore.proxy")


def _spellings(secret: str) -> set[str]:
    """The ways a secret shows up in echoed text: raw, URL-encoded (form and path style), JSON, HTML."""
    forms = {secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret), html.escape(secret, quote=False)}
    return {form for form in forms if form}


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every token-like value replaced by ``<redacted:fingerprint>``, every ``password=`` value and
    every spelling of each of ``secrets`` (passwords, tokens we know) replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            for form in sorted(_spellings(secret), key=len, reverse=True):
                text = text.replace(form, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group('lead')}<redacted:{fingerprint(m.group('secret'))}>", text)
    return _PASSWORD_FIELD.sub(lambda m: m.group("lead") + REDACTED, text)


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record's message when it contains a token; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging system's business, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = ()
        return True


_installed = False
_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Add the filter to the httpx/httpcore loggers (once per process)."""
    global _installed  # noqa: PLW0603 - once per process
    with _install_lock:
        if _installed:
            return
        shared = SecretRedactingFilter()
        for name in LOGGERS:
            logging.getLogger(name).addFilter(shared)
        _installed = True
