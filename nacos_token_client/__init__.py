"""Token handling for Nacos-style servers over httpx.

Log in once per identity, cache the token, refresh it in the background past 90 % of its life, drop it on demand
(``invalidate()``), and recover by itself when the server rejects it — sync and async, in one process or shared
across processes. The error tree is documented in :mod:`nacos_token_client.errors`.
"""

from .auth import NacosTokenAuth, TokenPlacement
from .client import AsyncNacosTokenClient, NacosTokenClient
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
from .protocol import RejectionKind, ServerAddress, classify_rejection
from .stores import FileTokenStore, MemoryTokenStore, RedisTokenStore, TokenStore

__version__ = "0.1.0"

__all__ = [
    "AsyncNacosTokenClient",
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
