"""One registry of device kinds (issue 11, item 5): the configuration declares each kind's model
and line types (edge_config.kinds), drivers.kinds pairs each with its driver, typed so that mypy
refuses a driver handed another kind's config or line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from mypy import api as mypy_api

from drivers.base import DriverContext
from drivers.kinds import KINDS, WrongKind, build_driver
from drivers.lines import make_line
from edge_config.base import LineType
from edge_config.kinds import DEVICE_MODELS, KIND_NAMES, kind_of, line_types_for
from edge_config.models import ModbusRtuLine, ModbusTcpLine, SerialLine
from gateway.core.events import DeviceRef

ROOT = Path(__file__).resolve().parent.parent

LINES: dict[str, Any] = {
    "modbus_tcp": ModbusTcpLine(type="modbus_tcp", host="127.0.0.1"),
    "modbus_rtu": ModbusRtuLine(type="modbus_rtu", port="/dev/null"),
    "serial": SerialLine(type="serial", port="/dev/null"),
}


def test_every_configured_kind_has_exactly_one_driver() -> None:
    assert set(KINDS) == KIND_NAMES
    for model in DEVICE_MODELS:
        assert KINDS[kind_of(model)].config is model


def test_the_lines_a_kind_accepts_are_the_lines_its_driver_takes() -> None:
    assert set(LINES) == set(get_args(LineType))
    for name, kind in KINDS.items():
        for line_type in line_types_for(name):
            assert isinstance(make_line("l", LINES[line_type]), kind.line), (name, line_type)
        for other in set(LINES) - set(line_types_for(name)):
            assert not isinstance(make_line("l", LINES[other]), kind.line), (name, other)


async def _nothing(event: Any) -> Any:
    return event


def test_a_config_or_line_of_another_kind_is_a_typed_error() -> None:
    from edge_config.devices_access import AccessControllerDevice  # noqa: PLC0415
    from edge_config.devices_alarm import AlarmBoxDevice  # noqa: PLC0415

    box = AlarmBoxDevice(kind="alarm_box", line="io", buttons=[{"input": 0}])  # type: ignore[list-item]
    doors = AccessControllerDevice(kind="access_controller", line="bus", address=1, doors={1: "a"})
    ctx = DriverContext(DeviceRef("d", "alarm_box"), None, _nothing, lambda: 0)  # type: ignore[arg-type]
    modbus, serial = make_line("io", LINES["modbus_tcp"]), make_line("bus", LINES["serial"])
    with pytest.raises(WrongKind, match="AccessControllerDevice handed to a alarm_box driver"):
        KINDS["alarm_box"].build(doors, modbus, ctx)
    with pytest.raises(WrongKind, match="a alarm_box needs a ModbusLine, not SerialLine"):
        build_driver(box, serial, ctx)
    assert type(build_driver(box, modbus, ctx)).__name__ == "AlarmBox"


@pytest.mark.timeout(120)
def test_mypy_refuses_a_driver_paired_with_another_kinds_config(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_pairs.py"
    wrong.write_text(
        "from drivers.access_controller import AccessController\n"
        "from drivers.bollard import Bollard\n"
        "from drivers.kinds import DeviceKind\n"
        "from drivers.lines.modbus import ModbusLine\n"
        "from drivers.lines.serial import SerialLine\n"
        "from edge_config.devices_access import AccessControllerDevice\n"
        "from edge_config.devices_alarm import AlarmBoxDevice\n"
        "config_mismatch = DeviceKind(AlarmBoxDevice, ModbusLine, Bollard)\n"
        "line_mismatch = DeviceKind(AccessControllerDevice, ModbusLine, AccessController)\n"
        "right = DeviceKind(AccessControllerDevice, SerialLine, AccessController)\n"
    )
    out, _, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(wrong)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out
    assert [e.split(":")[1] for e in errors] == ["8", "9"], out
