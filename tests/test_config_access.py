"""Configuration of access controllers: a good one loads with its defaults; a broken one is
refused with a message naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_config import ConfigError
from edge_config.devices_access import AccessControllerDevice
from edge_config.loader import parse_config

BASE = """
[site]
school_id = "school-1"
gateway_id = "gate-1"

[destinations.police]
host = "127.0.0.1"
client_id = "g1-police"

[lines.doors]
type = "serial"
port = "/dev/ttyUSB1"

[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"

[devices.gate_doors]
kind = "access_controller"
line = "doors"
address = 3
doors = { 1 = "pedestrian gate", 2 = "staff door" }
readers = { 1 = "outside", 2 = "inside" }
"""


def load(text: str) -> AccessControllerDevice:
    config = parse_config(tomllib.loads(text), Path("schoolgate.toml"))
    device = config.devices["gate_doors"]
    assert isinstance(device, AccessControllerDevice)
    return device


def test_good_access_controller_loads_with_defaults() -> None:
    device = load(BASE)
    assert device.doors == {1: "pedestrian gate", 2: "staff door"}
    assert device.readers == {1: "outside", 2: "inside"}
    assert device.poll_interval_ms == 100
    assert device.clock_check_interval_s == 300
    assert device.max_clock_skew_ms == 1_000
    assert device.held_open_alarm_s == 30
    assert device.drill is False


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('line = "doors"', 'line = "io"', "kind access_controller needs a serial line"),
        ('line = "doors"', 'line = "nope"', "no line named 'nope'"),
        ("address = 3", "address = 0", ".address: Input should be greater than or equal to 1"),
        ("address = 3", "address = 255", ".address: Input should be less than or equal to 254"),
        ("address = 3\n", "", "devices.gate_doors.address: required key is missing"),
        ('doors = { 1 = "pedestrian gate", 2 = "staff door" }', "doors = {}", "doors"),
        ('1 = "pedestrian gate"', '0 = "pedestrian gate"', "number 0 outside 1..255"),
        ('1 = "outside"', '300 = "outside"', "number 300 outside 1..255"),
        ('1 = "outside"', 'one = "outside"', "readers.one"),
        ("address = 3", "address = 3\nmax_clock_skew_ms = 10", "max_clock_skew_ms"),
        ("address = 3", "address = 3\nclock_check_interval_s = 0", "clock_check_interval_s"),
        ("address = 3", "address = 3\nheld_open_alarm_s = 0", "held_open_alarm_s"),
        ("address = 3", "address = 3\npoll_interval_ms = 1", "poll_interval_ms"),
        ("address = 3", "address = 3\nbaudrate = 9600", "baudrate: unknown key"),
        ("address = 3", 'address = "3"\naddress_typo = 1', "address_typo: unknown key"),
    ],
)
def test_broken_access_controller_config_is_refused(old: str, new: str, expected: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        load(BASE.replace(old, new, 1))
    assert any(expected in error for error in info.value.errors), info.value.errors
    assert all(error.startswith(("devices.gate_doors", "devices:")) for error in info.value.errors)
