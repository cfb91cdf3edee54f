"""The bridge's local SQLite store."""

from bridge.store.db import SCHEMA_VERSION, Store, StoreError, now_ms

__all__ = ["Store", "StoreError", "SCHEMA_VERSION", "now_ms"]
