"""Keep tokens out of other libraries' log records.

At DEBUG, httpcore logs every response's headers, and a Nacos login answer carries ``Authorization: Bearer
<token>``. With ``token_placement="query"``, httpx's INFO request lines carry ``accessToken=<token>``. The first
``NacosTokenAuth`` therefore adds a filter to the ``httpx`` and ``httpcore`` loggers that replaces bearer values,
``accessToken`` parameters and JWT-shaped strings with a fingerprint. A filter runs only for records that are
actually logged, so it costs nothing while those loggers are quiet.
"""

from __future__ import annotations

import logging
import re
import threading

from .lifecycle import fingerprint

__all__ = ["SecretRedactingFilter", "install_log_redaction", "redact"]

_PATTERNS = (
    re.compile(r"(?P<lead>Bearer\s+)(?P<secret>[A-Za-z0-9\-._~+/]+=*)"),
    re.compile(r"(?P<lead>accessToken[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^&\s\"',)\]]+)", re.IGNORECASE),
    re.compile(r"(?P<lead>)(?P<secret>eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})"),
)
LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy")


def redact(text: str) -> str:
    """``text`` with every token-like value replaced by ``<redacted:fingerprint>``."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group('lead')}<redacted:{fingerprint(m.group('secret'))}>", text)
    return text


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
