"""A device's small persistent values on the store (`drivers.base.DeviceMemory`).

Owns the `device:<id>:<key>` names in the store's `meta` table. Writes are bookkeeping (no fsync
of their own) and never raise: a full disk (or a file not open yet: nothing is recalled) only
means the value is re-learned after a restart. The statements are `sql`'s; the file is `db`'s.
"""

from __future__ import annotations

import contextlib

from gateway.store import sql
from gateway.store.db import STORAGE_ERRORS, Store, StoreError


class DeviceStore:
    def __init__(self, store: Store, device_id: str) -> None:
        self._store = store
        self._prefix = f"device:{device_id}:"

    async def recall(self, key: str) -> int | None:
        name = self._prefix + key

        try:
            return await self._store.call(lambda db: sql.recall(db, name))
        except StoreError:  # the file cannot be opened yet: re-learned, as after a full disk
            return None

    async def remember(self, key: str, value: int) -> None:
        name = self._prefix + key

        with contextlib.suppress(*STORAGE_ERRORS, StoreError):
            await self._store.call(lambda db: sql.remember(db, name, value))
