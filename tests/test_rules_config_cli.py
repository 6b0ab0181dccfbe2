"""The `[rules]` section (edge_config.rules) through the loader, and `schoolgate calendar` and
`schoolgate ledger` on the command line."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_config.errors import ConfigError
from edge_config.loader import load
from gateway.cli import main
from gateway.rules.ledger import Ledger
from gateway.rules.sqlite_state import SqliteRulesState

TZ = ZoneInfo("Asia/Shanghai")
CONFIG = """\
[site]
school_id = "school-1"
gateway_id = "gate-1"

[store]
path = "{root}/outbox.db"

[control]
socket_path = "{root}/c.sock"

[destinations.police]
host = "127.0.0.1"
client_id = "g1-police"

[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"

[lines.door_bus]
type = "serial"
port = "/dev/ttyUSB1"

[devices.bollard-1]
kind = "bollard"
line = "io"
profile = "generic_bollard"

[devices.sockets]
kind = "bollard_sockets"
line = "io"
sockets = [{{ input = 0, name = "socket-1" }}]

[devices.doors]
kind = "access_controller"
line = "door_bus"
address = 1
doors = {{ 1 = "gate" }}
readers = {{ 1 = "in", 2 = "out" }}

[rules]
calendar_file = "calendar.toml"

[[rules.window]]
id = "bollards-up"
devices = [{window_devices}]
required_state = "{required_state}"
grace_s = 300

[[rules.socket_timer]]
device = "sockets"
sockets = {{ "{socket}" = 10 }}

[[rules.patrol]]
id = "main"
checkpoints = [{{ device = "doors", reader = 1 }}, {{ device = "doors", reader = {reader} }}]
latest = "22:00"
{extra}
"""
CALENDAR = """\
year_start = 2026-09-01
year_end = 2027-08-31

[weekdays]
monday = [
    {{ name = "arrival", start = "07:20", end = "{arrival_end}" }},
]

[[holidays]]
name = "National Day"
start = 2026-10-01
end = 2026-10-07
"""


def write(root: Path, arrival_end: str = "08:10", **changes: str) -> Path:
    values = {
        "window_devices": '"bollard-1"',
        "required_state": "up",
        "socket": "socket-1",
        "reader": "2",
        "extra": "",
    } | changes
    (root / "calendar.toml").write_text(CALENDAR.format(arrival_end=arrival_end))
    path = root / "schoolgate.toml"
    path.write_text(CONFIG.format(root=root, **values))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.errors


def test_a_good_rules_section_loads(tmp_path: Path) -> None:
    rules = load(write(tmp_path)).config.rules
    assert rules is not None
    assert rules.window[0].devices == ["bollard-1"]
    assert rules.socket_timer[0].sockets == {"socket-1": 10}
    assert rules.patrol[0].rounds_required == 5
    assert [c.id for c in rules.patrol[0].checkpoints] == ["doors-r1", "doors-r2"]
    assert rules.ledger.default_repair_h == 24


def test_without_rules_the_section_is_absent(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().split("[rules]")[0])
    assert load(path).config.rules is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"window_devices": '"nobody"'}, "rules.window[0].devices: no device 'nobody'"),
        (
            {"window_devices": '"doors"'},
            "rules.window[0].required_state: a access_controller reports locked_down,",
        ),
        ({"required_state": "sideways"}, "rules.window[0].required_state: a bollard reports up"),
        ({"socket": "socket-9"}, "rules.socket_timer[0].sockets.socket-9: 'sockets' has no"),
        ({"reader": "7"}, "rules.patrol[0].checkpoints[1].reader: 'doors' has no reader 7"),
        ({"reader": "1"}, "rules.patrol[0]: checkpoints: a reader is named twice"),
        ({"extra": "colour = 1"}, "rules.patrol[0].colour: unknown key"),
    ],
)
def test_a_bad_rules_section_is_refused_naming_the_key(
    tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    errors = errors_of(write(tmp_path, **changes))
    assert any(e.startswith(expected) for e in errors), errors


def test_a_bad_calendar_names_the_key_and_the_line(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, arrival_end="08:70"))
    assert len(errors) == 1
    assert errors[0].startswith("rules.calendar_file (")
    assert "weekdays.monday[0].end (line 6)" in errors[0]


def test_a_missing_calendar_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "calendar.toml").unlink()
    (error,) = errors_of(path)
    assert error.startswith("rules.calendar_file (") and "cannot read the calendar" in error


def test_calendar_shows_a_dates_type_and_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    assert main(["calendar", "-c", str(path), "--date", "2026-09-07"]) == 0
    assert capsys.readouterr().out == "2026-09-07 Monday: school_day\n  arrival: 07:20 - 08:10\n"
    assert main(["calendar", "-c", str(path), "--date", "2026-10-05"]) == 0
    assert capsys.readouterr().out == "2026-10-05 Monday: holiday\n  no gate windows\n"
    assert main(["calendar", "-c", str(path), "--date", "2028-01-01"]) == 1
    assert "outside the school year" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calendar", "-c", str(path), "--date", "2026-13-01"])


def test_ledger_lists_entries_read_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    assert main(["ledger", "-c", str(path)]) == 1  # no store file yet
    assert "cannot open" in capsys.readouterr().err
    state = SqliteRulesState(tmp_path / "outbox.db")
    assert main(["ledger", "-c", str(path)]) == 0
    assert capsys.readouterr().out == "no ledger entries\n"
    ledger = Ledger(state, TZ)
    at = int(datetime(2026, 9, 7, 9, 0, tzinfo=TZ).timestamp() * 1000)
    ledger.open("device_offline", "offline:a", what="a does not answer", where="gate", at_ms=at)
    ledger.open("device_offline", "offline:b", what="b does not answer", where="lane", at_ms=at)
    ledger.close_cleared("offline:a", evidence="a answered again", at_ms=at + 60_000)
    state.close()
    assert main(["ledger", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "20260907-001  device_offline  gate: a does not answer" in out
    assert "closed 2026-09-07 09:01 by auto" in out
    assert main(["ledger", "-c", str(path), "--open", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["id"] == "20260907-002" and entry["closed_ms"] is None
