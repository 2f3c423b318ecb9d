"""Token handling for Nacos-style servers over httpx.

Log in once per identity, cache the token, refresh it in the background past 90 % of its life, drop it on demand
(``invalidate()``), and recover by itself when the server rejects it — sync and async, in one process or shared
across processes. On top of it the wrapper clients watch configs (one long poll, every change delivered once) and
keep service instances registered (heartbeats at the server's interval) through rotations, restarts and fail-over.
The error tree is documented in :mod:`nacos_token_client.errors`.
"""

import logging

from .auth import NacosTokenAuth, TokenPlacement
from .client import AsyncNacosTokenClient, AsyncRegistration, NacosTokenClient, Registration
from .config import ConfigChange, ConfigWatch, WatchSettings
from .errors import (
    AuthenticationError,
    ConfigurationError,
    LoginResponseError,
    LoginUnavailableError,
    NacosTokenError,
    PermissionDeniedError,
    RequestFailedError,
    StoreError,
)
from .events import AuthStats, TokenEvent
from .lifecycle import RefreshPolicy, RefreshReason, Token, TokenInfo, Zone
from .naming import Instance
from .protocol import RejectionKind, ServerAddress, classify_rejection
from .stores import FileTokenStore, MemoryTokenStore, RedisTokenStore, TokenStore

__version__ = "0.1.0"

# A library does not decide where log records go: without this, a program that never configured logging would get
# our warnings on stderr through logging's last-resort handler. Configure logging (or add a handler) to see them.
logging.getLogger("nacos_token_client").addHandler(logging.NullHandler())

__all__ = [
    "AsyncNacosTokenClient",
    "AsyncRegistration",
    "ConfigChange",
    "ConfigWatch",
    "Instance",
    "Registration",
    "WatchSettings",
    "AuthStats",
    "AuthenticationError",
    "ConfigurationError",
    "LoginResponseError",
    "LoginUnavailableError",
    "FileTokenStore",
    "MemoryTokenStore",
    "NacosTokenAuth",
    "NacosTokenClient",
    "NacosTokenError",
    "PermissionDeniedError",
    "RefreshPolicy",
    "RedisTokenStore",
    "RefreshReason",
    "RejectionKind",
    "RequestFailedError",
    "ServerAddress",
    "StoreError",
    "Token",
    "TokenEvent",
    "TokenInfo",
    "TokenPlacement",
    "TokenStore",
    "Zone",
    "__version__",
    "classify_rejection",
]
