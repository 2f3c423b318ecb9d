"""Checking options when an object is made, so a bad value fails at once with a message naming it.

A mistyped option found at the first request (or the first login, minutes later in a background refresh) costs far
more than one found at construction. Every check here raises :class:`~nacos_token_client.errors.ConfigurationError`
whose message starts with the option's name, and never repeats a value that may be a secret: values are shown only
by type for the options a caller marks ``secret``.
"""

from __future__ import annotations

import math
import os
import ssl
from typing import Any

import httpx

from .errors import ConfigurationError

__all__ = [
    "MAX_SECONDS",
    "check_bool",
    "check_callable",
    "check_has",
    "check_instance",
    "check_int",
    "check_number",
    "check_path",
    "check_text",
    "check_timeout",
    "check_verify",
]

#: The longest any wait, timeout or back-off may be: an hour. Longer ones are typos (ms for s), and past ~1e9
#: seconds the OS's timers overflow.
MAX_SECONDS = 3600.0


def _kind(value: object) -> str:
    return type(value).__name__


def check_number(name: str, value: object, *, low: float = 0.0, high: float = MAX_SECONDS,
                 low_inclusive: bool = True) -> float:
    """A finite int or float (not a bool, not a numeric string) in ``[low, high]`` (``(low, high]`` when
    ``low_inclusive`` is false)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number, not {_kind(value)} {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    above_low = value >= low if low_inclusive else value > low
    if not above_low or value > high:
        bracket = "[" if low_inclusive else "("
        raise ConfigurationError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_int(name: str, value: object, *, low: int, high: int) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, not {_kind(value)} {value!r}")
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be from {low} to {high}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """True or False, nothing merely truthy: ``"no"`` is truthy."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {_kind(value)} {value!r}")
    return value


def check_callable(name: str, value: object, *, optional: bool = False) -> None:
    """Something to call (or None when ``optional``)."""
    if value is None and optional:
        return
    if not callable(value):
        raise ConfigurationError(f"{name} must be callable, not {_kind(value)}")


def check_text(name: str, value: object, *, empty: bool = True, secret: bool = False) -> str:
    """A str without control characters (they would break a header or a form); ``empty=False`` refuses ``""``.
    A ``secret`` value is never repeated in the message."""
    shown = "" if secret else f" {value!r}"
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {_kind(value)}{'' if secret else shown}")
    if not empty and not value:
        raise ConfigurationError(f"{name} must not be empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ConfigurationError(f"{name} must not contain control characters (CR, LF, NUL …){shown}")
    return value


def check_path(name: str, value: object) -> str:
    """A URL path prefix such as ``/nacos``: no query, fragment, spaces or dot segments."""
    path = check_text(name, value)
    if any(ch in path for ch in "?#") or any(ch.isspace() for ch in path):
        raise ConfigurationError(f"{name} must be a plain path such as '/nacos' (no '?', '#' or spaces), "
                                 f"got {path!r}")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ConfigurationError(f"{name} must not contain '.' or '..' segments, got {path!r}")
    return path


def check_timeout(name: str, value: object) -> httpx.Timeout:
    """What ``httpx.Timeout`` takes (a number, None for none, a 4-tuple or an ``httpx.Timeout``), each phase
    positive and at most :data:`MAX_SECONDS`."""
    if isinstance(value, (bool, str)):
        raise ConfigurationError(f"{name} must be seconds (a number), None or an httpx.Timeout, not "
                                 f"{_kind(value)} {value!r}")
    try:
        timeout = httpx.Timeout(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name} must be seconds (a number), None or an httpx.Timeout: {exc}") from None
    for phase in ("connect", "read", "write", "pool"):
        seconds = getattr(timeout, phase)
        if seconds is not None:
            check_number(f"{name} ({phase})", seconds, low=0.0, low_inclusive=False)
    return timeout


def check_verify(name: str, value: object) -> None:
    """What httpx takes for TLS verification: a bool, an ``ssl.SSLContext``, or a CA bundle path."""
    if not isinstance(value, (bool, str, os.PathLike, ssl.SSLContext)):
        raise ConfigurationError(f"{name} must be True, False, an ssl.SSLContext or a CA bundle path, not "
                                 f"{_kind(value)}")


def check_instance(name: str, value: object, kind: type[Any] | tuple[type[Any], ...], what: str) -> None:
    """``value`` is a ``kind`` (``what`` names it for the message)."""
    if not isinstance(value, kind):
        raise ConfigurationError(f"{name} must be {what}, not {_kind(value)}")


def check_has(name: str, value: object, method: str, what: str) -> None:
    """``value`` has a callable ``method`` (duck typing, as httpx itself does for transports)."""
    if not callable(getattr(value, method, None)):
        raise ConfigurationError(f"{name} must be {what} (with a {method}() method), not {_kind(value)}")

