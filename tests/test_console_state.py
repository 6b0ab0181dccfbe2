"""The console's pure parts: de-duplication, the gap check, the silence check, the board order,
the view's text, and `Console.handle` refusing payloads that verify but make no sense."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import pytest
import rich.console
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.uplink import mqtt
from receiver.console import Console, ConsoleOptions
from receiver.state import (
    MAX_REPLAY_SPAN,
    AlarmBoard,
    Deduper,
    Gap,
    GapTracker,
    GatewayRef,
    SilenceTracker,
    TestModes,
)
from receiver.view import Screen, age_text, alarm_row

GW = GatewayRef("school-1", "gate-1")


def test_deduper_forgets_the_oldest_past_capacity() -> None:
    dedupe = Deduper(capacity=2)
    assert [dedupe.first_time(i) for i in ("a", "b", "a", "c", "a")] == [
        True, True, False, True, True,
    ]  # fmt: skip
    assert dedupe.duplicates == 1
    with pytest.raises(ValueError, match="capacity"):
        Deduper(0)


def test_first_heartbeat_of_a_connection_is_a_baseline() -> None:
    gaps = GapTracker()
    assert gaps.heartbeat(GW, 0, 500, 500) is None  # all history: a console never saw it
    assert gaps.heartbeat(GW, 500, 500, 0) is None
    gap = gaps.heartbeat(GW, 500, 503, 2)
    assert gap is not None and gap.seen == 0
    assert gaps.heartbeat(GW, 500, 503, 2) is None  # the same heartbeat again
    assert gaps.saw(GW, 501) == []
    assert gaps.saw(GW, 499) == []  # outside the range
    assert gaps.saw(GW, 503) == [gap]
    assert (gaps.found, gaps.filled, gaps.open_gaps()) == (1, 1, [])


def test_gap_check_counts_each_gateway_apart() -> None:
    gaps = GapTracker()
    other = GatewayRef("school-1", "gate-2")
    gaps.saw(other, 2)
    assert gaps.heartbeat(GW, 1, 2, 1) is not None
    assert gaps.heartbeat(other, 1, 2, 1) is None


def test_seen_seqs_are_pruned_below_the_last_heartbeat_but_not_below_an_open_gap() -> None:
    gaps = GapTracker(prune_above=10)
    gap = gaps.heartbeat(GW, 5, 10, 5)
    for seq in range(11, 40):
        gaps.saw(GW, seq)
    assert gaps.heartbeat(GW, 30, 39, 9) is None  # prunes below 5, the open gap's start
    for seq in (6, 7, 8, 9):
        gaps.saw(GW, seq)
    assert gaps.saw(GW, 10) == [gap]
    assert gaps.heartbeat(GW, 39, 41, 2) is not None  # prunes up to 39: nothing is open below
    assert gaps.heartbeat(GW, 30, 39, 9) is None  # older than the last one checked: ignored
    assert gaps.found == 2


def test_replay_ranges_are_inclusive_and_within_the_contract_limit() -> None:
    assert Gap(GW, 2, 5, 3, 2).replay_ranges() == [(3, 5)]
    ranges = Gap(GW, 0, 2 * MAX_REPLAY_SPAN + 5, 9, 0).replay_ranges()
    assert ranges[0] == (1, MAX_REPLAY_SPAN + 1)
    assert all(high - low <= MAX_REPLAY_SPAN for low, high in ranges)
    assert ranges[-1][1] == 2 * MAX_REPLAY_SPAN + 5
    assert [r[0] for r in ranges[1:]] == [r[1] + 1 for r in ranges[:-1]]


def test_silence_tracker_flags_quiet_once_and_reports_the_way_back() -> None:
    silence = SilenceTracker(1000, [GW], now_ms=0)
    assert silence.check(999) == []
    [quiet] = silence.check(1000)
    assert (quiet["reason"], quiet["quiet_s"]) == ("quiet", 1.0)
    assert silence.check(5000) == []  # reported once
    assert silence.heard(GW, 5001) == [
        {"console": "back", "school": "school-1", "gateway": "gate-1"}
    ]
    [offline] = silence.heard(GW, 5002, online=False)
    assert offline["reason"] == "offline"
    assert silence.check(99_000) == []  # already silent
    assert silence.heard(GW, 99_001) == []  # an event is no "online"
    assert silence.heard(GW, 99_002, online=True)[0]["console"] == "back"
    with pytest.raises(ValueError, match="positive"):
        SilenceTracker(0, [], 0)


def event(
    event_id: str,
    event_type: str = "alarm.panic",
    at: str = "2026-11-24T08:00:00.000+08:00",
    **extra: Any,
) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "occurred_at": at, "device": {"id": "box"}} | extra


def test_acknowledgement_before_its_alarm_is_kept_for_it() -> None:
    board = AlarmBoard()
    board.apply(GW, event("ack", "alarm.acknowledged", alarm_id="a1", data={"by": "Li"}), 0)
    assert board.ordered() == []  # nothing to show yet
    board.apply(GW, event("a1", alarm_id="a1"), 0)
    [alarm] = board.ordered()
    assert alarm.acknowledged_by == "Li" and board.top_unacknowledged() is None


def test_board_ignores_state_events_and_shows_latchless_alarm_lane_events() -> None:
    board = AlarmBoard()
    assert board.apply(GW, event("e1", "device.offline"), 0) is None
    forced = board.apply(GW, event("e2", "access.door_forced", at="not a time"), 1234)
    assert forced is not None and forced.alarm_id == "e2" and forced.raised_at_ms == 1234


def test_closed_alarms_are_forgotten_past_the_limit() -> None:
    board = AlarmBoard(keep_closed=1)
    for n in range(3):
        board.apply(GW, event(f"a{n}", alarm_id=f"a{n}"), 0)
        board.apply(GW, event(f"r{n}", "alarm.reset", alarm_id=f"a{n}"), 0)
    assert [a.alarm_id for a in board.ordered()] == ["a2"]


@pytest.mark.parametrize(
    ("age_ms", "text"),
    [
        (-5000, "0s"),
        (59_999, "59s"),
        (65_000, "1m05s"),
        (7_260_000, "2h01m"),
        (90_000_000, "1d01h"),
    ],
)
def test_age_text(age_ms: int, text: str) -> None:
    assert age_text(age_ms) == text


def test_alarm_row_colors_only_open_unacknowledged_real_alarms() -> None:
    board = AlarmBoard()
    alarm = board.apply(GW, event("a1", alarm_id="a1", data={"presses": 2}), 0)
    assert alarm is not None
    row = alarm_row(1, alarm, alarm.raised_at_ms)
    assert row.style == "bold red" and row.cells[0] == "[1]"
    assert "x2" in row.cells[4]
    assert alarm_row(10, alarm, alarm.raised_at_ms).cells[0] == ""  # no key reaches it
    drill = board.apply(GW, event("d1", alarm_id="d1", drill=True), 0)
    assert drill is not None and alarm_row(2, drill, 0).style == ""
    test = board.apply(GW, event("t1", alarm_id="t1", test=True), 0)
    assert test is not None and test.test and not test.drill
    row = alarm_row(3, test, 0)
    assert row.style == "" and row.cells[5] == "TEST UNACKNOWLEDGED"
    board.apply(GW, event("r1", "alarm.reset", alarm_id="a1", data={"reset_by": "guard"}), 0)
    assert alarm_row(1, alarm, 0).style == "dim"


def unsigned_console() -> tuple[Console, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    params = mqtt.BrokerParams("127.0.0.1", 1, client_id="unit")
    options = ConsoleOptions(broker=params, gateway_keys={}, allow_unsigned=True)
    return Console(options, records.append), records


BASE = "schoolgate/v1/school-1/gate-1"
WHO = {"school": "school-1", "gateway": "gate-1"}


@pytest.mark.parametrize(
    ("topic", "payload", "detail"),
    [
        (f"{BASE}/events/alarm", WHO | {"id": "e", "type": "alarm.panic"}, "seq"),
        (f"{BASE}/events/alarm", WHO | {"id": "e", "seq": True, "type": "x"}, "seq"),
        (f"{BASE}/events/alarm", WHO | {"id": "", "seq": 1, "type": "x"}, "id"),
        (f"{BASE}/events/alarm", WHO | {"id": "e", "seq": 1}, "type"),
        (f"{BASE}/heartbeat", WHO | {"type": "status"}, "heartbeat"),
        (f"{BASE}/heartbeat", WHO | {"type": "heartbeat", "from_seq": 1}, "last_seq"),
        (
            f"{BASE}/heartbeat",
            WHO | {"type": "heartbeat", "from_seq": 5, "last_seq": 6, "routed": 2},
            "range",
        ),
        (f"{BASE}/status", WHO | {"online": "yes"}, "online"),
        (f"{BASE}/status", {"school": "school-1", "gateway": "gate-2", "online": True}, "topic"),
        (f"{BASE}/status", [1, 2], "not a JSON object"),
    ],
)
def test_payloads_that_make_no_sense_are_refused(topic: str, payload: Any, detail: str) -> None:
    console, records = unsigned_console()
    console.handle(topic, json.dumps(payload).encode())
    [notice] = records
    assert notice["console"] == "refused" and notice["reason"] == "malformed"
    assert detail in notice["detail"]
    assert console.refused["malformed"] == 1


def test_topics_outside_the_gateway_tree_are_ignored() -> None:
    console, records = unsigned_console()
    console.handle("elsewhere/x/y/events/alarm", b"{}")
    console.handle(f"{BASE}", b"{}")
    console.handle(f"{BASE}/commands", b"{}")
    console.handle(f"{BASE}/results", json.dumps(WHO | {"command_id": "not ours"}).encode())
    assert records == []


def test_test_mode_is_on_from_its_start_to_its_stop_or_its_announced_end() -> None:
    modes = TestModes()
    other = GatewayRef("school-1", "gate-2")
    until = "2026-11-24T16:05:00.000+08:00"
    until_ms = round(datetime.fromisoformat(until).timestamp() * 1000)
    started = {"type": "gateway.test_started", "data": {"by": "王师傅", "minutes": 5,
                                                         "until": until}}  # fmt: skip
    assert modes.apply(GW, started) == {
        "console": "test_started", "school": "school-1", "gateway": "gate-1", "by": "王师傅",
        "until": until,
    }  # fmt: skip
    assert modes.apply(GW, {"type": "alarm.panic", "data": {}}) is None
    assert [(ref, on.by) for ref, on in modes.on(until_ms - 1)] == [(GW, "王师傅")]
    assert modes.on(until_ms) == []  # its end passed: off, stop heard or not
    # A start whose end cannot be read is told, not kept on.
    broken = {"type": "gateway.test_started", "data": {"until": "soon"}}
    assert modes.apply(other, broken) == {
        "console": "test_started", "school": "school-1", "gateway": "gate-2", "by": "?",
        "until": "?",
    }  # fmt: skip
    assert [ref for ref, _ in modes.on(0)] == [GW]
    stopped = {"type": "gateway.test_stopped", "data": {"by": "timer"}}
    assert modes.apply(GW, stopped) == {
        "console": "test_stopped",
        "school": "school-1",
        "gateway": "gate-1",
        "by": "timer",
    }
    assert modes.on(0) == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    event_type=st.sampled_from(["gateway.test_started", "gateway.test_stopped", "alarm.panic"]),
    data=_JSON,
    until=st.one_of(_JSON, st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())),
    test=_JSON,
)
@settings(max_examples=200, deadline=None)
def test_test_mode_events_of_any_shape_never_break_the_console(
    event_type: str, data: object, until: object, test: object
) -> None:
    """Untrusted (if signed) bytes: whatever a test-mode event or a test mark carries, the console
    takes it or refuses it with a reason, and the view still draws."""
    console, _ = unsigned_console()
    fields = {**data, "until": until} if isinstance(data, dict) else {"by": data, "until": until}
    payload = WHO | {"id": "e-1", "seq": 1, "type": event_type, "data": fields, "test": test,
                     "occurred_at": until}  # fmt: skip
    console.handle(f"{BASE}/events/x", json.dumps(payload).encode())
    terminal = rich.console.Console(width=80, height=24, file=io.StringIO())
    terminal.print(Screen(console, 0))
