"""ModbusLine against the DI/DO simulator, over TCP and over RTU through a virtual serial cable."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from modbus_far_end import rtu_far_end, tcp_far_end
from structlog.testing import capture_logs

from drivers.base import DeviceException, DeviceProtocolError, DeviceTimeout, LineError
from drivers.lines import port_check
from drivers.lines.modbus import LineStats, ModbusLine, inter_frame_gap_s
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

TIMEOUT_MS = 200


@dataclass
class Rig:
    line: ModbusLine
    box1: DiDoModule
    box2: DiDoModule
    link: VirtualSerialLink | None  # only on RTU


@contextlib.asynccontextmanager
async def make_rig(kind: str) -> AsyncIterator[Rig]:
    box1, box2 = DiDoModule(1), DiDoModule(2)
    units = {1: box1, 2: box2}
    async with AsyncExitStack() as stack:
        link: VirtualSerialLink | None = None
        config: ModbusTcpLine | ModbusRtuLine
        if kind == "tcp":
            host, port = await stack.enter_async_context(serve_tcp(units))
            config = ModbusTcpLine(type="modbus_tcp", host=host, port=port, timeout_ms=TIMEOUT_MS)
        else:
            link = await stack.enter_async_context(VirtualSerialLink(baudrate=9600))
            await stack.enter_async_context(serve_rtu(units, link.device_end, baudrate=9600))
            config = ModbusRtuLine(type="modbus_rtu", port=link.host_end, timeout_ms=TIMEOUT_MS)
        line = await stack.enter_async_context(ModbusLine(kind, config))
        yield Rig(line, box1, box2, link)


@pytest.fixture(params=["tcp", "rtu"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async with make_rig(request.param) as made:
        yield made


@pytest.fixture
async def rtu_rig() -> AsyncIterator[Rig]:
    """Frames can be corrupted on the virtual serial cable only."""
    async with make_rig("rtu") as made:
        yield made


@pytest.mark.parametrize(
    ("baudrate", "bytesize", "parity", "stopbits", "expected_ms"),
    [
        (9600, 8, "N", 1, 3.5 * 10 / 9.6),
        (9600, 8, "E", 1, 3.5 * 11 / 9.6),
        (9600, 8, "N", 2, 3.5 * 11 / 9.6),
        (1200, 7, "O", 2, 3.5 * 11 / 1.2),
        (19200, 8, "N", 1, 3.5 * 10 / 19.2),
        (38400, 8, "N", 1, 1.75),
        (115200, 8, "E", 2, 1.75),
    ],
)
def test_inter_frame_gap(
    baudrate: int, bytesize: int, parity: str, stopbits: int, expected_ms: float
) -> None:
    gap_s = inter_frame_gap_s(baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
    assert gap_s * 1000 == pytest.approx(expected_ms)


async def test_reads_and_writes(rig: Rig) -> None:
    rig.box1.press(3)
    rig.box2.press(0)
    assert await rig.line.read("discrete_input", 1, 0, 8) == [False] * 3 + [True] + [False] * 4
    assert await rig.line.read("discrete_input", 2, 0, 2) == [True, False]
    assert await rig.line.read("input_register", 1, 3, 1) == [1]
    assert await rig.line.read("holding_register", 2, 0, 1) == [2]

    await rig.line.write_coil(1, 1, True)
    assert rig.box1.coils() == [False, True] + [False] * 6
    assert rig.box2.coils() == [False] * 8
    assert await rig.line.read("coil", 1, 0, 3) == [False, True, False]
    await rig.line.write_coil(1, 1, False)
    assert not rig.box1.coil(1)
    assert rig.line.stats == LineStats(requests=7, failures=0, timeouts=0)


async def test_exception_response(rig: Rig) -> None:
    with pytest.raises(DeviceException) as info:
        await rig.line.read("input_register", 1, 8, 1)  # one past the 8 press counters
    assert (info.value.unit, info.value.function_code, info.value.exception_code) == (1, 4, 2)
    with pytest.raises(DeviceException) as info:
        await rig.line.write_register(2, 0, 7)  # the address register is read-only
    assert (info.value.function_code, info.value.exception_code) == (6, 2)
    assert await rig.line.read("holding_register", 1, 0, 1) == [1]


async def test_silent_unit_times_out_and_line_keeps_working(rig: Rig) -> None:
    rig.box2.silent = True
    for _ in range(6):  # more than pymodbus's own "disconnect after retries+3 silences"
        with pytest.raises(DeviceTimeout):
            await rig.line.read("discrete_input", 2, 0, 8)
    assert await rig.line.read("holding_register", 1, 0, 1) == [1]
    rig.box2.silent = False
    assert await rig.line.read("holding_register", 2, 0, 1) == [2]
    assert rig.line.stats == LineStats(requests=8, failures=6, timeouts=6)


async def test_late_answer_does_not_confuse_next_request(rig: Rig) -> None:
    rig.box1.delay_ms = TIMEOUT_MS + 100
    with pytest.raises(DeviceTimeout):
        await rig.line.read("holding_register", 1, 0, 1)
    # Unit 1's answer arrives while unit 2 is being asked; it must not be taken for unit 2's.
    assert await rig.line.read("holding_register", 2, 0, 1) == [2]
    assert await rig.line.read("holding_register", 2, 0, 1) == [2]


async def test_unknown_unit_times_out(rig: Rig) -> None:
    with pytest.raises(DeviceTimeout):
        await rig.line.read("coil", 9, 0, 1)


async def test_concurrent_requests_are_serialised(rig: Rig) -> None:
    rig.box1.press(0)
    rig.box2.press(7)
    results = await asyncio.gather(
        *(rig.line.read("discrete_input", 1 + i % 2, 0, 8) for i in range(10))
    )
    assert results[0::2] == [[True] + [False] * 7] * 5
    assert results[1::2] == [[False] * 7 + [True]] * 5


async def test_a_cancel_that_meets_the_answer_is_never_lost(rig: Rig) -> None:
    """Regression: pymodbus waits for the answer with asyncio.wait_for, which on Python 3.11
    returns the answer and drops a cancel that arrives in the same loop turn (fixed in 3.12).
    A driver loop then polled on through the gateway's shutdown, which hung. Cancels are
    thrown at random moments of a busy poll; every one must end the task."""
    rng = random.Random(7)
    # A round trip: ~1 ms over TCP, ~25 ms at 9600 baud. Cancels land all over it.
    spread_s = 0.004 if rig.link is None else 0.05

    async def poll() -> None:
        while True:
            await rig.line.read("discrete_input", 1, 0, 8)

    for _ in range(60):
        task = asyncio.create_task(poll())
        await asyncio.sleep(rng.uniform(0.0005, spread_s))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:  # clean up before failing, or the task outlives the test
            task.cancel()
            await asyncio.wait({task})
        assert done, "a cancel was swallowed: the poll went on"
        assert task.cancelled()
    assert await rig.line.read("discrete_input", 1, 0, 8) == [False] * 8  # the line still works


async def test_corrupted_answer_then_recovery(rtu_rig: Rig) -> None:
    rig = rtu_rig
    assert rig.link is not None
    rig.link.corrupt_next("to_host")
    with pytest.raises(DeviceProtocolError):  # bytes came back, but no valid frame
        await rig.line.read("coil", 1, 0, 8)
    assert await rig.line.read("holding_register", 1, 0, 1) == [1]
    rig.link.drop("to_device", True)
    with pytest.raises(DeviceTimeout):  # nothing came back at all
        await rig.line.read("coil", 1, 0, 8)
    rig.link.drop("to_device", False)
    assert await rig.line.read("holding_register", 1, 0, 1) == [1]


async def test_failure_logged_once_per_state_change(rig: Rig) -> None:
    await rig.line.close()  # a serial port has one owner: pymodbus opens it exclusively
    with capture_logs() as logs:
        line = ModbusLine("logged", rig.line._config, log=structlog.get_logger())
        async with line:
            rig.box2.silent = True
            for _ in range(3):
                with pytest.raises(DeviceTimeout):
                    await line.read("coil", 2, 0, 1)
                await line.read("coil", 1, 0, 1)  # another unit's success is not unit 2's recovery
            rig.box2.silent = False
            await line.read("coil", 2, 0, 1)
            await line.read("coil", 2, 0, 1)
    events = [(e["event"], e["unit"]) for e in logs if e["log_level"] != "debug"]
    assert events == [("modbus_unit_failing", 2), ("modbus_unit_recovered", 2)]


async def test_tcp_server_gone_then_back() -> None:
    box = DiDoModule(1)
    async with serve_tcp(box) as (host, port):
        config = ModbusTcpLine(type="modbus_tcp", host=host, port=port, timeout_ms=TIMEOUT_MS)
        line = ModbusLine("tcp", config)
        await line.connect()
        assert await line.read("holding_register", 1, 0, 1) == [1]
    with pytest.raises(LineError):  # the connection is gone
        await line.read("holding_register", 1, 0, 1)
    with pytest.raises(LineError):  # and reconnecting is refused
        await line.read("holding_register", 1, 0, 1)
    async with serve_tcp(box, host, port):
        assert await line.read("holding_register", 1, 0, 1) == [1]  # reconnects on demand
        await line.close()
        with pytest.raises(LineError):
            await line.read("holding_register", 1, 0, 1)
    assert line.stats.failures == 3


async def test_cannot_open() -> None:
    async with serve_tcp(DiDoModule(1)) as (host, port):
        pass  # the port is free again
    tcp = ModbusLine("tcp", ModbusTcpLine(type="modbus_tcp", host=host, port=port))
    with pytest.raises(LineError):
        await tcp.connect()
    rtu = ModbusLine("rtu", ModbusRtuLine(type="modbus_rtu", port="/dev/does-not-exist"))
    # The reason (the kernel's words) and what to check, not just "cannot open" (issue 13).
    with pytest.raises(LineError, match="No such file or directory: check that the USB-RS485"):
        await rtu.read("coil", 1, 0, 1)
    await tcp.close()
    await rtu.close()


async def test_serial_port_vanishes() -> None:
    box = DiDoModule(1)
    async with VirtualSerialLink() as link:
        config = ModbusRtuLine(type="modbus_rtu", port=link.host_end, timeout_ms=TIMEOUT_MS)
        line = ModbusLine("usb", config)
        async with serve_rtu(box, link.device_end):
            assert await line.read("holding_register", 1, 0, 1) == [1]  # opens on demand
    # The cable and its ptys are gone, like an unplugged USB adapter.
    for _ in range(2):
        with pytest.raises(LineError):
            await line.read("holding_register", 1, 0, 1)
    await line.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["tcp", "rtu"])
async def test_close_fails_the_request_on_the_wire_at_once(kind: str) -> None:
    """Closing does not wait behind a request; the request then fails with LineError at once,
    not at its deadline (30 s here, the longest allowed: only the close can end it in time)."""
    arrived = asyncio.Event()

    async def never_answer(_request: bytes, _write: Callable[[bytes], object]) -> None:
        arrived.set()

    far_end = tcp_far_end if kind == "tcp" else rtu_far_end
    async with far_end(never_answer, timeout_ms=30_000) as config:
        line = ModbusLine(kind, config)
        await line.connect()
        request = asyncio.create_task(line.read("coil", 1, 0, 1))
        await arrived.wait()
        await line.close()
        with pytest.raises(LineError):
            await request


async def test_missing_serial_port_is_logged_with_its_reason() -> None:
    """The line's one failure log line says why the port would not open and what to check."""
    rtu = ModbusLine("bus", ModbusRtuLine(type="modbus_rtu", port="/dev/ttyUSB-not-plugged"))
    with capture_logs() as logs, pytest.raises(LineError):
        await rtu.read("coil", 1, 0, 1)
    await rtu.close()
    failing = [entry for entry in logs if entry["event"] == "modbus_line_failing"]
    assert len(failing) == 1
    assert "No such file or directory" in failing[0]["error"]
    assert "/dev/serial/by-id/" in failing[0]["error"]


def test_port_check_names_the_fix_for_each_error(tmp_path: Path) -> None:
    """A path that is no tty, one we may not open, and one that does not exist each get their
    own hint; a port that opens has no failure."""
    not_a_tty = tmp_path / "plain-file"
    not_a_tty.write_bytes(b"")
    assert port_check.open_failure(str(not_a_tty)) is None  # it opens: nothing to say
    assert "plugged in" in (port_check.open_failure(str(tmp_path / "ttyUSB9")) or "")
    assert "dialout" in port_check.describe(PermissionError(errno.EACCES, "Permission denied"))
    assert "another program" in port_check.describe(OSError(errno.EBUSY, "Device busy"))
    assert "check the adapter" in port_check.describe(OSError(errno.EIO, "I/O error"))
