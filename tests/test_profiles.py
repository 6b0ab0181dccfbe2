"""Bollard profiles as data: the shipped files load, config can pick one and override single
registers, a new vendor is a new file, and the wheel ships the files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_config.devices_modbus import BollardDevice, BollardProfile, ModbusPointsDevice
from edge_config.profile_files import (
    SHIPPED,
    ProfileDirectory,
    ProfileError,
    bollard_profile,
    load_profile,
    profile_names,
    validation_context,
)

ROOT = Path(__file__).parent.parent


def device(profiles: ProfileDirectory = SHIPPED, **values: Any) -> BollardDevice:
    return BollardDevice.model_validate(
        {"kind": "bollard", "line": "io"} | values, context=validation_context(profiles)
    )


def test_shipped_profiles() -> None:
    assert {"generic_bollard", "vendor_b"} <= set(profile_names())
    for name in profile_names():
        assert load_profile(name).name == name


def test_generic_and_vendor_b_differ_where_it_matters() -> None:
    generic, vendor_b = (
        bollard_profile("generic_bollard").registers,
        bollard_profile("vendor_b").registers,
    )
    assert generic.position is not None and vendor_b.position is not None
    assert generic.position.decode(2) == "up" and vendor_b.position.decode(1) == "up"
    assert vendor_b.position.decode(3) is None  # not a code this controller uses
    assert generic.raise_command is not None and generic.raise_command.table == "coil"
    assert vendor_b.raise_command is not None and vendor_b.raise_command.value == 1
    assert vendor_b.cycle_counter is not None and vendor_b.cycle_counter.word_order == "little"


def test_device_defaults_to_the_generic_profile() -> None:
    assert device().register_map() == bollard_profile("generic_bollard").registers


def test_override_replaces_one_register_whole() -> None:
    config = device(
        profile="vendor_b",
        registers={"fault_code": {"table": "input_register", "address": 7}},
    )
    merged = config.register_map()
    profile = bollard_profile("vendor_b").registers
    assert merged.fault_code is not None and merged.fault_code.table == "input_register"
    assert merged.fault_code.address == 7
    assert merged.position == profile.position and merged.raise_command == profile.raise_command


def test_override_can_remove_an_optional_register() -> None:
    assert device(registers={"efo_input": None}).register_map().efo_input is None


def test_unknown_profile_is_refused_with_the_known_names() -> None:
    with pytest.raises(
        ValidationError, match=r"no profile 'vendor_z' is shipped .*generic_bollard"
    ):
        device(profile="vendor_z")
    with pytest.raises(ProfileError):
        load_profile("vendor_z")


def test_override_that_breaks_the_map_is_refused() -> None:
    with pytest.raises(ValidationError, match="no position"):
        device(registers={"position": None})
    with pytest.raises(ValidationError, match="two commands write the same value"):
        device(registers={"lower_command": {"table": "coil", "address": 0}})


def test_a_new_vendor_is_a_new_file(tmp_path: Path) -> None:
    # Copy the shipped profiles plus a new one into a scratch dir, and read the profiles from
    # there: no code changes, only a file.
    for source in (ROOT / "edge_config" / "profiles").glob("*.toml"):
        shutil.copy(source, tmp_path)
    (tmp_path / "vendor_c.toml").write_text(
        """
kind = "bollard"
name = "vendor_c"
vendor = "Vendor C"
[registers.position]
table = "holding_register"
address = 0
values = { "0" = "down", "1" = "up", "2" = "rising", "3" = "lowering" }
[registers.raise_command]
table = "holding_register"
address = 10
value = 1
[registers.lower_command]
table = "holding_register"
address = 10
value = 0
"""
    )
    profiles = ProfileDirectory(tmp_path)
    config = device(profiles, profile="vendor_c")
    assert config.register_map().efo_input is None
    assert "vendor_c" in profiles.names()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "bollard"\nname = "x"\n', "registers"),
        (
            'kind = "bollard"\nname = "x"\n[registers.position]\ntable = "holding_register"\n'
            'address = 0\nvalues = { "0" = "down" }\n',
            "no register value maps to up",
        ),
        ('kind = "bollard"\nname = "x"\nregisters = {}\n', "no position, raise_command"),
        ('kind = "bollard"\nname = "x"\nvendor = 3\n', "vendor"),
    ],
)
def test_broken_profile_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BollardProfile.model_validate(tomllib.loads(text))


@pytest.mark.timeout(120)
def test_the_wheel_ships_the_profile_files(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr  # hatchling comes with the dev extras
    (wheel,) = tmp_path.glob("schoolgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge_config/profiles/generic_bollard.toml" in names
    assert "edge_config/profiles/vendor_b.toml" in names


def _meter(**kw: object) -> ModbusPointsDevice:
    return ModbusPointsDevice.model_validate(
        {"kind": "modbus_points", "line": "bus", "profile": "power_meter_generic", **kw},
        context=validation_context(),
    )


def test_points_profile_gives_a_device_its_points_and_config_replaces_or_adds() -> None:
    assert [p.name for p in _meter().resolved_points()] == [
        "voltage",
        "current",
        "active_power",
        "energy_total",
    ]
    own = _meter(
        points=[
            {"name": "current", "function": "input_register", "address": 8, "data_type": "float32"},
            {"name": "door_contact", "function": "discrete_input", "address": 0},
        ]
    )
    points = {p.name: p for p in own.resolved_points()}
    assert points["current"].address == 8 and "door_contact" in points
    assert len(points) == 5


def test_points_profile_errors_are_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match="no profile 'meter_x' is shipped"):
        _meter(profile="meter_x")
    with pytest.raises(ValidationError, match="is a bollard profile, not a points one"):
        _meter(profile="generic_bollard")
