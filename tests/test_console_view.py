"""The console's view on a real terminal size: what an operator sees at 80x24 and larger.

Regression (issue 11): on an 80x24 terminal with a long history the open alarm scrolled off the
top of the screen, because the view ignored the terminal's height. The console's state is built
through `Console.handle` (unsigned payloads, no broker: the view only reads the state) and drawn
by rich at a fixed size, as `receiver.cli` does in a `Live`.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rich.console
from rich.cells import cell_len

from gateway.uplink import mqtt
from receiver.console import Console, ConsoleOptions
from receiver.view import Screen

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
NOW_MS = round(NOW.timestamp() * 1000)
LATER_MS = NOW_MS + 100_000
"""When the screens are drawn: the gateway has been quiet for 100 s."""
BASE = "schoolgate/v1/school-1/gate-1"
WHO = {"school": "school-1", "gateway": "gate-1"}


def quiet_console() -> Console:
    params = mqtt.BrokerParams("127.0.0.1", 1883, client_id="unit")
    options = ConsoleOptions(broker=params, gateway_keys={}, allow_unsigned=True)
    return Console(options, lambda record: None, clock_ms=lambda: NOW_MS)


class Gateway:
    """Publishes straight into a console's `handle`, numbering events as a gateway does."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seq = 0

    def event(
        self,
        event_type: str,
        *,
        age_s: float,
        device: str = "gate_doors",
        location: str = "",
        **fields: Any,
    ) -> str:
        self.seq += 1
        event_id = f"e-{self.seq}"
        at = (NOW - timedelta(seconds=age_s)).isoformat(timespec="milliseconds")
        payload = WHO | {
            "id": event_id,
            "seq": self.seq,
            "type": event_type,
            "occurred_at": at,
            "device": {"id": device, "location": location},
            **fields,
        }
        self.console.handle(f"{BASE}/events/x", json.dumps(payload).encode())
        return event_id


def long_history(console: Console) -> None:
    """One open panic alarm, raised first (the oldest), then 30 alarms acknowledged by the
    police, card events up to 200 events, a refused payload, and the gateway gone quiet."""
    gw = Gateway(console)
    gw.event("alarm.panic", age_s=7200, device="panic_box_9", location="North gate booth")
    for n in range(30):
        location = "北门岗亭" if n % 2 else "East gate"
        alarm = gw.event("alarm.panic", age_s=7000 - n * 60, device=f"box_{n}", location=location)
        gw.event("alarm.acknowledged", age_s=6990 - n * 60, alarm_id=alarm, data={"by": "Li"})
    while gw.seq < 200:
        gw.event("access.granted", age_s=100, data={"door": 1})
    console.handle(f"{BASE}/events/x", b"not json")
    console.silence.check(LATER_MS)  # nothing heard since: the gateway is quiet


def cell(lines: list[str], row: int, starting: str) -> str:
    """The table cell that begins with `starting` on line `row`, with the lines it wraps onto
    (an open alarm's cells wrap rather than hide anything)."""
    start = lines[row].index(starting)
    parts = [lines[row][start:].split("  ")[0]]
    for line in lines[row + 1 :]:
        if line[:start].strip():
            break  # the next row
        parts.append(line[start:].split("  ")[0].strip())
    return " ".join(part for part in parts if part)


def draw(console: Console, width: int, height: int) -> list[str]:
    terminal = rich.console.Console(width=width, height=height, record=True, file=io.StringIO())
    terminal.print(Screen(console, LATER_MS))
    return terminal.export_text().splitlines()


@pytest.mark.parametrize(("width", "height", "all_fit"), [(80, 24, False), (120, 40, True)])
def test_the_open_alarm_stays_on_screen_with_a_long_history(
    width: int, height: int, all_fit: bool
) -> None:
    console = quiet_console()
    long_history(console)
    assert console.events_seen == 200 and len(console.board.ordered()) == 31

    lines = draw(console, width, height)

    assert len(lines) <= height
    assert all(cell_len(line) <= width for line in lines)
    assert lines[0].startswith("schoolgate console  127.0.0.1:1883 DISCONNECTED  open 1")
    [open_line] = [line for line in lines if "UNACKNOWLEDGED" in line]
    assert open_line.startswith("[1]") and "2h01m" in open_line
    screen = "\n".join(lines)
    row = lines.index(open_line)
    assert cell(lines, row, "panic_box_9") == "panic_box_9 (North gate booth)"
    assert lines.index(open_line) < 6  # at the top, under the header and the table's head
    assert "school-1/gate-1  quiet, last heard 1m40s ago" in screen  # before old alarms
    assert "refused payloads: malformed 1" in screen
    acknowledged = [line for line in lines if "ack by Li" in line]
    if all_fit:
        assert len(acknowledged) == 30
    else:  # what does not fit is counted
        assert f"... and {30 - len(acknowledged)} more" in screen
    assert lines[-1].startswith("keys: ")


