"""Generic Modbus points against a simulated register bank, over Modbus TCP and RTU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from driver_support import Recorder, modbus_line, running
from drivers.base import CommandError
from drivers.lines.modbus import ModbusLine
from drivers.modbus_points import ModbusPoints
from edge_config.devices_modbus import ModbusPointsDevice
from gateway.core.events import DeviceRef, Lane, Severity
from simulators.registers import RegisterBank

pytestmark = pytest.mark.timeout(30)
UNIT = 9
POINTS: list[dict[str, Any]] = [
    {
        "name": "cabinet_temp",
        "function": "input_register",
        "address": 0,
        "data_type": "float32",
        "unit": "°C",
        "deadband": 0.5,
    },
    {
        "name": "supply_voltage",
        "function": "holding_register",
        "address": 10,
        "scale": 0.1,
        "unit": "V",
        "report": "both",
        "interval_ms": 150,
        "deadband": 1.0,
    },
    {
        "name": "door_open",
        "function": "holding_register",
        "address": 11,
        "data_type": "bool",
        "bit": 3,
    },
    {"name": "beacon", "function": "coil", "address": 0},
    {"name": "mains_ok", "function": "discrete_input", "address": 5},
    {
        "name": "energy",
        "function": "input_register",
        "address": 2,
        "data_type": "uint32",
        "word_order": "little",
        "unit": "Wh",
        "report": "interval",
        "interval_ms": 100,
    },
    {
        "name": "offset_temp",
        "function": "input_register",
        "address": 4,
        "data_type": "int16",
        "scale": 0.5,
        "offset": -20,
    },
]


def points_config(points: list[dict[str, Any]] = POINTS, **overrides: Any) -> ModbusPointsDevice:
    values: dict[str, Any] = {
        "kind": "modbus_points",
        "line": "io",
        "unit_id": UNIT,
        "poll_interval_ms": 20,
        "offline_after_ms": 300,
        "points": points,
    }
    return ModbusPointsDevice.model_validate(values | overrides)


@pytest.fixture(params=["tcp", "rtu"])
async def bank(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RegisterBank, ModbusLine]]:
    sim = RegisterBank(UNIT)
    sim.set_value("input_register", 0, 21.5, "float32")
    sim.set_value("holding_register", 10, 2301)
    sim.holding[11] = 0b1000
    sim.coils[0] = True
    sim.set_value("input_register", 2, 70_000, "uint32", word_order="little")
    sim.set_value("input_register", 4, 100, "int16")
    async with modbus_line(str(request.param), sim) as line:
        yield sim, line


def by_name(events: Recorder) -> dict[str, list[tuple[object, str]]]:
    found: dict[str, list[tuple[object, str]]] = {}
    for event in events.of("telemetry.point"):
        found.setdefault(event.data["name"], []).append((event.data["value"], event.data["reason"]))
    return found


async def test_first_poll_reports_every_point_decoded(
    bank: tuple[RegisterBank, ModbusLine],
) -> None:
    _, line = bank
    events = Recorder()
    driver = ModbusPoints(points_config(), line, events.context(DeviceRef("m", "modbus_points")))
    await driver.poll_once()
    assert {e.data["name"]: (e.data["value"], e.data["unit"]) for e in events.events} == {
        "cabinet_temp": (21.5, "°C"),
        "supply_voltage": (230.1, "V"),
        "door_open": (True, ""),
        "beacon": (True, ""),
        "mains_ok": (False, ""),
        "energy": (70_000, "Wh"),
        "offset_temp": (30.0, ""),
    }
    assert {e.data["reason"] for e in events.events} == {"initial"}
    assert all(e.lane == Lane.TELEMETRY and e.severity == Severity.INFO for e in events.events)


async def test_changes_are_reported_beyond_the_deadband(
    bank: tuple[RegisterBank, ModbusLine],
) -> None:
    sim, line = bank
    events = Recorder()
    only_changes = [p for p in POINTS if p.get("report", "on_change") == "on_change"]
    driver = ModbusPoints(
        points_config(only_changes), line, events.context(DeviceRef("m", "modbus_points"))
    )
    await driver.poll_once()
    sim.set_value("input_register", 0, 21.9, "float32")  # within 0.5 of 21.5: quiet
    await driver.poll_once()
    sim.set_value("input_register", 0, 22.1, "float32")  # 0.6 from the last reported value
    sim.holding[11] = 0b0000
    sim.discrete_inputs[5] = True
    await driver.poll_once()
    await driver.poll_once()  # nothing changed since
    found = by_name(events)
    assert found["cabinet_temp"] == [(21.5, "initial"), (22.1, "change")]
    assert found["door_open"] == [(True, "initial"), (False, "change")]
    assert found["mains_ok"] == [(False, "initial"), (True, "change")]
    assert found["beacon"] == [(True, "initial")]
    assert driver.values["cabinet_temp"] == 22.1


async def test_interval_reports_come_without_a_change(
    bank: tuple[RegisterBank, ModbusLine],
) -> None:
    sim, line = bank
    events = Recorder()
    driver = ModbusPoints(points_config(), line, events.context(DeviceRef("m", "modbus_points")))
    async with running(driver):
        await events.wait("telemetry.point", lambda e: e.data["reason"] == "interval")
        await events.wait(
            "telemetry.point",
            lambda e: e.data["name"] == "supply_voltage" and e.data["reason"] == "interval",
        )
        sim.set_value("holding_register", 10, 2400)  # +9.9 V: beyond the 1 V deadband
        changed = await events.wait("telemetry.point", lambda e: e.data["reason"] == "change")
    assert changed.data["name"] == "supply_voltage" and changed.data["value"] == 240.0
    assert {name for name, _ in by_name(events).items()} >= {"energy", "supply_voltage"}
    assert all(reason != "change" for _, reason in by_name(events)["energy"])


async def test_a_refused_block_skips_its_points_and_keeps_the_device_online(
    bank: tuple[RegisterBank, ModbusLine],
) -> None:
    _, line = bank
    events = Recorder()
    points = [
        {"name": "real", "function": "holding_register", "address": 10},
        {"name": "misconfigured", "function": "holding_register", "address": 500},
    ]
    driver = ModbusPoints(
        points_config(points), line, events.context(DeviceRef("m", "modbus_points"))
    )
    with capture_logs() as logs:
        await driver.poll_once()
        await driver.poll_once()
    assert [e.data["name"] for e in events.events] == ["real"]
    mine = [entry["event"] for entry in logs if entry["event"].startswith("points_")]
    assert mine == ["points_block_refused"]  # once, not on every poll
    assert driver.health.online is True


async def test_silent_device_goes_offline_and_back(bank: tuple[RegisterBank, ModbusLine]) -> None:
    sim, line = bank
    events = Recorder()
    driver = ModbusPoints(points_config(), line, events.context(DeviceRef("m", "modbus_points")))
    async with running(driver):
        sim.silent = True
        await events.wait("device.offline")
        sim.silent = False
        await events.wait("device.online")
    with pytest.raises(CommandError):
        await driver.command("write", {})
