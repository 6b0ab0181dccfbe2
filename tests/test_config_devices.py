"""Config of the bollard, bollard-socket and generic-point kinds: good sections load, and each
broken one is refused with a message that names the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_config import ConfigError
from edge_config.devices_modbus import BollardDevice, BollardSocketsDevice, ModbusPointsDevice
from edge_config.loader import parse_config

BASE: dict[str, Any] = {
    "site": {"school_id": "school-1", "gateway_id": "gate-1"},
    "destinations": {"police": {"host": "127.0.0.1", "client_id": "g1"}},
    "lines": {"io": {"type": "modbus_tcp", "host": "127.0.0.1"}},
}
BOLLARD: dict[str, Any] = {"kind": "bollard", "line": "io"}
SOCKETS: dict[str, Any] = {
    "kind": "bollard_sockets",
    "line": "io",
    "sockets": [{"input": 0, "name": "lane 1"}, {"input": 1, "name": "lane 2"}],
}
POINT: dict[str, Any] = {"name": "temp", "function": "input_register", "address": 0}


def points(**point: Any) -> dict[str, Any]:
    return {"kind": "modbus_points", "line": "io", "points": [POINT | point]}


def load(device: dict[str, Any]) -> Any:
    return parse_config(BASE | {"devices": {"d": device}}, Path("schoolgate.toml")).devices["d"]


def test_good_sections_load_with_their_defaults() -> None:
    bollard = load(BOLLARD)
    assert isinstance(bollard, BollardDevice)
    assert (bollard.profile, bollard.poll_interval_ms, bollard.travel_timeout_ms) == (
        "generic_bollard",
        200,
        10_000,
    )
    sockets = load(SOCKETS)
    assert isinstance(sockets, BollardSocketsDevice) and sockets.present_when == "closed"
    device = load(points())
    assert isinstance(device, ModbusPointsDevice)
    assert device.points[0].type == "uint16" and device.points[0].report == "on_change"
    assert load(points(function="coil")).points[0].type == "bool"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        # bollard
        (BOLLARD | {"profile": "vendor_z"}, "devices.d: profile: no profile 'vendor_z' is shipped"),
        (BOLLARD | {"profile": "Vendor B"}, "devices.d.profile: String should match pattern"),
        (
            BOLLARD | {"unit_id": 300},
            "devices.d.unit_id: Input should be less than or equal to 247",
        ),
        (
            BOLLARD | {"travel_timeout_ms": 50},
            "devices.d.travel_timeout_ms: Input should be greater",
        ),
        (
            BOLLARD | {"poll_interval_ms": 1000, "travel_timeout_ms": 1500},
            "travel_timeout_ms (1500) must be at least two polls",
        ),
        (BOLLARD | {"registers": {"door": {}}}, "devices.d.registers.door: unknown key"),
        (
            BOLLARD | {"registers": {"position": {"table": "coil", "address": 0, "values": {}}}},
            "devices.d.registers.position.table: Input should be 'holding_register' or",
        ),
        (
            BOLLARD
            | {
                "registers": {
                    "position": {"table": "input_register", "address": 0, "values": {"0": "up"}}
                }
            },
            "devices.d.registers.position.values: no register value maps to down",
        ),
        (
            BOLLARD
            | {
                "registers": {
                    "position": {
                        "table": "input_register",
                        "address": 0,
                        "values": {"0": "down", "1": "up", "2": "half"},
                    }
                }
            },
            "devices.d.registers.position.values.2: Input should be 'down', 'rising', 'up'",
        ),
        (
            BOLLARD | {"registers": {"raise_command": {"table": "coil", "address": 0, "value": 2}}},
            "devices.d.registers.raise_command: a coil command writes 0 or 1, not 2",
        ),
        (
            BOLLARD | {"registers": {"raise_command": None}},
            "devices.d: registers (profile 'generic_bollard' + overrides): no raise_command",
        ),
        (
            BOLLARD
            | {
                "registers": {
                    "cycle_counter": {
                        "table": "input_register",
                        "address": 2,
                        "word_order": "little",
                    }
                }
            },
            "word_order only applies to a uint32 counter",
        ),
        # bollard sockets
        (SOCKETS | {"sockets": []}, "devices.d.sockets: List should have at least 1 item"),
        (
            SOCKETS | {"sockets": [{"input": 0, "name": "a"}, {"input": 0, "name": "b"}]},
            "devices.d: sockets: two sockets share one discrete input",
        ),
        (
            SOCKETS | {"sockets": [{"input": 0, "name": "a"}, {"input": 1, "name": "a"}]},
            "devices.d: sockets: two sockets have the same name",
        ),
        (SOCKETS | {"sockets": [{"input": 0}]}, "devices.d.sockets[0].name: required key"),
        (SOCKETS | {"present_when": "high"}, "devices.d.present_when: Input should be 'closed'"),
        # generic points
        (
            {"kind": "modbus_points", "line": "io"},
            "devices.d: give points, or a profile that has them",
        ),
        (points(function="register"), "devices.d.points[0].function: Input should be 'coil'"),
        (points(data_type="float64"), "devices.d.points[0].data_type: Input should be 'bool'"),
        (points(fucntion="coil"), "devices.d.points[0].fucntion: unknown key"),
        (
            points(function="coil", data_type="int16"),
            "devices.d.points[0]: a coil is one bit: data_type must be 'bool', not 'int16'",
        ),
        (points(data_type="bool"), "devices.d.points[0]: a bool from a register needs bit"),
        (points(bit=3), "bit picks a bool out of a register: needs a register and 'bool'"),
        (points(bit=16, data_type="bool"), "devices.d.points[0].bit: Input should be less than"),
        (
            points(function="discrete_input", deadband=1.0),
            "devices.d.points[0]: deadband only applies to numeric points",
        ),
        (
            points(data_type="uint16", word_order="little"),
            "word_order only applies to 2-register types (int32, uint32, float32), not 'uint16'",
        ),
        (
            points(data_type="float32", address=65535),
            "a float32 needs 2 registers: address 65535 is the last one",
        ),
        (points(scale=0), "devices.d.points[0]: scale must not be 0"),
        (points(deadband=-1), "devices.d.points[0].deadband: Input should be greater than"),
        (points(report="sometimes"), "devices.d.points[0].report: Input should be 'on_change'"),
        (points(report="both"), "devices.d.points[0]: report = 'both' needs interval_ms"),
        (points(interval_ms=1000), "interval_ms needs report = 'interval' or 'both'"),
        (
            points(report="interval", interval_ms=1000, deadband=0.5),
            "deadband applies to report = 'on_change' or 'both'",
        ),
        (
            points(report="interval", interval_ms=500) | {"poll_interval_ms": 1000},
            "devices.d: points[0].interval_ms (500) is shorter than poll_interval_ms (1000)",
        ),
        (
            {"kind": "modbus_points", "line": "io", "points": [POINT, POINT]},
            "devices.d: points: names must be unique; repeated: temp",
        ),
        (points(name="Cabinet Temp"), "devices.d.points[0].name: String should match pattern"),
        # any kind
        ({"kind": "bollards", "line": "io"}, "devices.d: Input tag 'bollards' found using 'kind'"),
        (BOLLARD | {"line": "rs485"}, "devices.d.line: no line named 'rs485' (lines: io)"),
    ],
)
def test_bad_device_config_is_refused(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(device)
    assert any(message in error for error in info.value.errors), info.value.errors


def test_a_serial_line_is_refused_for_modbus_kinds() -> None:
    config = BASE | {
        "lines": {"acl": {"type": "serial", "port": "/dev/ttyS1"}},
        "devices": {"d": SOCKETS | {"line": "acl"}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(config, Path("schoolgate.toml"))
    assert "kind bollard_sockets needs a modbus_tcp or modbus_rtu line" in str(info.value)
