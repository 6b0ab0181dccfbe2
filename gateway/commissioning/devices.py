"""Doctor's device steps: does each Modbus device answer at its unit id, and does every register
or input the config names read. One request per point, each bounded by a timeout.

Owns the list of reads a device's config implies (`planned_reads`) and turning driver errors into
steps with a fix. It talks through the drivers' own line class (`drivers.lines.modbus.ModbusLine`),
so the bytes on the wire are the daemon's. It never writes to a device. Access controllers speak
their own protocol on a serial line and are not probed here (their port is checked by the serial
steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from drivers.base import DeviceException, DeviceTimeout, DriverError, LineError
from drivers.lines.modbus import ModbusLine
from edge_config.devices_modbus import (
    BollardDevice,
    BollardSocketsDevice,
    Function,
    ModbusPointsDevice,
)
from edge_config.models import AlarmBoxDevice, GatewayConfig, ModbusRtuLine, ModbusTcpLine
from gateway.commissioning.report import Report

ModbusDevice = AlarmBoxDevice | BollardDevice | BollardSocketsDevice | ModbusPointsDevice

NEIGHBOUR_IDS = range(1, 11)
"""When a unit does not answer, these ids are tried on the same line (not those configured): an
answer there points at a wrong unit id rather than a dead device."""
NEIGHBOUR_TIMEOUT_MS = 150


def quiet_log() -> structlog.typing.FilteringBoundLogger:
    """For lines that probe ids expected to be silent: their timeouts are findings, not
    warnings, so only errors are logged."""
    quiet: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.get_logger(), wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR)
    )
    return quiet


_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}


@dataclass(frozen=True, slots=True)
class PlannedRead:
    label: str
    """What the config calls it, e.g. `buttons[0].input 0`."""
    function: Function
    address: int
    count: int = 1


def planned_reads(device: ModbusDevice) -> list[PlannedRead]:
    """Every point the config names for this device, as one read each."""
    if isinstance(device, AlarmBoxDevice):
        return _alarm_box_reads(device)
    if isinstance(device, BollardDevice):
        return _bollard_reads(device)
    if isinstance(device, BollardSocketsDevice):
        return [
            PlannedRead(f"sockets[{i}].input", "discrete_input", socket.input)
            for i, socket in enumerate(device.sockets)
        ]
    return [
        PlannedRead(f"points.{p.name}", p.function, p.address, p.register_count)
        for p in device.resolved_points()
    ]


def _alarm_box_reads(device: AlarmBoxDevice) -> list[PlannedRead]:
    reads: list[PlannedRead] = []
    for i, button in enumerate(device.buttons):
        reads.append(PlannedRead(f"buttons[{i}].input", "discrete_input", button.input))
        if button.press_counter_register is not None:
            label = f"buttons[{i}].press_counter_register"
            reads.append(PlannedRead(label, "input_register", button.press_counter_register))
    if device.reset_input is not None:
        reads.append(PlannedRead("reset_input", "discrete_input", device.reset_input))
    for name in ("lamp_coil", "siren_coil", "fault_coil"):
        coil = getattr(device, name)
        if coil is not None:
            reads.append(PlannedRead(name, "coil", coil))
    return reads


def _bollard_reads(device: BollardDevice) -> list[PlannedRead]:
    registers = device.register_map()
    reads: list[PlannedRead] = []
    for name in ("position", "fault_code", "efo_input"):
        ref = getattr(registers, name)
        if ref is not None:
            reads.append(PlannedRead(name, ref.table, ref.address))
    counter = registers.cycle_counter
    if counter is not None:
        count = 2 if counter.data_type == "uint32" else 1
        reads.append(PlannedRead("cycle_counter", counter.table, counter.address, count))
    return reads


def _reader(line: ModbusLine, read: PlannedRead, unit: int) -> Callable[[], Awaitable[list[int]]]:
    return lambda: line.read(read.function, unit, read.address, read.count)


def _line_label(config: ModbusTcpLine | ModbusRtuLine) -> str:
    if isinstance(config, ModbusTcpLine):
        return f"{config.host}:{config.port}"
    return f"{config.port} at {config.baudrate} {config.bytesize}{config.parity}{config.stopbits}"


async def check_devices(config: GatewayConfig, report: Report, *, timeout_s: float) -> None:
    """One step per device answer and per configured read; lines are opened once each."""
    by_line: dict[str, list[tuple[str, ModbusDevice]]] = {}
    for device_id, device in config.devices.items():
        if isinstance(device, ModbusDevice):
            by_line.setdefault(device.line, []).append((device_id, device))
        else:
            report.notes.append(
                f"device {device_id} ({device.kind}) is not probed: doctor checks its serial "
                "port only, not yet its own protocol or its clock offset"
            )
    for line_name, devices in by_line.items():
        line_config = config.lines[line_name]
        assert isinstance(line_config, ModbusTcpLine | ModbusRtuLine)  # the loader checked it
        line = ModbusLine(line_name, line_config)
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await line.connect()
            except (LineError, TimeoutError) as exc:
                reason = str(exc) or "timed out"
                for device_id, _ in devices:
                    report.fail(
                        f"device {device_id}",
                        "line opens",
                        f"line {line_name} ({_line_label(line_config)}): {reason}",
                        _line_fix(line_config),
                    )
                continue
            configured = {device.unit_id for _, device in devices}
            for device_id, device in devices:
                await _check_device(
                    line, line_config, device_id, device, configured, report, timeout_s
                )
        finally:
            await line.close()


def _line_fix(config: ModbusTcpLine | ModbusRtuLine) -> str:
    if isinstance(config, ModbusTcpLine):
        return (
            f"check that the module at {config.host}:{config.port} is powered and on the "
            "network (ping it), and the host and port in [lines]"
        )
    return f"check that {config.port} exists (see the serial steps) and the adapter is plugged in"


async def _check_device(  # noqa: PLR0917 - one device's context, passed through
    line: ModbusLine,
    line_config: ModbusTcpLine | ModbusRtuLine,
    device_id: str,
    device: ModbusDevice,
    configured: set[int],
    report: Report,
    timeout_s: float,
) -> None:
    section = f"device {device_id}"
    unit = device.unit_id
    reads = planned_reads(device)
    first, rest = reads[0], reads[1:]
    try:
        async with asyncio.timeout(timeout_s):
            await _reader(line, first, unit)()
    except (DeviceTimeout, TimeoutError):
        await _no_answer(line, line_config, device_id, unit, configured, report)
        return
    except DeviceException as exc:
        report.ok(section, f"answers at unit id {unit}")
        _exception_step(report, section, first, exc)
    except DriverError as exc:
        report.fail(
            section,
            f"answers at unit id {unit}",
            str(exc),
            "garbled answers: check the baud rate, parity and termination of the line, and "
            "that no second master (another gateway, a PLC) talks on it",
        )
        return
    else:
        report.ok(section, f"answers at unit id {unit}")
        report.ok(section, f"reads {_describe(first)}")
    for read in rest:
        try:
            async with asyncio.timeout(timeout_s):
                await _reader(line, read, unit)()
        except DeviceException as exc:
            _exception_step(report, section, read, exc)
        except (DriverError, TimeoutError) as exc:
            report.fail(
                section,
                f"reads {_describe(read)}",
                str(exc) or "timed out",
                "the unit answered other reads: check the device is not overloaded and the "
                "line's timeout_ms",
            )
        else:
            report.ok(section, f"reads {_describe(read)}")


def _describe(read: PlannedRead) -> str:
    plural = f" x{read.count}" if read.count > 1 else ""
    return f"{read.label} ({read.function.replace('_', ' ')} {read.address}{plural})"


def _exception_step(report: Report, section: str, read: PlannedRead, exc: DeviceException) -> None:
    name = _EXCEPTION_NAMES.get(exc.exception_code, f"exception code {exc.exception_code}")
    report.fail(
        section,
        f"reads {_describe(read)}",
        f"the device refused it: {name}",
        f"check {read.label} against the device's register map (0-based addresses, not "
        "40001-style)",
    )


async def _no_answer(  # noqa: PLR0917 - one device's context, passed through
    line: ModbusLine,
    line_config: ModbusTcpLine | ModbusRtuLine,
    device_id: str,
    unit: int,
    configured: set[int],
    report: Report,
) -> None:
    """A silent unit: is it the wrong id (another id answers) or a device that is not there?"""
    # A line of its own with a short timeout; the port is handed over, never open twice.
    await line.close()
    probe = ModbusLine(
        f"{line.name}-probe",
        line_config.model_copy(update={"timeout_ms": NEIGHBOUR_TIMEOUT_MS}),
        log=quiet_log(),
    )
    try:
        answering = [
            other
            for other in NEIGHBOUR_IDS
            if other not in configured and await _answers(probe, other)
        ]
    finally:
        await probe.close()
        await _reopen(line)
    section = f"device {device_id}"
    name = f"answers at unit id {unit}"
    label = _line_label(line_config)
    if answering:
        ids = ", ".join(str(i) for i in answering)
        others = f"unit ids {ids} answer" if len(answering) > 1 else f"unit id {ids} answers"
        report.fail(
            section,
            name,
            f"unit {unit} does not answer on {label}, but {others}",
            f"wrong unit id: set unit_id = {answering[0]} in [devices.{device_id}] if that is "
            f"this device, or set the device's address to {unit}; `schoolgate scan` lists "
            "every unit on the line",
        )
        return
    report.fail(
        section,
        name,
        f"unit {unit} does not answer on {label} within {line_config.timeout_ms} ms, and no "
        f"other unit id {NEIGHBOUR_IDS.start}-{NEIGHBOUR_IDS.stop - 1} answers either",
        "the device does not answer: check its power and wiring (RS-485 A/B swapped?), its "
        "baud rate and parity, and its unit id with `schoolgate scan`",
    )


async def _reopen(line: ModbusLine) -> None:
    # A failure shows at the next device's first read, with its own step.
    with contextlib.suppress(LineError):
        await line.connect()


async def _answers(line: ModbusLine, unit: int) -> bool:
    """Any answer, even a Modbus exception, means a unit is there (the line bounds the wait)."""
    try:
        await line.read("holding_register", unit, 0, 1)
    except DeviceException:
        return True
    except DriverError:
        return False
    return True
