"""Token stores: memory (default, process-wide)."""

from .base import TokenStore
from .memory import MemoryTokenStore, default_store

__all__ = ["MemoryTokenStore", "TokenStore", "default_store"]
