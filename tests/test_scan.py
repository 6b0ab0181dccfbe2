"""`scan` finds simulated DI/DO modules at different unit ids over Modbus TCP and over RTU on a
pseudo-terminal, says how long it may take before it starts, reports progress after each probe,
and lists the function codes each unit answered."""

from __future__ import annotations

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.commissioning.scan import Progress, ScanError, ScanResult, parse_target, scan
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.modbus_serve import UnitBase
from simulators.vserial import VirtualSerialLink

UNITS = (3, 7, 12)


async def test_scan_over_tcp_finds_each_unit_and_its_function_codes() -> None:
    modules = {unit: DiDoModule(unit_id=unit) for unit in UNITS}
    planned: list[tuple[float, int]] = []
    seen: list[Progress] = []

    def plan(result: ScanResult, total: int) -> None:
        assert seen == [], "the estimate comes before the first probe"
        planned.append((result.estimate_s, total))

    async with serve_tcp(modules) as (host, port):
        result = await scan(
            f"{host}:{port}",
            unit_ids=range(1, 16),
            timeout_s=0.1,
            progress=seen.append,
            plan=plan,
        )
    ((estimate_s, total),) = planned
    assert estimate_s == pytest.approx(15 * 0.1) and total == 15
    assert [p.done for p in seen] == list(range(1, 16))
    assert seen[-1].found == len(UNITS)
    assert [f.unit_id for f in result.found] == list(UNITS)
    for found in result.found:
        assert found.answered == [1, 2, 3, 4], found
        assert str(found.setting) == "tcp"
    assert result.line_errors == []
    assert result.render().splitlines()[1:] == [
        f"  unit {unit} (tcp): function codes 1 2 3 4" for unit in UNITS
    ]


class FarRegisters(UnitBase):
    """A unit whose only registers start at 100: every read at address 0 is refused with
    exception 2, as many meters do. It still answers, so the scan must list it."""

    def sim_device(self) -> SimDevice:
        return SimDevice(
            id=self.unit_id,
            simdata=[SimData(100, values=0, datatype=DataType.REGISTERS)],
            action=self._on_access,
        )

    async def _on_access(self, function_code: int, *args: object) -> ExcCodes | None:
        return await self._admit(function_code, args[-1])


async def test_scan_lists_a_unit_that_only_answers_with_exceptions() -> None:
    unit = FarRegisters(9)
    async with serve_tcp(unit) as (host, port):
        result = await scan(f"{host}:{port}", unit_ids=[8, 9], timeout_s=0.1)
    (found,) = result.found
    assert found.unit_id == 9 and found.answered == []
    assert set(found.functions.values()) == {"exception 2 (illegal data address)"}
    assert "unit 9 (tcp): function codes none with data (1: exception 2" in result.render()


async def test_scan_over_rtu_tries_every_setting() -> None:
    """Two units on one RS-485 line (a pseudo-terminal pair). A pty carries bytes at any baud
    rate, so both settings find them: this checks the plan and the loop, not baud detection."""
    modules = {unit: DiDoModule(unit_id=unit) for unit in UNITS[:2]}
    seen: list[Progress] = []
    async with VirtualSerialLink() as link, serve_rtu(modules, link.device_end):
        result = await scan(
            link.host_end,
            unit_ids=range(1, 9),
            bauds=[9600, 19200],
            parities=["N"],
            timeout_s=0.1,
            progress=seen.append,
        )
    assert result.estimate_s == pytest.approx(8 * 2 * 0.1)
    assert len(seen) == 16 and seen[-1].done == seen[-1].total == 16
    found = [(f.unit_id, str(f.setting)) for f in result.found]
    assert found == [(3, "9600 8N1"), (7, "9600 8N1"), (3, "19200 8N1"), (7, "19200 8N1")]
    assert all(f.answered == [1, 2, 3, 4] for f in result.found)


async def test_scan_of_a_missing_port_says_so() -> None:
    result = await scan("/dev/ttyNOSUCH9", unit_ids=[1, 2], timeout_s=0.05)
    assert result.found == []
    assert len(result.line_errors) == 1 and "ttyNOSUCH9" in result.line_errors[0]
    assert result.render().endswith("  nothing answered\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit_ids": [0]}, "outside 1..247"),
        ({"unit_ids": []}, "no unit ids"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"bauds": [12345]}, "unusable setting"),
    ],
)
async def test_scan_refuses_bad_limits(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScanError, match=message):
        await scan("/dev/ttyUSB0", **kwargs)  # type: ignore[arg-type]


def test_targets() -> None:
    assert str(parse_target("192.168.1.20")) == "192.168.1.20:502"
    assert str(parse_target("tcp://gw.local:1502")) == "gw.local:1502"
    assert parse_target("/dev/ttyUSB0") == "/dev/ttyUSB0"
    with pytest.raises(ScanError):
        parse_target("host:99999")
