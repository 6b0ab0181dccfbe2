"""Configuration: the shipped example is valid; every broken config is refused with a message
that names the key and what was expected, and `check-config` exits non-zero."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_config import ConfigError, load_config
from edge_config.loader import parse_config
from edge_config.models import AlarmBoxDevice

EXAMPLE = Path(__file__).parent.parent / "edge_config" / "examples" / "school-gate.toml"

GOOD = """
[site]
school_id = "school-1"
gateway_id = "gate-1"

[store]
path = "{store}"

[destinations.police]
host = "127.0.0.1"
client_id = "g1-police"

[destinations.bureau]
host = "127.0.0.1"
client_id = "g1-bureau"

[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"

[devices.box]
kind = "alarm_box"
line = "io"
[[devices.box.buttons]]
input = 0
"""


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schoolgate.toml"
    path.write_text(text.replace("{store}", str(tmp_path / "outbox.db")))
    return path


def test_good_config_prints_ok(tmp_path: Path) -> None:
    result = check_config(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_shipped_example_is_valid_once_its_secrets_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    secret = tmp_path / "police.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)  # a password file others can read is refused
    data["destinations"]["police"]["password_file"] = str(secret)
    # The store's folder is made at install time; check-config checks it can be written.
    data["store"]["path"] = str(tmp_path / "state" / "outbox.db")
    data["control"]["socket_path"] = str(tmp_path / "control.sock")
    monkeypatch.setenv("SCHOOLGATE_BUREAU_PASSWORD", "other")
    config = parse_config(data, EXAMPLE)
    box = config.devices["panic_box"]
    assert isinstance(box, AlarmBoxDevice)  # devices is a union of kinds
    assert box.buttons[0].press_counter_register == 0


def test_shipped_example_guard_section_is_valid_once_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.guard.pin import hash_pin  # noqa: PLC0415 - only this test needs a hash

    text = EXAMPLE.read_text()
    start = text.index("# [guard]")
    section = text[start : text.index("\n\n", start)]
    toml = "\n".join(line.removeprefix("# ") for line in section.splitlines())
    toml = toml.replace("scrypt$16384$8$1$<salt, base64>$<hash, base64>", hash_pin("2468"))
    result = check_config(write(tmp_path, GOOD + "\n" + toml + "\n"))
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "schoolgate.toml")
    assert config.guard is not None
    assert (config.guard.host, config.guard.port, config.guard.language) == (
        "127.0.0.1",
        8470,
        "zh",
    )
    assert [g.name for g in config.guard.guards] == ["王师傅"]
    assert config.guard.test_press_minutes == 5
    assert load_config(write(tmp_path, GOOD)).guard is None  # off unless configured


def test_shipped_example_names_its_missing_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE)
    joined = "\n".join(info.value.errors)
    assert "destinations.police.password_file: cannot read" in joined


BROKEN = [
    pytest.param(
        GOOD.replace('gateway_id = "gate-1"', 'gateway_id = "gate-1"\ngatway = "x"'),
        "site.gatway: unknown key",
        id="unknown-key",
    ),
    pytest.param(
        GOOD.replace("input = 0", 'input = "zero"'),
        "devices.box.buttons[0].input: Input should be a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        GOOD.replace("[destinations.police]", "[destinations.polize]"),
        "destinations.police: required destination is missing",
        id="missing-destination",
    ),
    pytest.param(
        GOOD.replace('line = "io"', 'line = "rs485"'),
        "devices.box.line: no line named 'rs485' (lines: io)",
        id="device-on-unknown-line",
    ),
    pytest.param(GOOD + "\n[site\n", "not valid TOML", id="unreadable-toml"),
    pytest.param(
        GOOD.replace('client_id = "g1-police"', 'client_id = "g1-police"\npassword = "x"'),
        "destinations.police: inline 'password' is not allowed",
        id="inline-password",
    ),
    pytest.param(
        GOOD.replace('client_id = "g1-police"', 'client_id = "g1-police"\npassword_env = "NOPE_X"'),
        "destinations.police.password_env: environment variable 'NOPE_X' is not set",
        id="missing-secret-env",
    ),
    pytest.param(
        GOOD.replace(
            '[lines.io]\ntype = "modbus_tcp"', '[lines.io]\ntype = "modbus_rtu"\nbaudrate = 1234'
        ),
        "lines.io.port: required key is missing",
        id="rtu-line-missing-port",
    ),
    pytest.param(
        GOOD.replace('school_id = "school-1"', 'school_id = "School 1"'),
        "site.school_id: String should match pattern",
        id="id-not-topic-safe",
    ),
    pytest.param(
        GOOD.replace('gateway_id = "gate-1"', 'gateway_id = "gate-1"\ntimezone = "Mars/Olympus"'),
        "site.timezone: unknown IANA time zone 'Mars/Olympus'",
        id="bad-timezone",
    ),
    pytest.param(
        GOOD.replace("[[devices.box.buttons]]\ninput = 0", "buttons = []"),
        "devices.box.buttons: List should have at least 1 item",
        id="box-without-buttons",
    ),
    pytest.param(
        GOOD + '\n[guard]\n[[guard.guards]]\nname = "王师傅"\npin_hash = "2468"\n',
        "guard.guards[0].pin_hash: String should match pattern",
        id="guard-pin-in-clear",
    ),
    pytest.param(
        GOOD + '\n[guard]\nhost = "gatehouse.local"\n[[guard.guards]]\nname = "a"\n'
        'pin_hash = "scrypt$1$1$1$AA==$AA=="\n',
        "guard.host: guard.host must be an IP address, not 'gatehouse.local'",
        id="guard-host-not-an-address",
    ),
    pytest.param(
        GOOD + '\n[guard]\ntest_press_minutes = 90\n[[guard.guards]]\nname = "a"\n'
        'pin_hash = "scrypt$1$1$1$AA==$AA=="\n',
        "guard.test_press_minutes: Input should be less than or equal to 30",
        id="guard-test-press-too-long",
    ),
    pytest.param(
        GOOD + '\n[guard]\ntest_press_minutes = "5"\n[[guard.guards]]\nname = "a"\n'
        'pin_hash = "scrypt$1$1$1$AA==$AA=="\n',
        "guard.test_press_minutes: Input should be a valid integer",
        id="guard-test-press-minutes-a-string",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_config_is_refused_with_key_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    result = check_config(write(tmp_path, text))
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert result.stdout == ""


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = GOOD.replace("input = 0", "input = -1").replace(
        'host = "127.0.0.1"\n\n[devices', 'host = ""\n\n[devices'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert len(info.value.errors) == 2, info.value.errors


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "cannot read the file: No such file or directory" in result.stderr


def test_same_client_id_on_one_broker_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('client_id = "g1-bureau"', 'client_id = "g1-police"')
    with pytest.raises(ConfigError, match="same client_id on the same broker"):
        load_config(write(tmp_path, text))


def test_device_on_a_line_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace(
        '[lines.io]\ntype = "modbus_tcp"\nhost = "127.0.0.1"',
        '[lines.io]\ntype = "serial"\nport = "/dev/ttyUSB1"',
    )
    with pytest.raises(
        ConfigError, match="kind alarm_box needs a modbus_tcp or modbus_rtu line; 'io' is serial"
    ):
        load_config(write(tmp_path, text))
