"""bench/bare_poller.py is the floor under the demo gate's idle CPU only if it asks what the
gateway asks: the same units, tables, addresses and counts, at the same intervals. Checked here
against the gateway's own drivers, built from the demo gate's config and polled once each over
the demo's simulated devices (the line's read tap records every read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.base import DriverContext, PanicPress
from drivers.kinds import build_driver
from drivers.lines.modbus import ModbusLine
from edge_config.loader import load
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from gateway.core.events import DeviceRef, Event
from simulators.gate import gateway_config
from tests_support import load_bench

bare_poller = load_bench("bare_poller")

TABLES = {2: "discrete_input", 3: "holding_register", 4: "input_register"}
LINES = {"tcp": "booth_io", "rtu": "gate_bus", "door": "door_bus"}


class _NoPanic:
    async def panic_pressed(self, press: PanicPress) -> None:
        raise AssertionError(f"no button is pressed in this test: {press}")

    async def reset_pressed(self, device_id: str, *, occurred_at_ms: int) -> None:
        raise AssertionError("no reset in this test")


async def _keep(event: Event) -> Event:
    return event


@pytest.mark.timeout(60)
async def test_the_bare_poller_asks_what_the_gateway_asks(tmp_path: Path) -> None:
    async with bare_poller.demo_devices() as ends:
        path = tmp_path / "gate.toml"
        path.write_text(
            gateway_config(
                tmp_path,
                police_port=1883,
                bureau_port=1884,
                modbus_port=ends["tcp_port"],
                gate_bus=ends["rtu"],
                door_bus=ends["door"],
            )
        )
        config = load(path).config
        seen: set[tuple[str, int, str, int, int]] = set()
        lines: dict[str, ModbusLine] = {}
        for name, line_config in config.lines.items():
            if isinstance(line_config, ModbusTcpLine | ModbusRtuLine):
                line = ModbusLine(name, line_config)
                line.tap = lambda unit, table, address, values, n=name: seen.add(
                    (n, unit, table, address, len(values))
                )
                lines[name] = line
        intervals: dict[tuple[str, int], int] = {}
        for device_id, device in config.devices.items():
            unit = int(getattr(device, "unit_id", 0) or getattr(device, "address", 0))
            intervals[(device.line, unit)] = device.poll_interval_ms
            if device.line not in lines:
                continue  # the access controller: its POLL is checked below
            ctx = DriverContext(
                device=DeviceRef(device_id, device.kind, device.location),
                panic=_NoPanic(),
                emit=_keep,
                clock_ms=lambda: 0,
            )
            await build_driver(device, lines[device.line], ctx).poll_once()  # type: ignore[attr-defined]
        for line in lines.values():
            await line.close()
    modbus = [r for r in bare_poller.READS if r.function]
    assert seen == {(LINES[r.line], r.unit, TABLES[r.function], r.address, r.count) for r in modbus}
    assert {(LINES[r.line], r.unit): r.every_ms for r in bare_poller.READS} == intervals
