"""Generic Modbus points: any device's registers and bits mapped to named values in config
(docs/drivers/modbus_points.md), so a new device needs config, not code.

Owns the poll loop of one unit's points: reading them in as few requests as the addresses allow,
decoding (`drivers.codecs`), and reporting `telemetry.point` events on change beyond a deadband,
every `interval_ms`, or both (plus `device.offline` / `device.online`). A block the device
refuses with an exception response is logged once and its points skipped: the device is alive,
the config is wrong. It does not own the line and does not write to devices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.base import CommandError, DeviceException, DriverContext
from drivers.codecs import (
    BIT_LIMIT,
    REGISTER_LIMIT,
    decode_words,
    plan_reads,
    register_bit,
    scale_value,
)
from drivers.lines.modbus import ModbusLine
from drivers.polling import PolledDriver, read_table
from edge_config.devices_modbus import BIT_FUNCTIONS, Function, ModbusPoint, ModbusPointsDevice
from gateway.core.events import Severity

Value = bool | int | float | None
"""None: a float register holds NaN or infinity, which JSON cannot carry."""


@dataclass(slots=True)
class _Reported:
    value: Value
    next_interval_at: float
    """time.monotonic() when the next interval report is due."""


def decode_point(point: ModbusPoint, words: list[int]) -> Value:
    """The value of `point` from the items read at its address (bits as 0 / 1)."""
    if point.function in BIT_FUNCTIONS:
        return bool(words[0])
    if point.bit is not None:
        return register_bit(words[0], point.bit)
    raw = decode_words(words, point.type, byte_order=point.byte_order, word_order=point.word_order)
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    return scale_value(raw, point.scale, point.offset)


def changed(point: ModbusPoint, value: Value, last: Value) -> bool:
    if isinstance(value, bool) or value is None or last is None or isinstance(last, bool):
        return value != last
    return abs(value - last) > (point.deadband or 0.0)


class ModbusPoints(PolledDriver[ModbusPointsDevice, ModbusLine]):
    kind = "modbus_points"

    def __init__(self, config: ModbusPointsDevice, line: ModbusLine, ctx: DriverContext) -> None:
        super().__init__(config, line, ctx)
        self._points = config.resolved_points()
        spans: dict[Function, list[tuple[int, int]]] = {}
        for point in self._points:
            spans.setdefault(point.function, []).append((point.address, point.register_count))
        self._plan = [
            (function, start, count)
            for function, wanted in spans.items()
            for start, count in plan_reads(
                wanted, max_count=BIT_LIMIT if function in BIT_FUNCTIONS else REGISTER_LIMIT
            )
        ]
        self._refused: set[tuple[Function, int, int]] = set()
        self._reported: dict[str, _Reported] = {}
        self.values: dict[str, Value] = {}
        """The latest value of every point read so far."""

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        raise CommandError("modbus_points takes no commands (points are read-only)")

    async def poll_once(self) -> None:
        items: dict[tuple[str, int], int] = {}
        for block in self._plan:
            function, start, count = block
            try:
                words = await read_table(self._line, self._cfg.unit_id, function, start, count)
            except DeviceException as exc:
                if block not in self._refused:
                    self._refused.add(block)
                    self._log.warning(
                        "points_block_refused",
                        function=function,
                        address=start,
                        count=count,
                        error=str(exc),
                    )
                continue
            if block in self._refused:
                self._refused.discard(block)
                self._log.info("points_block_readable", function=function, address=start)
            items.update({(function, start + i): w for i, w in enumerate(words)})
        await self._health.answered()
        now = time.monotonic()
        for point in self._points:
            keys = [(point.function, point.address + i) for i in range(point.register_count)]
            if all(k in items for k in keys):
                await self._consider(point, decode_point(point, [items[k] for k in keys]), now)

    async def _consider(self, point: ModbusPoint, value: Value, now: float) -> None:
        self.values[point.name] = value
        last = self._reported.get(point.name)
        interval_s = (point.interval_ms or 0) / 1000
        if last is None:
            reason = "initial"
        elif point.report != "interval" and changed(point, value, last.value):
            reason = "change"
        elif point.report != "on_change" and now >= last.next_interval_at:
            reason = "interval"
        else:
            return
        if last is None or reason == "change" or now >= last.next_interval_at + interval_s:
            next_at = now + interval_s  # start (or restart, after a change) the interval
        else:
            next_at = last.next_interval_at + interval_s  # keep the cadence, do not drift
        self._reported[point.name] = _Reported(value, next_at)
        await self._health.emit(
            "telemetry.point",
            Severity.INFO,
            name=point.name,
            value=value,
            unit=point.unit,
            reason=reason,
        )
