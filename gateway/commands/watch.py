"""The live monitor behind `schoolgate watch`: what the daemon reads, as the daemon reads it.

Owns the fan-out from the daemon's parts to whoever watches over the control socket: each Modbus
read a line makes (through the line's read tap: inputs, coils, registers, by the device at that
unit), kept only when the values changed, and each event a driver stores (the access
controller's cards and doors, a bollard's moves). A new watcher first gets the last values read
of every device it watches, then the changes. A slow watcher never slows the daemon: its queue is
bounded and what overflows is dropped and counted (the next item says how many). It reads no
line itself (no second master on a bus), stores nothing, and does not serve the socket
(gateway.commands.control streams what `subscribe` yields).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from gateway.core import contract
from gateway.core.events import Event

Item = dict[str, Any]
QUEUE_SIZE = 1_000
"""Items a watcher may fall behind by before the oldest are dropped (a terminal reading a busy
gate falls behind only when scrolled or paused)."""


class _Watcher:
    def __init__(self, device: str | None, size: int) -> None:
        self.device = device
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, item: Item) -> None:
        if self.device is not None and item["device"] != self.device:
            return
        if self.dropped:
            item = {**item, "dropped": self.dropped}
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
        else:
            self.dropped = 0


class WatchHub:
    def __init__(
        self,
        units: Mapping[tuple[str, int], str],
        tz: ZoneInfo,
        clock_ms: Callable[[], int],
        *,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        """`units`: (line name, unit id) -> device id, for the Modbus devices."""
        self._units = dict(units)
        self._tz = tz
        self._clock_ms = clock_ms
        self._queue_size = queue_size
        self._last: dict[tuple[str, str, int], Item] = {}
        """(device, table, address) -> the last read of it, for a new watcher's first view."""
        self._watchers: set[_Watcher] = set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def line_tap(self, line: str) -> Callable[[int, str, int, Sequence[int]], None]:
        """What a Modbus line calls with each read it made: `(unit, table, address, values)`."""

        def tap(unit: int, table: str, address: int, values: Sequence[int]) -> None:
            self.reading(line, unit, table, address, values)

        return tap

    def reading(
        self, line: str, unit: int, table: str, address: int, values: Sequence[int]
    ) -> None:
        device = self._units.get((line, unit))
        if device is None:
            return  # a unit no device is configured at (a scan, a doctor probe): not ours
        key = (device, table, address)
        last = self._last.get(key)
        # Every poll of every device comes here: an unchanged read (True == 1) costs one compare.
        if last is not None and last["values"] == values:
            return
        values = [int(v) for v in values]
        changed = (
            list(range(len(values)))
            if last is None or len(last["values"]) != len(values)
            else [i for i, (a, b) in enumerate(zip(last["values"], values, strict=True)) if a != b]
        )
        item: Item = {
            "kind": "read",
            "device": device,
            "table": table,
            "address": address,
            "values": values,
            "changed": changed,
            "at": contract.iso_ms(self._clock_ms(), self._tz),
        }
        self._last[key] = item
        self._offer(item)

    def event(self, event: Event) -> None:
        """An event stored for a device (cards, doors, bollards, alarms, online/offline)."""
        if not self._watchers:  # every stored event comes here; nobody to show it to
            return
        self._offer(
            {
                "kind": "event",
                "device": event.device.id,
                "type": event.type,
                "data": event.data,
                "at": contract.iso_ms(event.occurred_at_ms, self._tz),
            }
        )

    async def subscribe(self, device: str | None) -> AsyncGenerator[Item, None]:
        """The last reads of `device` (None: of every device), then each change, until closed."""
        watcher = _Watcher(device, self._queue_size)
        for item in self._last.values():
            watcher.offer({**item, "changed": []})
        self._watchers.add(watcher)
        try:
            while True:
                yield await watcher.queue.get()
        finally:
            self._watchers.discard(watcher)

    def _offer(self, item: Item) -> None:
        for watcher in self._watchers:
            watcher.offer(item)
