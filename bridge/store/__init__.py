"""The gateway's own store (SQLite by default, PostgreSQL for replicas)."""

from bridge.store.core import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
