"""The console's state at city size (issue 15): 5,000 gateways' state in memory with bounded
growth per gateway, silent gateways found within one heartbeat interval plus the grace, a
district's view (`school_pattern`), open alarms on top. Pure: messages go to `Console.handle`
(unsigned, `allow_unsigned`), time is an injected clock."""

from __future__ import annotations

import json
from typing import Any

from gateway.uplink import mqtt
from receiver.console import Console, ConsoleOptions
from receiver.state import AlarmBoard, GapTracker, GatewayRef

ROOT = "schoolgate/v1"
HEARTBEAT_S = 30
GRACE_S = 15


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def console(clock: Clock, **overrides: Any) -> Console:
    fields: dict[str, Any] = {
        "broker": mqtt.BrokerParams("127.0.0.1", 1, client_id="state-test"),
        "gateway_keys": {},
        "allow_unsigned": True,
        "silent_after_s": HEARTBEAT_S + GRACE_S,
    }
    return Console(ConsoleOptions(**(fields | overrides)), lambda record: None, clock_ms=clock)


def event(ref: GatewayRef, seq: int, kind: str, **extra: Any) -> tuple[str, bytes]:
    body: dict[str, Any] = {"school": ref.school, "gateway": ref.gateway, "id": f"{ref}-{seq}"}
    body["seq"] = seq
    body |= {"type": kind, "data": {}} | extra
    return f"{ROOT}/{ref}/events/{kind.split('.', maxsplit=1)[0]}", json.dumps(body).encode()


def heartbeat(ref: GatewayRef, from_seq: int, last_seq: int) -> tuple[str, bytes]:
    body: dict[str, Any] = {"school": ref.school, "gateway": ref.gateway, "type": "heartbeat"}
    body |= {"from_seq": from_seq, "last_seq": last_seq, "routed": last_seq - from_seq}
    return f"{ROOT}/{ref}/heartbeat", json.dumps(body).encode()


def fleet(count: int) -> list[GatewayRef]:
    return [GatewayRef(f"district{i % 10}-school-{i}", "gate-1") for i in range(count)]


def test_five_thousand_gateways_and_a_silent_one_found_within_heartbeat_plus_grace() -> None:
    clock = Clock()
    view = console(clock)
    refs = fleet(5_000)
    for ref in refs:
        view.handle(*heartbeat(ref, 0, 0))
    assert len(view.silence.gateways) == 5_000
    quiet = refs[1234]
    found_at_s = None
    for second in range(5, 61, 5):  # every other gateway keeps its heartbeats; checks go on
        clock.ms += 5_000
        if second % HEARTBEAT_S == 0:
            for ref in refs:
                if ref != quiet:
                    view.handle(*heartbeat(ref, 0, 0))
        if view.silence.check(clock.ms) and found_at_s is None:
            found_at_s = second
    assert found_at_s == HEARTBEAT_S + GRACE_S  # one heartbeat interval plus the grace
    assert [ref for ref, _ in view.silence.silent()] == [quiet]


def test_what_is_kept_per_gateway_is_bounded() -> None:
    clock = Clock()
    view = console(clock)
    ref = GatewayRef("school-1", "gate-1")
    seq = 0
    for beat in range(40):  # 40 heartbeats of 500 events, 5 of them acknowledged alarms
        start = seq
        for _ in range(495):
            seq += 1
            view.handle(*event(ref, seq, "access.door_opened"))
        for _ in range(5):
            seq += 1
            alarm_id = f"alarm-{seq}"
            view.handle(*event(ref, seq, "alarm.panic", alarm_id=alarm_id))
            view.handle(
                *event(
                    ref, seq + 100_000, "alarm.acknowledged", alarm_id=alarm_id, data={"by": "Li"}
                )
            )
        view.handle(*heartbeat(ref, start, seq))
        clock.ms += 1000 * beat
    assert view.gaps.seqs_held(ref) <= 1_000  # not the 20,000 seen
    assert len(view.board) <= 50  # acknowledged alarms: the newest 50 of 200
    assert view.events_seen == 20_000 + 200


def test_open_gaps_per_gateway_are_capped() -> None:
    gaps = GapTracker(max_open_gaps=4)
    ref = GatewayRef("school-1", "gate-1")
    for beat in range(1, 11):  # every heartbeat reports 10 events the console never saw
        gaps.heartbeat(ref, beat * 10, beat * 10 + 10, 10)
    assert len(gaps.open_gaps()) == 4
    assert (gaps.found, gaps.abandoned) == (10, 6)


def test_open_alarms_stay_on_top_and_are_never_dropped() -> None:
    board = AlarmBoard(keep_closed=1, keep_acknowledged_per_gateway=1)
    ref = GatewayRef("school-1", "gate-1")

    def apply(seq: int, kind: str, alarm_id: str, **data: Any) -> None:
        at = f"2026-01-01T08:00:{seq:02d}+08:00"
        body = {"id": f"e{seq}", "type": kind, "alarm_id": alarm_id, "data": data}
        board.apply(ref, body | {"occurred_at": at}, 0)

    apply(1, "alarm.panic", "open-old")
    for n in range(2, 30):
        apply(n, "alarm.panic", f"a{n}")
        apply(n, "alarm.acknowledged", f"a{n}", by="Li")
    apply(30, "alarm.panic", "open-new")
    ordered = [a.alarm_id for a in board.ordered()]
    assert ordered[:2] == ["open-new", "open-old"]
    assert len(ordered) == 3  # the two open ones, and one acknowledged


def test_a_districts_console_keeps_only_its_district() -> None:
    clock = Clock()
    view = console(clock, school_pattern="district3-*")
    for ref in fleet(100):
        view.handle(*heartbeat(ref, 0, 0))
        view.handle(*event(ref, 1, "alarm.panic", alarm_id=f"{ref}-alarm"))
    assert {ref.school.split("-")[0] for ref in view.silence.gateways} == {"district3"}
    assert len(view.silence.gateways) == 10
    assert len(view.board.ordered()) == 10
    assert view.filtered_out == 180
