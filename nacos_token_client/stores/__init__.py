"""Token stores: memory (default, process-wide), a file (one machine), Redis (a fleet)."""

from .base import AsyncFleetBackOffStore, AsyncTokenStore, FleetBackOff, FleetBackOffStore, TokenStore
from .file import FileTokenStore
from .memory import MemoryTokenStore, default_store
from .redis import RedisTokenStore

__all__ = [
    "AsyncFleetBackOffStore",
    "AsyncTokenStore",
    "FileTokenStore",
    "FleetBackOff",
    "FleetBackOffStore",
    "MemoryTokenStore", "RedisTokenStore", "TokenStore", "default_store"]
