"""The DI/DO simulator: its Python API, its register map and its fault knobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from drivers.base import DeviceException, DeviceTimeout
from drivers.lines.modbus import ModbusLine
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink


@pytest.fixture
async def box() -> DiDoModule:
    return DiDoModule(5)


@pytest.fixture
async def line(box: DiDoModule) -> AsyncIterator[ModbusLine]:
    async with serve_tcp(box) as (host, port):
        config = ModbusTcpLine(type="modbus_tcp", host=host, port=port, timeout_ms=200)
        async with ModbusLine("sim", config) as line:
            yield line


def test_press_counts_rising_edges(box: DiDoModule) -> None:
    box.press(2)
    box.press(2)  # still pressed: no new edge
    assert (box.input(2), box.counter(2)) == (True, 1)
    box.release(2)
    box.release(2)
    box.press(2)
    assert (box.input(2), box.counter(2)) == (True, 2)
    assert box.counters() == [0, 0, 2, 0, 0, 0, 0, 0]


def test_press_counter_wraps_at_16_bits(box: DiDoModule) -> None:
    for _ in range(65537):
        box.press(0)
        box.release(0)
    assert box.counter(0) == 1


async def test_pulse(box: DiDoModule) -> None:
    pulse = asyncio.create_task(box.pulse(4, 20))
    await asyncio.sleep(0)
    assert box.input(4)
    await pulse
    assert (box.input(4), box.counter(4)) == (False, 1)


async def test_wait_coil(box: DiDoModule, line: ModbusLine) -> None:
    await box.wait_coil(0, False, timeout_s=0.01)  # already there: returns at once
    with pytest.raises(TimeoutError):
        await box.wait_coil(0, True, timeout_s=0.05)
    waiting = asyncio.create_task(box.wait_coil(1, True))
    await line.write_coil(5, 0, True)  # another coil does not wake it
    await asyncio.sleep(0)
    assert not waiting.done()
    await line.write_coil(5, 1, True)
    await waiting
    assert box.coils() == [True, True] + [False] * 6


async def test_register_map(box: DiDoModule, line: ModbusLine) -> None:
    box.press(7)
    assert await line.read("discrete_input", 5, 0, 8) == [False] * 7 + [True]
    assert await line.read("input_register", 5, 0, 8) == [0] * 7 + [1]
    assert await line.read("holding_register", 5, 0, 1) == [5]
    await line.write_coil(5, 7, True)
    assert await line.read("coil", 5, 0, 8) == [False] * 7 + [True]
    # pymodbus keeps bits in 16-bit words: 8..15 read as off, 16 and up are out of the map.
    assert await line.read("discrete_input", 5, 8, 8) == [False] * 8
    for request in (
        line.read("discrete_input", 5, 16, 1),
        line.read("coil", 5, 16, 1),
        line.write_coil(5, 8, True),
        line.read("input_register", 5, 8, 1),
        line.read("holding_register", 5, 1, 1),
        line.write_register(5, 0, 9),
    ):
        with pytest.raises(DeviceException) as info:
            await request
        assert info.value.exception_code == 2
    assert box.coils() == [False] * 7 + [True]


async def test_silent_module_ignores_writes(box: DiDoModule, line: ModbusLine) -> None:
    box.silent = True
    with pytest.raises(DeviceTimeout):
        await line.write_coil(5, 0, True)
    assert not box.coil(0)
    box.silent = False
    await line.write_coil(5, 0, True)
    assert box.coil(0)


async def test_delay_slows_the_answer(box: DiDoModule, line: ModbusLine) -> None:
    box.delay_ms = 60
    started = time.monotonic()
    await line.write_coil(5, 1, True)
    assert time.monotonic() - started >= 0.06
    assert box.coil(1)
    box.delay_ms = 400  # longer than the line's timeout
    with pytest.raises(DeviceTimeout):
        await line.read("coil", 5, 0, 1)
    # Leaving the server now cuts the pending delay short instead of leaking its task.


async def test_modules_share_one_rtu_line() -> None:
    boxes = {unit: DiDoModule(unit) for unit in (1, 2, 3)}
    async with (
        VirtualSerialLink() as link,
        serve_rtu(boxes, link.device_end, baudrate=19200),
        ModbusLine(
            "bus",
            ModbusRtuLine(type="modbus_rtu", port=link.host_end, baudrate=19200, timeout_ms=200),
        ) as line,
    ):
        boxes[2].press(1)
        await line.write_coil(3, 0, True)
        assert await line.read("discrete_input", 2, 0, 2) == [False, True]
        assert [await line.read("holding_register", u, 0, 1) for u in (1, 2, 3)] == [[1], [2], [3]]
        assert [b.coil(0) for b in boxes.values()] == [False, False, True]
        with pytest.raises(DeviceTimeout):  # nobody on the bus answers unit 4
            await line.read("coil", 4, 0, 1)


async def test_mapping_must_match_unit_ids() -> None:
    with pytest.raises(ValueError, match="unit with id 2 listed under 1"):
        async with serve_tcp({1: DiDoModule(2)}):
            pass
    with pytest.raises(ValueError, match=r"1\.\.247"):
        DiDoModule(0)