def test_a_larger_terminal_shows_more_history() -> None:
    console = quiet_console()
    long_history(console)
    small, large = draw(console, 80, 24), draw(console, 120, 40)
    acked = [line for line in large if "ack by Li" in line]
    assert len(acked) > len([line for line in small if "ack by Li" in line])
    assert "recent:" in large and "recent:" not in small  # history takes what is left


def test_wide_characters_keep_the_columns_aligned() -> None:
    console = quiet_console()
    gw = Gateway(console)
    gw.event("alarm.panic", age_s=10, device="box_a", location="北门岗亭")
    gw.event("alarm.panic", age_s=20, device="box_b", location="East gate")
    lines = [line for line in draw(console, 100, 24) if "UNACKNOWLEDGED" in line]
    assert len(lines) == 2 and "北门岗亭" in lines[0]
    # The state column starts at the same terminal cell on both rows (a CJK character is two).
    starts = {cell_len(line[: line.index("UNACKNOWLEDGED")]) for line in lines}
    assert len(starts) == 1


def test_a_terminal_too_small_for_everything_keeps_the_top_alarm() -> None:
    console = quiet_console()
    long_history(console)
    lines = draw(console, 80, 6)
    assert len(lines) <= 6
    assert any(line.startswith("[1]") and "UNACKNOWLEDGED" in line for line in lines)


def test_bureau_sees_open_rule_violations_overdue_entries_and_misses_at_80x24() -> None:
    console = quiet_console()
    long_history(console)
    gw = Gateway(console)
    gw.seq = 200
    rule = {"rule": "bollards-up", "required_state": "up", "state": "down"}
    gw.event("rule.violation", age_s=90, device="bollard_1", data=rule)
    ended = gw.event("rule.violation", age_s=80, device="bollard_2", data=rule)
    gw.event("rule.restored", age_s=70, device="bollard_2", data=rule | {"violation_id": ended})
    entry = {"entry": "20261124-001", "what": "bollard_3 does not answer", "where": "lane"}
    gw.event("ledger.overdue", age_s=60, device="ledger", data=entry)
    closed = entry | {"entry": "20261124-002"}
    gw.event("ledger.overdue", age_s=50, device="ledger", data=closed)
    gw.event("ledger.closed", age_s=40, device="ledger", data=closed)
    gw.event(
        "patrol.missed",
        age_s=30,
        device="main",
        data={"plan": "main", "date": "2026-11-23", "rounds_done": 4, "rounds_required": 5},
    )
    gw.event(
        "drill.missing", age_s=20, device="gateway", data={"quarter": "2026-Q4", "days_left": 14}
    )
    gw.event("rule.violation", age_s=10, device="bollard_4", data="not an object")  # a row of "?"
    lines = draw(console, 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24
    assert "UNACKNOWLEDGED" in text  # the open alarm still comes first
    assert "rule violations open:" in text
    assert "school-1/gate-1 bollard_1: down, must be up (bollards-up)" in text
    assert "bollard_2" not in text  # restored
    assert "ledger entries overdue:" in text and "20261124-001" in text
    assert "20261124-002" not in text  # closed
    assert "patrol main 2026-11-23: 4 of 5 rounds" in text
    assert "no drill in 2026-Q4, 14 days left" in text


def test_a_gateway_in_test_mode_and_its_test_alarms_show_as_tests_at_80x24() -> None:
    """Issue 13: a gateway's test mode is on screen with who started it and until when, its
    alarms are marked TEST and not drawn as alarms to act on; a real alarm still is."""
    records: list[dict[str, Any]] = []
    params = mqtt.BrokerParams("127.0.0.1", 1883, client_id="unit")
    options = ConsoleOptions(broker=params, gateway_keys={}, allow_unsigned=True)
    console = Console(options, records.append, clock_ms=lambda: NOW_MS)
    gw = Gateway(console)
    until = (NOW + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=8)))
    gw.event("gateway.test_started", age_s=60, device="gateway", test=True,
             data={"by": "王师傅", "minutes": 5, "until": until.isoformat()})  # fmt: skip
    gw.event("alarm.panic", age_s=30, device="box_east", location="东门岗亭", test=True)
    gw.event("alarm.panic", age_s=10, device="box_west", location="West gate")
    assert {"console": "test_started", "school": "school-1", "gateway": "gate-1",
            "by": "王师傅", "until": until.isoformat()} in records  # fmt: skip

    lines = draw(console, 80, 24)
    assert len(lines) <= 24 and all(cell_len(line) <= 80 for line in lines)
    screen = "\n".join(lines)
    assert "test mode (alarms are TEST, do not dispatch):" in screen
    assert f"school-1/gate-1  until {until.strftime('%H:%M:%S')}, started by 王师傅" in screen
    [test_line] = [line for line in lines if "box_east" in line]
    assert "TEST" in test_line
    [real_line] = [line for line in lines if "box_west" in line]
    assert "TEST" not in real_line and "UNACKNOWLEDGED" in real_line

    gw.event("gateway.test_stopped", age_s=1, device="gateway", test=True, data={"by": "timer"})
    screen = "\n".join(draw(console, 80, 24))
    assert "test mode" not in screen
    assert "test_stopped: school=school-1 gateway=gate-1 by=timer" in screen  # recent notices
