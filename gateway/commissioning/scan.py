"""`scan`: what answers on a Modbus bus. On a TCP host, try each unit id; on a serial port, each
unit id at each baud rate and parity the installer allows. Says how long it may take before it
starts, reports progress through a callback (the CLI draws the bar), and lists what answered and
to which function codes (1 coils, 2 discrete inputs, 3 holding registers, 4 input registers).

Owns the scan plan, its time estimate and the probes. Requests go through the drivers' line class
(`drivers.lines.modbus.ModbusLine`), one at a time, each bounded by `timeout_s`; a unit is there
when it answers anything, a Modbus exception included. It never writes. It is a second master
on the line: the daemon must not be polling the same bus meanwhile (the CLI says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from drivers.base import DeviceException, DriverError, LineError
from drivers.lines.modbus import ModbusLine
from edge_config.devices_modbus import Function
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from gateway.commissioning.devices import quiet_log

TABLES: dict[int, Function] = {
    1: "coil",
    2: "discrete_input",
    3: "holding_register",
    4: "input_register",
}
"""The table each function code of a probe reads."""
FUNCTION_CODES = tuple(TABLES)
PROBE_FUNCTION = 3
"""The first request to each id: read holding register 0, which most devices have."""
MIN_TIMEOUT_S = 0.01
MAX_TIMEOUT_S = 30.0
ALL_UNIT_IDS = range(1, 248)

log = structlog.get_logger()

Parity = Literal["N", "E", "O"]


class ScanError(Exception):
    """The scan cannot run: a bad target or limits, or the line does not open."""


@dataclass(frozen=True, slots=True)
class Setting:
    """A serial line setting; `None` baud rate on TCP."""

    baudrate: int | None = None
    parity: Parity = "N"

    def __str__(self) -> str:
        return "tcp" if self.baudrate is None else f"{self.baudrate} 8{self.parity}1"


@dataclass(frozen=True, slots=True)
class Found:
    unit_id: int
    setting: Setting
    functions: dict[int, str]
    """Function code -> "ok", "exception N (name)" or "no answer"."""

    @property
    def answered(self) -> list[int]:
        """The function codes it answered with data."""
        return [code for code, result in self.functions.items() if result == "ok"]


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int
    setting: Setting
    unit_id: int
    found: int


@dataclass(slots=True)
class ScanResult:
    target: str
    estimate_s: float
    found: list[Found] = field(default_factory=list)
    line_errors: list[str] = field(default_factory=list)
    """Settings whose line would not open (the scan goes on with the others)."""

    def render(self) -> str:
        """What answered, one line per unit and setting, for an installer."""
        lines = [f"{self.target}: estimate {self.estimate_s:.1f} s"]
        lines += [f"  line failed: {error}" for error in self.line_errors]
        for found in self.found:
            answered = " ".join(str(code) for code in found.answered) or "none with data"
            refused = [f"{c}: {r}" for c, r in found.functions.items() if r != "ok"]
            text = f"  unit {found.unit_id} ({found.setting}): function codes {answered}"
            lines.append(text + (f" ({'; '.join(refused)})" if refused else ""))
        if not self.found:
            lines.append("  nothing answered")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TcpTarget:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_HOST_PORT = re.compile(r"^(?:tcp://)?(?P<host>\[[^\]]+\]|[^:/\s]+)(?::(?P<port>\d{1,5}))?$")


def parse_target(text: str) -> TcpTarget | str:
    """`host[:port]` or `tcp://host[:port]` (port 502 by default) is TCP; a path (`/dev/...`)
    or a pyserial URL is a serial port."""
    if text.startswith("/") or ("://" in text and not text.startswith("tcp://")):
        return text
    match = _HOST_PORT.match(text)
    if match is None:
        raise ScanError(f"{text!r} is neither host[:port] nor a serial device path")
    port = int(match["port"] or 502)
    if not 1 <= port <= 65535:
        raise ScanError(f"port {port} outside 1..65535")
    return TcpTarget(match["host"].strip("[]"), port)


def settings_for(
    target: TcpTarget | str, bauds: Sequence[int], parities: Sequence[Parity]
) -> list[Setting]:
    if isinstance(target, TcpTarget):
        return [Setting()]
    if not bauds or not parities:
        raise ScanError("give at least one baud rate and one parity for a serial port")
    return [Setting(baud, parity) for baud in bauds for parity in parities]


def estimate_s(unit_ids: Sequence[int], settings: Sequence[Setting], timeout_s: float) -> float:
    """The longest the scan takes when nothing answers: one timeout per id per setting."""
    return len(unit_ids) * len(settings) * timeout_s


def _line_config(
    target: TcpTarget | str, setting: Setting, timeout_s: float
) -> ModbusTcpLine | ModbusRtuLine:
    timeout_ms = round(timeout_s * 1000)
    if isinstance(target, TcpTarget):
        return ModbusTcpLine.model_validate(
            {
                "type": "modbus_tcp",
                "host": target.host,
                "port": target.port,
                "timeout_ms": timeout_ms,
            }
        )
    return ModbusRtuLine.model_validate(
        {
            "type": "modbus_rtu",
            "port": target,
            "baudrate": setting.baudrate,
            "parity": setting.parity,
            "timeout_ms": timeout_ms,
        }
    )


def _check_limits(unit_ids: Sequence[int], timeout_s: float) -> None:
    if not unit_ids:
        raise ScanError("no unit ids to try")
    bad = [u for u in unit_ids if u not in ALL_UNIT_IDS]
    if bad:
        raise ScanError(f"unit ids {bad} outside 1..247")
    if not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
        raise ScanError(f"timeout {timeout_s} s outside {MIN_TIMEOUT_S}..{MAX_TIMEOUT_S} s")


async def scan(
    target: str,
    *,
    unit_ids: Sequence[int] = ALL_UNIT_IDS,
    bauds: Sequence[int] = (9600,),
    parities: Sequence[Parity] = ("N",),
    timeout_s: float = 0.2,
    progress: Callable[[Progress], None] | None = None,
    plan: Callable[[ScanResult, int], None] | None = None,
) -> ScanResult:
    """Scan `target`; `plan(result, total)` is called once before the first request with the
    estimate (`result.estimate_s`) and the number of probes; `progress` after each probe."""
    parsed = parse_target(target)
    _check_limits(unit_ids, timeout_s)
    settings = settings_for(parsed, bauds, parities)
    try:
        configs = [(setting, _line_config(parsed, setting, timeout_s)) for setting in settings]
    except ValueError as exc:  # pydantic's ValidationError: a baud rate the schema refuses
        raise ScanError(f"unusable setting: {exc}") from None
    result = ScanResult(str(parsed), estimate_s(unit_ids, settings, timeout_s))
    total = len(unit_ids) * len(settings)
    if plan is not None:
        plan(result, total)
    log.info("scan_started", target=result.target, probes=total, estimate_s=result.estimate_s)
    done = 0
    for setting, config in configs:
        line = ModbusLine(f"scan {setting}", config, log=quiet_log())
        try:
            try:
                await line.connect()
            except LineError as exc:
                result.line_errors.append(f"{setting}: {exc}")
                done += len(unit_ids)
                if progress is not None:
                    progress(Progress(done, total, setting, unit_ids[-1], len(result.found)))
                continue
            for unit in unit_ids:
                found = await _probe(line, unit, setting)
                if found is not None:
                    result.found.append(found)
                    log.info("scan_found", unit=unit, setting=str(setting), answered=found.answered)
                done += 1
                if progress is not None:
                    progress(Progress(done, total, setting, unit, len(result.found)))
        finally:
            await line.close()
    return result


async def _probe(line: ModbusLine, unit: int, setting: Setting) -> Found | None:
    first = await _try(line, unit, PROBE_FUNCTION)
    if first == "no answer":
        return None
    functions = {PROBE_FUNCTION: first}
    for code in FUNCTION_CODES:
        if code != PROBE_FUNCTION:
            functions[code] = await _try(line, unit, code)
    return Found(unit, setting, dict(sorted(functions.items())))


_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 4: "device failure"}


async def _try(line: ModbusLine, unit: int, code: int) -> str:
    try:
        await line.read(TABLES[code], unit, 0, 1)
    except DeviceException as exc:
        name = _EXCEPTION_NAMES.get(exc.exception_code, "")
        return f"exception {exc.exception_code}" + (f" ({name})" if name else "")
    except DriverError:
        return "no answer"
    return "ok"
