"""The MQTT contract's JSON Schemas (docs/schemas) against what the gateway publishes and what it
is sent: the schemas are valid; a payload of every event type built by `gateway.core.contract` keeps
them and broken ones do not; so do heartbeats and command results, and a signed command
(`gateway.core.auth`) of every command, whose args the command handler takes exactly when the schema
does; and every message the whole simulated gate publishes during two shipped scenarios keeps them.
(The signed alarm loop's messages are checked in tests/test_alarm_loop_e2e.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.base import CommandError
from gateway.alarms.latch import UnknownAlarm
from gateway.commands import handlers as commands
from gateway.core import auth, contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.ledger import LedgerSummary
from gateway.rules.report import (
    DeviceLive,
    LiveFigures,
    PathLive,
    RulesFigures,
    build_report,
    report_span,
)
from gateway.rules.state import LedgerEntry, ViolationRecord
from gateway.security import Security
from gateway.store.report_reads import Backlog, StoreFigures
from simulators.contract_check import (
    SCHEMA_DIR,
    SCHEMA_FILES,
    ContractChecker,
    ContractViolation,
    check_schemas,
    default_checker,
    load_json,
)
from simulators.gate import simulated_gate
from simulators.scenario import play
from simulators.scenario_model import load_scenario

ROOT = Path(__file__).parent.parent
SITE = contract.Site("sim-school", "north-gate", ZoneInfo("Asia/Shanghai"))
AT_MS = 1_795_479_302_137  # 2026-11-24T08:15:02.137+08:00

BOX = DeviceRef("panic_box", "alarm_box", "North gate, guard booth")
BOLLARD = DeviceRef("bollard_1", "bollard", "North gate, vehicle lane")
SOCKETS = DeviceRef("lane_sockets", "bollard_sockets", "North gate, pedestrian lane")
DOORS = DeviceRef("gate_doors", "access_controller", "North gate, pedestrian gate")
UPS = DeviceRef("gatehouse_ups", "modbus_points", "")
GATEWAY = DeviceRef("gateway", "gateway", "")
ALARM_ID = "01a20c49-600f-7000-9b87-ba52e904390a"  # fixed: it is in test ids (xdist compares them)
CARD_GRANTED: dict[str, Any] = {
    "controller_seq": 1,
    "card": 12345678,
    "reader": 1,
    "reader_name": "out",
    "granted": True,
}
CARD_DENIED: dict[str, Any] = {
    "controller_seq": 65535,
    "card": 4294967295,
    "reader": 2,
    "reader_name": "",
    "granted": False,
    "reason": "unknown_card",
}

PLAN = DeviceRef("main", "patrol_plan", "")
CHECKPOINT = DeviceRef("gate_doors-r1", "patrol_checkpoint", "North gate, pedestrian gate")
LEDGER = DeviceRef("ledger", "fault_ledger", "")
VIOLATION = {
    "rule": "bollards-up",
    "required_state": "up",
    "state": "down",
    "applies": "outside",
    "grace_s": 300.0,
}
ENTRY = {
    "entry": "20261124-001",
    "kind": "device_offline",
    "what": "bollard_1 (bollard) does not answer: timeout",
    "where": "North gate, vehicle lane",
    "opened_ms": AT_MS - 60_000,
    "deadline_ms": AT_MS + 86_340_000,
}
RULE_EVENTS: list[tuple[str, Severity, DeviceRef, dict[str, Any]]] = [
    ("rule.violation", Severity.MAJOR, BOLLARD, VIOLATION),
    (
        "rule.restored",
        Severity.INFO,
        BOLLARD,
        VIOLATION | {"state": "up", "violation_id": ALARM_ID, "violation_ms": AT_MS - 1000},
    ),
    (
        "rule.action",
        Severity.INFO,
        BOLLARD,
        {"command": "raise", "args": {}, "ok": True, "result": {"position": "up"}},
    ),
    (
        "rule.action",
        Severity.MINOR,
        BOLLARD,
        {"command": "raise", "args": {}, "ok": False, "error": "no answer"},
    ),
    (
        "patrol.checkpoint",
        Severity.INFO,
        CHECKPOINT,
        {"plan": "main", "card": "12345678", "point": 1, "in_round": True},
    ),
    (
        "patrol.round_completed",
        Severity.INFO,
        PLAN,
        {"plan": "main", "card": "12345678", "round": 2, "required": 5},
    ),
    (
        "patrol.missed",
        Severity.MAJOR,
        PLAN,
        {
            "plan": "main",
            "date": "2026-11-24",
            "rounds_done": 4,
            "rounds_required": 5,
            "rounds_missing": 1,
            "missing_points": ["gate_doors-r2"],
        },
    ),
    ("ledger.opened", Severity.MINOR, LEDGER, ENTRY),
    ("ledger.overdue", Severity.MAJOR, LEDGER, ENTRY),
    (
        "ledger.closed",
        Severity.INFO,
        LEDGER,
        ENTRY | {"closed_by": "auto", "note": "bollard_1 answered again", "repair_s": 60.0},
    ),
    (
        "drill.missing",
        Severity.MAJOR,
        GATEWAY,
        {"quarter": "2026-Q4", "quarter_ends": "2026-12-31", "days_left": 14, "drills": 0},
    ),
]
"""The rules' events (gateway/rules), and a daily report built by gateway.rules.report."""


def _daily_report() -> dict[str, Any]:
    span = report_span(date(2026, 11, 24), time(18, 0), SITE.tz)
    panic = wire_body(make_event(EVENTS_BASE[0])) | {"occurred_at_ms": AT_MS}
    ack_row = next(r for r in EVENTS_BASE if r[0] == "alarm.acknowledged")
    ack = wire_body(make_event(ack_row)) | {"occurred_at_ms": AT_MS + 3500}
    entry = LedgerEntry(
        "20261124-001",
        "device_offline",
        "offline:bollard_1",
        "x",
        "gate",
        AT_MS - 60_000,
        AT_MS + 86_340_000,
    )
    return build_report(
        span,
        SITE.tz,
        events=[panic, ack],
        health_before={},
        store=StoreFigures(["ok"], 4096, 10**9, 10**10, [Backlog("bureau", "state", 3, AT_MS)]),
        live=LiveFigures(
            devices={
                "bollard_1": DeviceLive("bollard", "lane", "online"),
                "gate_doors": DeviceLive("access_controller", "gate", "offline", 120),
            },
            paths={"police": PathLive(True, AT_MS - 10, AT_MS, AT_MS + 3500)},
            clock_sync={"synchronised": True, "max_error_ms": 12.5, "estimated_error_ms": 0.1},
        ),
        rules=RulesFigures(
            ledger=[entry],
            ledger_summary=LedgerSummary(1, 0, 0, None),
            open_violations=[ViolationRecord("bollards-up", "bollard_1", AT_MS, ALARM_ID)],
            patrols=[{"plan": "main", "rounds_done": 5, "rounds_required": 5, "latest": "22:00"}],
            drills={"quarter": "2026-Q4", "this_quarter": 1, "quarter_ends": "2026-12-31"},
        ),
    )


# (type, severity, device, data): what each driver, rule and store really emits (the docs'
# tables, checked against the code). More than one row for a type covers its variants.
EVENTS_BASE: list[tuple[str, Severity, DeviceRef, dict[str, Any]]] = [
    ("alarm.panic", Severity.CRITICAL, BOX, {"button": 0, "button_name": "desk", "presses": 1}),
    (
        "alarm.panic_repeated",
        Severity.CRITICAL,
        BOX,
        {"button": 0, "button_name": "", "presses": 3},
    ),
    ("alarm.reset", Severity.INFO, BOX, {"button": 0, "reset_by": "reset input", "presses": 3}),
    (
        "alarm.reset",
        Severity.INFO,
        BOX,
        {"button": 0, "reset_by": "li", "presses": 1, "reset_by_uid": 1001, "reset_by_user": "li"},
    ),
    ("device.offline", Severity.MAJOR, BOLLARD, {"error": "no answer from unit 2"}),
    ("device.online", Severity.INFO, DOORS, {}),
    ("bollard.state", Severity.INFO, BOLLARD, {"position": "up", "previous": None, "cycles": 7}),
    ("bollard.state", Severity.INFO, BOLLARD, {"position": "lowering", "previous": "up"}),
    ("bollard.state", Severity.INFO, BOLLARD, {"position": "unknown", "previous": "up", "raw": 9}),
    ("bollard.raised", Severity.INFO, BOLLARD, {"previous": "rising", "cycles": 8}),
    ("bollard.lowered", Severity.INFO, BOLLARD, {"previous": "lowering"}),
    ("bollard.fault", Severity.MAJOR, BOLLARD, {"code": 7, "previous_code": None}),
    ("bollard.fault", Severity.MAJOR, BOLLARD, {"code": 9, "previous_code": 7}),
    ("bollard.fault_cleared", Severity.INFO, BOLLARD, {"previous_code": 9}),
    (
        "bollard.stuck",
        Severity.MAJOR,
        BOLLARD,
        {"target": "down", "position": "lowering", "command": None, "travel_timeout_ms": 2000},
    ),
    (
        "bollard.stuck",
        Severity.MAJOR,
        BOLLARD,
        {"target": "up", "position": "down", "command": "raise", "travel_timeout_ms": 8000},
    ),
    ("bollard.emergency_raise", Severity.CRITICAL, BOLLARD, {"source": "input"}),
    ("bollard.emergency_raise", Severity.CRITICAL, BOLLARD, {"source": "command"}),
    ("bollard.pulled", Severity.INFO, SOCKETS, {"socket": "socket 1", "input": 0}),
    ("bollard.pulled", Severity.INFO, SOCKETS, {"socket": "socket 2", "input": 1, "initial": True}),
    ("bollard.inserted", Severity.INFO, SOCKETS, {"socket": "socket 1", "input": 0}),
    (
        "bollard.not_reinserted",
        Severity.CRITICAL,
        SOCKETS,
        {"socket": "lane_sockets:socket 1", "started_ms": AT_MS - 600_000, "allowed_s": 600.0},
    ),
    (
        "bollard.reinserted",
        Severity.INFO,
        SOCKETS,
        {"socket": "lane_sockets:socket 1", "expired_ms": AT_MS},
    ),
    (
        "bollard.not_reinserted_cleared",
        Severity.INFO,
        SOCKETS,
        {
            "socket": "lane_sockets:socket 1",
            "expired_ms": AT_MS,
            "by": "Wang",
            "note": "under repair",
        },
    ),
    ("access.card", Severity.INFO, DOORS, CARD_GRANTED),
    ("access.card", Severity.MINOR, DOORS, CARD_DENIED),
    (
        "access.door_opened",
        Severity.INFO,
        DOORS,
        {"controller_seq": 2, "door": 1, "door_name": "g"},
    ),
    ("access.door_closed", Severity.INFO, DOORS, {"controller_seq": 3, "door": 1, "door_name": ""}),
    (
        "access.door_forced",
        Severity.CRITICAL,
        DOORS,
        {"controller_seq": 4, "door": 2, "door_name": "s"},
    ),
    (
        "access.door_held_open",
        Severity.MINOR,
        DOORS,
        {"controller_seq": 5, "door": 1, "door_name": "g", "held_s": 30},
    ),
    (
        "access.exit_button",
        Severity.INFO,
        DOORS,
        {"controller_seq": 6, "door": 2, "door_name": "s"},
    ),
    ("access.tamper", Severity.MAJOR, DOORS, {"controller_seq": 7, "active": True}),
    ("access.tamper", Severity.INFO, DOORS, {"controller_seq": 8, "active": False}),
    ("access.lockdown", Severity.INFO, DOORS, {"lockdown": True}),
    ("access.lockdown", Severity.INFO, DOORS, {"lockdown": False}),
    (
        "access.clock_corrected",
        Severity.MINOR,
        DOORS,
        {"skew_ms": -4200, "max_clock_skew_ms": 1000},
    ),
    (
        "access.clock_not_correctable",
        Severity.MAJOR,
        DOORS,
        {"skew_ms": 61_000, "max_clock_skew_ms": 1000, "error": "controller refused SET_CLOCK"},
    ),
    (
        "telemetry.point",
        Severity.INFO,
        UPS,
        {"name": "battery_voltage", "value": 26.4, "unit": "V", "reason": "initial"},
    ),
    (
        "telemetry.point",
        Severity.INFO,
        UPS,
        {"name": "on_battery", "value": True, "unit": "", "reason": "change"},
    ),
    (
        "telemetry.point",
        Severity.INFO,
        UPS,
        {"name": "count", "value": -3, "unit": "", "reason": "interval"},
    ),
    (
        "telemetry.point",
        Severity.INFO,
        UPS,
        {"name": "temp", "value": None, "unit": "°C", "reason": "change"},
    ),
    (
        "gateway.storage_fault",
        Severity.MAJOR,
        GATEWAY,
        {"fault": "write_failed", "error": "database or disk is full"},
    ),
    (
        "gateway.storage_fault",
        Severity.MAJOR,
        GATEWAY,
        {"fault": "corrupt_database", "error": "file is not a database", "moved_to": "/x.corrupt"},
    ),
    (
        "gateway.storage_recovered",
        Severity.INFO,
        GATEWAY,
        {"written_back": 12, "dropped_in_memory": 0, "fault": "database or disk is full"},
    ),
    ("gateway.eviction", Severity.MAJOR, GATEWAY, {"evicted_undelivered": {"telemetry": 400}}),
    (
        "alarm.acknowledged",
        Severity.INFO,
        BOX,
        {"by": "Officer Li", "issuer": "police-console", "command_id": "7d4c", "after_ms": 3500},
    ),
    (
        "alarm.escalated",
        Severity.CRITICAL,
        BOX,
        {"button": 0, "button_name": "desk", "presses": 1, "after_s": 30.004, "siren": True},
    ),
    (
        "gateway.path_down",
        Severity.MAJOR,
        GATEWAY,
        {
            "destination": "police",
            "down_since": "2026-11-24T08:14:02.137+08:00",
            "error": "refused",
        },
    ),
    ("gateway.path_up", Severity.INFO, GATEWAY, {"destination": "police", "down_s": 61.5}),
    ("gateway.drill_started", Severity.INFO, GATEWAY, {"by": "Officer Li", "minutes": 60}),
    ("gateway.drill_stopped", Severity.INFO, GATEWAY, {"by": "Officer Li"}),
    (
        "gateway.test_started",
        Severity.INFO,
        GATEWAY,
        {"by": "installer", "minutes": 30, "until": "2026-11-24T08:45:02.137+08:00"},
    ),
    ("gateway.test_stopped", Severity.INFO, GATEWAY, {"by": "timer"}),
]


PAYLOAD_TYPES = {"heartbeat", "command.result"}
"""The `type` of the payloads that are not events (heartbeats, command results)."""


def make_event(row: tuple[str, Severity, DeviceRef, dict[str, Any]], seq: int = 42) -> Event:
    event_type, severity, device, data = row
    event = new_event(
        event_type,
        device,
        severity=severity,
        occurred_at_ms=AT_MS,
        data=data,
        alarm_id=ALARM_ID if event_type.startswith("alarm.") else None,
    )
    # The outbox gives the seq when it stores, and marks what test mode stores (its own
    # start and stop announcements included) as a test.
    return dataclasses.replace(event, seq=seq, test=event_type.startswith("gateway.test_"))


def wire_body(event: Event) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(contract.encode_event_body(SITE, event))
    return body


EVENTS = [
    *EVENTS_BASE,
    *RULE_EVENTS,
    ("report.daily", Severity.INFO, GATEWAY, _daily_report()),
]


def wire(event: Event, *, historical: bool = False, attempt: int = 1) -> tuple[str, bytes]:
    body = contract.encode_event_body(SITE, event)
    payload = contract.finish_event_payload(body, historical=historical, attempt=attempt)
    return contract.event_topic(SITE, event.category), payload


def schema_types() -> set[str]:
    return set(load_json("event.schema.json")["properties"]["type"]["enum"])


# -- the schemas themselves -------------------------------------------------------------------


def test_the_schemas_are_valid_json_schema_2020_12() -> None:
    check_schemas()
    topics = load_json("topics.json")
    assert {t["schema"] for t in topics["topics"]} == set(SCHEMA_FILES)
    assert all((SCHEMA_DIR / name).is_file() for name in SCHEMA_FILES)


def test_the_table_covers_every_type_and_the_docs_name_no_other() -> None:
    assert {row[0] for row in EVENTS} == schema_types()
    # docs/contract.md and the drivers' pages name the types a receiver can get: the schema
    # must know each one, so a type written down without a schema is caught here. The contract
    # also names commands (`bollard.raise`, `drill.start`, ...) and the payload types
    # `heartbeat` and `command.result`: those are told apart by name, and may never be the name
    # of an event type, so setting them aside cannot hide an undocumented one.
    assert not (auth.COMMANDS | PAYLOAD_TYPES) & schema_types()
    categories = "|".join(sorted({t.split(".")[0] for t in schema_types()}))
    named = re.compile(rf"`((?:{categories})\.[a-z_]+)`")
    documented = set()
    for page in [ROOT / "docs" / "contract.md", *(ROOT / "docs" / "drivers").glob("*.md")]:
        documented |= set(named.findall(page.read_text()))
    assert documented - auth.COMMANDS - PAYLOAD_TYPES <= schema_types()
    # Every command is in the contract's table, and each payload type in its example.
    contract_page = (ROOT / "docs" / "contract.md").read_text()
    assert {n for n in auth.COMMANDS if f"`{n}`" not in contract_page} == set()
    assert {n for n in PAYLOAD_TYPES if f'"type": "{n}"' not in contract_page} == set()


def test_the_schemas_name_the_commands_and_reasons_the_gateway_knows() -> None:
    command_schema = load_json("command.schema.json")
    result_schema = load_json("result.schema.json")
    assert set(command_schema["properties"]["command"]["enum"]) == auth.COMMANDS
    assert set(result_schema["$defs"]["command"]["enum"]) == auth.COMMANDS
    rejected = result_schema["allOf"][1]["then"]["properties"]["reason"]["enum"]
    assert set(rejected) == set(typing.get_args(auth.Reason)) | {commands.INTERNAL_ERROR}
    failed = result_schema["allOf"][2]["then"]["properties"]["reason"]["enum"]
    assert commands.INTERNAL_ERROR in failed
    assert load_json("heartbeat.schema.json")["properties"]["type"]["const"] == "heartbeat"
    assert result_schema["properties"]["type"]["const"] == "command.result"


# -- payloads built by gateway.core.contract -------------------------------------------------------


@pytest.mark.parametrize("row", EVENTS, ids=[f"{r[0]}-{i}" for i, r in enumerate(EVENTS)])
def test_every_event_type_built_by_the_contract_module_validates(
    row: tuple[str, Severity, DeviceRef, dict[str, Any]],
) -> None:
    topic, payload = wire(make_event(row), historical=True, attempt=3)
    checked = ContractChecker(root="schoolgate/v1").check(topic, payload)
    assert checked.kind == "event" and checked.body["type"] == row[0]


def test_status_payloads_validate() -> None:
    checker = default_checker()
    topic = contract.status_topic(SITE)
    online = contract.status_payload(SITE, online=True, at_ms=AT_MS)
    assert checker.check(topic, online).kind == "status"
    assert checker.problems(topic, contract.status_payload(SITE, online=False)) == []  # the will
    assert checker.problems(topic, contract.status_payload(SITE, online=False, at_ms=AT_MS)) == []


def test_another_topic_root_is_checked_against_the_configured_one() -> None:
    site = contract.Site("sim-school", "north-gate", ZoneInfo("UTC"), topic_root="acme/sg/v1")
    event = make_event(EVENTS[0])
    body = contract.encode_event_body(site, event)
    payload = contract.finish_event_payload(body, historical=False, attempt=1)
    topic = contract.event_topic(site, event.category)
    assert ContractChecker(root="acme/sg/v1").problems(topic, payload) == []
    assert default_checker().problems(topic, payload) == []  # any valid root
    assert ContractChecker(root="schoolgate/v1").problems(topic, payload) == [
        "the topic matches no topic in topics.json"
    ]


def _panic() -> dict[str, Any]:
    topic, payload = wire(make_event(EVENTS[0]))
    assert topic.endswith("/events/alarm")
    body: dict[str, Any] = json.loads(payload)
    return body


def _without(key: str) -> dict[str, Any]:
    body = _panic()
    del body[key]
    return body


def _with(**changes: Any) -> dict[str, Any]:
    return _panic() | changes


def _with_data(**changes: Any) -> dict[str, Any]:
    body = _panic()
    body["data"] = body["data"] | changes
    return body


BROKEN: dict[str, dict[str, Any]] = {
    **{f"no {key}": _without(key) for key in load_json("event.schema.json")["required"]},
    "no alarm_id on an alarm": _without("alarm_id"),
    "schema 2": _with(schema=2),
    "seq as text": _with(seq="42"),
    "seq 0": _with(seq=0),
    "attempt 0": _with(attempt=0),
    "drill as text": _with(drill="no"),
    "data a list": _with(data=[]),
    "extra top-level key": _with(priority="high"),
    "a uuid4 id": _with(id="6f1c7d0e-3b8a-4c53-9a51-7d1c5a9e0b21"),
    "occurred_at without ms": _with(occurred_at="2026-11-24T08:15:02+08:00"),
    "occurred_at without offset": _with(occurred_at="2026-11-24T08:15:02.137"),
    "occurred_at in Z": _with(occurred_at="2026-11-24T00:15:02.137Z"),
    "occurred_at as epoch": _with(occurred_at=1795479302137),
    "unknown type": _with(type="alarm.fire"),
    "wrong severity": _with(severity="info"),
    "unknown severity": _with(severity="urgent"),
    "wrong device kind": _with(device={"id": "panic_box", "kind": "bollard", "location": ""}),
    "bad school": _with(school="Sim School"),
    "missing data field": _with(data={"button": 0, "presses": 1}),
    "extra data field": _with_data(colour="red"),
    "presses 0": _with_data(presses=0),
}


@pytest.mark.parametrize("body", BROKEN.values(), ids=BROKEN.keys())
def test_broken_event_payloads_do_not_validate(body: dict[str, Any]) -> None:
    topic = contract.event_topic(SITE, "alarm")
    assert default_checker().problems(topic, json.dumps(body).encode())


def test_signed_events_and_status_validate_and_a_bad_signature_field_does_not() -> None:
    # Events are signed when stored, before the delivery fields are appended.
    event = make_event(EVENTS[0])
    body = signed(contract.encode_event_body(SITE, event))
    payload = contract.finish_event_payload(body, historical=False, attempt=1)
    topic = contract.event_topic(SITE, "alarm")
    assert default_checker().problems(topic, payload) == []
    status = signed(contract.status_payload(SITE, online=True, at_ms=AT_MS))
    assert default_checker().problems(contract.status_topic(SITE), status) == []
    for changes in [{"sig": "c2lnbmF0dXJl"}, {"signer": "North Gate"}, {"sig": None}]:
        broken = json.loads(payload) | changes
        assert default_checker().problems(topic, json.dumps(broken).encode()), changes
    unsigned = {k: v for k, v in json.loads(payload).items() if k != "sig"}
    assert default_checker().problems(topic, json.dumps(unsigned).encode())  # signer alone


@pytest.mark.parametrize(
    ("topic_tail", "body", "expected"),
    [
        ("events/device", _panic(), "not in the topic's category"),
        ("events/alarm", _with(gateway="south-gate"), "gateway: 'south-gate' in the payload"),
        ("events", _panic(), "matches no topic"),
        (
            "status",
            {
                "schema": 1,
                "school": "sim-school",
                "gateway": "north-gate",
                "online": True,
                "version": "0.1.0",
            },
            "'at' is a required property",
        ),
        (
            "status",
            {
                "schema": 1,
                "school": "sim-school",
                "gateway": "north-gate",
                "online": False,
                "version": "0.1.0",
                "reason": "x",
            },
            "Additional properties",
        ),
    ],
    ids=["category", "gateway", "no category", "online without at", "status extra key"],
)
def test_topic_and_status_mismatches_are_named(
    topic_tail: str, body: dict[str, Any], expected: str
) -> None:
    problems = default_checker().problems(
        f"{SITE.base_topic}/{topic_tail}", json.dumps(body).encode()
    )
    assert any(expected in p for p in problems), problems


def test_broken_data_variants_do_not_validate() -> None:
    checker = default_checker()
    for event_type, severity, device, data in [
        # denied without a reason, granted with one
        ("access.card", Severity.MINOR, DOORS, {**CARD_GRANTED, "granted": False}),
        ("access.card", Severity.INFO, DOORS, {**CARD_DENIED, "granted": True}),
        # a denied card reported as info
        ("access.card", Severity.INFO, DOORS, CARD_DENIED),
        ("bollard.state", Severity.INFO, BOLLARD, {"position": "unknown", "previous": "up"}),
        ("bollard.state", Severity.INFO, BOLLARD, {"position": "sideways", "previous": None}),
        (
            "gateway.storage_fault",
            Severity.MAJOR,
            GATEWAY,
            {"fault": "corrupt_database", "error": ""},
        ),
        ("gateway.eviction", Severity.MAJOR, GATEWAY, {"evicted_undelivered": {"archive": 3}}),
        ("gateway.eviction", Severity.MAJOR, BOLLARD, {"evicted_undelivered": {"state": 3}}),
    ]:
        topic, payload = wire(make_event((event_type, severity, device, data)))
        assert checker.problems(topic, payload), (event_type, data)


def test_a_payload_that_is_not_json_is_named() -> None:
    problems = default_checker().problems(contract.status_topic(SITE), b"\xff online")
    assert problems and "not UTF-8 JSON" in problems[0]


# -- heartbeats, commands and command results ------------------------------------------------

GATEWAY_KEY = Ed25519PrivateKey.generate()
CONSOLE_KEY = Ed25519PrivateKey.generate()
COMMAND_ID = "7d4c3a51-3f1e-4c1b-9e0a-4b8f2b6c9d10"
ISSUED_AT = datetime.fromtimestamp(AT_MS / 1000, SITE.tz)
BEAT = contract.Heartbeat(
    destination="police",
    boot=7,
    from_seq=1180,
    last_seq=1212,
    routed=3,
    pending=0,
    paths={"police": "up", "bureau": "down"},
)


def signed(payload: bytes) -> bytes:
    return auth.sign_payload(payload, GATEWAY_KEY, "north-gate-2026")


def heartbeat(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(contract.heartbeat_payload(SITE, BEAT, at_ms=AT_MS))
    return body | changes


def check_heartbeat(body: dict[str, Any]) -> list[str]:
    return default_checker().problems(contract.heartbeat_topic(SITE), json.dumps(body).encode())


@pytest.mark.parametrize("sign", [False, True], ids=["unsigned", "signed"])
def test_heartbeats_built_by_the_contract_module_validate(*, sign: bool) -> None:
    first = dataclasses.replace(BEAT, from_seq=0, last_seq=0, routed=0, paths={"police": "up"})
    for beat in (BEAT, first):
        payload = contract.heartbeat_payload(SITE, beat, at_ms=AT_MS)
        checked = default_checker().check(
            contract.heartbeat_topic(SITE), signed(payload) if sign else payload
        )
        assert checked.kind == "heartbeat" and checked.body["last_seq"] == beat.last_seq


BROKEN_HEARTBEATS: dict[str, dict[str, Any]] = {
    **{
        f"no {key}": {k: v for k, v in heartbeat().items() if k != key}
        for key in load_json("heartbeat.schema.json")["required"]
    },
    "type event": heartbeat(type="alarm.panic"),
    "boot 0": heartbeat(boot=0),
    "negative pending": heartbeat(pending=-1),
    "seq as text": heartbeat(last_seq="1212"),
    "a path neither up nor down": heartbeat(paths={"police": "up", "bureau": "unknown"}),
    "no paths": heartbeat(paths={}),
    "its own path missing": heartbeat(paths={"bureau": "up"}),
    "from_seq after last_seq": heartbeat(from_seq=1300),
    "at without ms": heartbeat(at="2026-11-24T08:00:30+08:00"),
    "extra key": heartbeat(uptime_s=5),
    "sig without signer": heartbeat(sig="c2ln"),
    "another gateway": heartbeat(gateway="south-gate"),
}


@pytest.mark.parametrize("body", BROKEN_HEARTBEATS.values(), ids=BROKEN_HEARTBEATS.keys())
def test_broken_heartbeats_do_not_validate(body: dict[str, Any]) -> None:
    assert check_heartbeat(body)


def result(outcome: contract.CommandResult) -> bytes:
    return contract.result_payload(SITE, outcome, at_ms=AT_MS)


def check_result(payload: bytes | dict[str, Any]) -> list[str]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return default_checker().problems(contract.results_topic(SITE), raw)


REJECTED = typing.get_args(auth.Reason)
FAILED = ("bad_args", "unknown_alarm", "unknown_device", "device_error")
REPLAYED = {"destination": "police", "from_seq": 1, "to_seq": 42, "seqs": [3, 42]}
RESULTS: list[contract.CommandResult] = [
    contract.CommandResult(COMMAND_ID, "acknowledge", "done", result={"alarm_id": ALARM_ID}),
    contract.CommandResult(COMMAND_ID, "reset", "done", result={"alarm_id": ALARM_ID}),
    contract.CommandResult(COMMAND_ID, "replay", "done", result=REPLAYED),
    contract.CommandResult(COMMAND_ID, "replay", "done", result=REPLAYED | {"seqs": []}),
    contract.CommandResult(
        COMMAND_ID, "drill.start", "done", result={"drill": True, "minutes": 60}
    ),
    contract.CommandResult(COMMAND_ID, "drill.stop", "done", result={"drill": False}),
    contract.CommandResult(
        COMMAND_ID, "lockdown", "done", result={"devices": {"gate_doors": {"lockdown": True}}}
    ),
    contract.CommandResult(COMMAND_ID, "time.set", "done", result={"devices": {}}),
    contract.CommandResult(COMMAND_ID, "bollard.raise", "done", result={"position": "up"}),
    contract.CommandResult(
        COMMAND_ID, "unlock", "done", result={"door": 1, "door_name": "g", "unlocked": True}
    ),
    # rejected: before it was read (no [security], not JSON), and after
    contract.CommandResult(None, None, "rejected", "unknown_key", "this gateway trusts no keys"),
    contract.CommandResult(None, None, "rejected", "malformed", "not a JSON object"),
    contract.CommandResult("not-a-uuid", "fire", "rejected", "malformed", "unknown command"),
    *(
        contract.CommandResult(COMMAND_ID, "acknowledge", "rejected", reason, "why")
        for reason in REJECTED
    ),
    *(contract.CommandResult(COMMAND_ID, "unlock", "failed", reason, "why") for reason in FAILED),
]


@pytest.mark.parametrize("outcome", RESULTS, ids=[f"{r.command}-{r.reason}" for r in RESULTS])
def test_command_results_built_by_the_contract_module_validate(
    outcome: contract.CommandResult,
) -> None:
    for payload in (result(outcome), signed(result(outcome))):
        checked = default_checker().check(contract.results_topic(SITE), payload)
        assert checked.kind == "result" and checked.body["status"] == outcome.status


def test_an_mqtt5_reply_on_a_response_topic_is_checked_by_its_kind() -> None:
    payload = signed(result(RESULTS[0]))
    assert default_checker().check_payload("result", payload).body["command_id"] == COMMAND_ID
    with pytest.raises(ContractViolation, match="reason"):
        default_checker().check_payload("result", json.dumps(_result(reason="stale")).encode())
    with pytest.raises(ValueError, match="no topic named"):
        default_checker().check_payload("reply", payload)


def _result(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(result(RESULTS[0]))
    return body | changes


def _failed(**changes: Any) -> dict[str, Any]:
    outcome = contract.CommandResult(COMMAND_ID, "unlock", "failed", "bad_args", "door")
    body: dict[str, Any] = json.loads(result(outcome))
    return body | changes


BROKEN_RESULTS: dict[str, dict[str, Any]] = {
    **{
        f"no {key}": {k: v for k, v in _result().items() if k != key}
        for key in load_json("result.schema.json")["required"]
    },
    "status ok": _result(status="ok"),
    "done with a reason": _result(reason="stale"),
    "done with a detail": _result(detail="but"),
    "done without its id": _result(command_id=None),
    "done, an unknown command": _result(command="fire"),
    "done, acknowledge without alarm_id": _result(result={}),
    "done, replay without seqs": _result(command="replay", result={"from_seq": 1}),
    "rejected without a reason": _failed(status="rejected", reason=None),
    "rejected for bad args": _failed(status="rejected"),
    "rejected with a result": _failed(status="rejected", reason="stale", result={"x": 1}),
    "failed for a stale command": _failed(reason="stale"),
    "failed without a reason": _failed(reason=None),
    "failed, unknown reason": _failed(reason="busy"),
    "failed without its command": _failed(command=None),
    "type event": _result(type="alarm.acknowledged"),
    "extra key": _result(issuer="police-console"),
    "at without offset": _result(at="2026-11-24T08:15:05.260"),
    "another school": _result(school="other-school"),
}


@pytest.mark.parametrize("body", BROKEN_RESULTS.values(), ids=BROKEN_RESULTS.keys())
def test_broken_command_results_do_not_validate(body: dict[str, Any]) -> None:
    assert check_result(body)


# Valid args of every command, the optional ones both left out and given.
COMMAND_ARGS: list[tuple[str, dict[str, Any]]] = [
    ("acknowledge", {"alarm_id": ALARM_ID, "by": "Officer Li"}),
    ("reset", {"alarm_id": ALARM_ID, "by": "Officer Li"}),
    ("bollard.raise", {"device": "bollard_1"}),
    ("bollard.lower", {"device": "bollard_1"}),
    ("unlock", {"device": "gate_doors", "door": 1}),
    ("unlock", {"device": "gate_doors", "door": 2, "open_s": 10}),
    ("lockdown", {}),
    ("lockdown", {"device": "gate_doors"}),
    ("lockdown.release", {}),
    ("lockdown.release", {"device": "gate_doors"}),
    ("drill.start", {}),
    ("drill.start", {"minutes": 5, "by": "Officer Li"}),
    ("drill.stop", {}),
    ("drill.stop", {"by": "Officer Li"}),
    ("time.set", {}),
    ("time.set", {"time": "2026-11-24T08:15:05.210+08:00"}),
    ("time.set", {"time": "2026-11-24T00:15:05Z"}),
    ("replay", {"from_seq": 1, "to_seq": 42}),
    ("replay", {"from_seq": 7, "to_seq": 7 + 9_999}),
    ("ledger.close", {"entry": "20261124-001", "note": "cable replaced"}),
    ("ledger.close", {"entry": "20261124-001", "note": "cable replaced", "by": "Bureau Zhao"}),
]


def command(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    obj = auth.build_command(
        gateway=SITE.gateway_id,
        school=SITE.school_id,
        command=name,
        args=args,
        issued_at=ISSUED_AT,
        command_id=COMMAND_ID,
    )
    return auth.sign_command(obj, CONSOLE_KEY, "police-console")


def check_command(body: dict[str, Any]) -> list[str]:
    return default_checker().problems(contract.commands_topic(SITE), json.dumps(body).encode())


class Target:
    """The command handler's target with one alarm, one bollard and one access controller; it
    refuses what a driver would refuse (a door that is not configured)."""

    async def acknowledge(self, alarm_id: str, *, by: str, issuer: str, command_id: str) -> None:
        if alarm_id != ALARM_ID:
            raise UnknownAlarm(alarm_id)

    async def reset(self, alarm_id: str, *, by: str) -> None:
        await self.acknowledge(alarm_id, by=by, issuer="", command_id="")

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        if name == "unlock" and args.get("door") not in (1, 2):
            raise CommandError(f"no door {args.get('door')!r}")
        return {"done": name}

    def devices_of_kind(self, kind: str) -> list[str]:
        return {"bollard": ["bollard_1"], "access_controller": ["gate_doors"]}.get(kind, [])

    async def drill(self, *, start: bool, minutes: int, by: str) -> None:
        pass

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None:
        pass


async def handled(body: dict[str, Any]) -> contract.CommandResult:
    """What the real command handler answers to `body` (sent through the police broker)."""
    trust = auth.TrustStore(
        MappingProxyType(
            {"police-console": auth.TrustedKey(CONSOLE_KEY.public_key(), frozenset({"*"}))}
        )
    )
    security = Security(GATEWAY_KEY, "north-gate-2026", trust, auth.DEFAULT_WINDOW)
    handler = commands.Commands(SITE, security, Target(), clock=FakeClock(wall_ms=AT_MS))

    async def replay(first: int, last: int) -> list[int]:
        return [first]

    return await handler.handle(json.dumps(body).encode(), destination="police", replay=replay)


def test_the_args_table_covers_every_command() -> None:
    assert {name for name, _ in COMMAND_ARGS} == auth.COMMANDS


@pytest.mark.parametrize(("name", "args"), COMMAND_ARGS, ids=[f"{n}{a}" for n, a in COMMAND_ARGS])
async def test_every_signed_command_validates_and_the_gateway_does_it(
    name: str, args: dict[str, Any]
) -> None:
    body = command(name, args)
    checked = default_checker().check(contract.commands_topic(SITE), json.dumps(body).encode())
    assert checked.kind == "command" and checked.body["command"] == name
    # The schema's args are the handler's: what validates is done, and its answer validates.
    outcome = await handled(body)
    assert (outcome.status, outcome.reason, outcome.detail) == ("done", None, "")
    assert check_result(signed(result(outcome))) == []


def _command(**changes: Any) -> dict[str, Any]:
    return command("acknowledge", {"alarm_id": ALARM_ID, "by": "Officer Li"}) | changes


BROKEN_COMMANDS: dict[str, dict[str, Any]] = {
    **{
        f"no {key}": {k: v for k, v in _command().items() if k != key}
        for key in load_json("command.schema.json")["required"]
    },
    "unknown command": _command(command="fire"),
    "schema 2": _command(schema=2),
    "an upper-case id": _command(id=COMMAND_ID.upper()),
    "args a list": _command(args=[]),
    "issued_at without offset": _command(issued_at="2026-11-24T08:15:05.210"),
    "a sig that is not base64": _command(sig="not a signature"),
    "a signer key": _command(signer="police-console"),
    "another gateway": _command(gateway="south-gate"),
}


@pytest.mark.parametrize("body", BROKEN_COMMANDS.values(), ids=BROKEN_COMMANDS.keys())
async def test_broken_command_envelopes_do_not_validate_nor_move_anything(
    body: dict[str, Any],
) -> None:
    assert check_command(body)
    outcome = await handled(body)
    assert outcome.status == "rejected", outcome  # the signature covers what was changed


# Args the schema refuses, with what the gateway answers (bad_args from the command handler).
BAD_ARGS: list[tuple[str, dict[str, Any], str]] = [
    ("acknowledge", {"alarm_id": ALARM_ID}, "bad_args"),
    ("acknowledge", {"alarm_id": ALARM_ID, "by": ""}, "bad_args"),
    ("acknowledge", {"alarm_id": "", "by": "Officer Li"}, "bad_args"),
    ("acknowledge", {"alarm_id": ALARM_ID, "by": "Officer Li", "note": "x"}, "bad_args"),
    ("reset", {"by": "Officer Li"}, "bad_args"),
    ("bollard.raise", {}, "bad_args"),
    ("bollard.lower", {"device": 1}, "bad_args"),
    ("unlock", {"device": "gate_doors"}, "bad_args"),
    ("unlock", {"device": "gate_doors", "door": 0}, "bad_args"),
    ("unlock", {"device": "gate_doors", "door": "1"}, "bad_args"),
    ("unlock", {"door": 1}, "bad_args"),
    ("lockdown", {"device": ""}, "bad_args"),
    ("lockdown.release", {"doors": [1]}, "bad_args"),
    ("drill.start", {"minutes": 0}, "bad_args"),
    ("drill.start", {"minutes": 1441}, "bad_args"),
    ("drill.start", {"minutes": "5"}, "bad_args"),
    ("drill.stop", {"minutes": True}, "bad_args"),
    ("time.set", {"time": "08:15"}, "bad_args"),
    ("time.set", {"time": "2026-11-24T08:15:05"}, "bad_args"),
    ("replay", {"from_seq": 1}, "bad_args"),
    ("replay", {"from_seq": 0, "to_seq": 5}, "bad_args"),
    ("replay", {"from_seq": 5, "to_seq": 4}, "bad_args"),
    ("replay", {"from_seq": 1, "to_seq": 10_001}, "bad_args"),
]


@pytest.mark.parametrize(
    ("name", "args", "reason"), BAD_ARGS, ids=[f"{n}{a}" for n, a, _ in BAD_ARGS]
)
async def test_commands_with_bad_args_do_not_validate_and_fail_at_the_gateway(
    name: str, args: dict[str, Any], reason: str
) -> None:
    body = command(name, args)
    assert check_command(body)
    outcome = await handled(body)
    assert (outcome.status, outcome.reason) == ("failed", reason), outcome
    assert check_result(result(outcome)) == []


def test_a_drill_by_nobody_does_not_validate() -> None:
    # The handler takes these (an empty `by` as is, one that is not text as the issuer), but a
    # drill event's `by` must be non-empty: the contract asks for a person or leaving it out.
    assert check_command(command("drill.start", {"by": ""}))
    assert check_command(command("drill.stop", {"by": 5}))


# -- end to end: everything the whole simulated gate publishes --------------------------------

SCENARIOS = ROOT / "simulators" / "scenarios"


@pytest.mark.timeout(60)
async def test_every_message_the_simulated_gate_publishes_keeps_the_contract(
    tmp_path: Path,
) -> None:
    # Two short shipped scenarios side by side (they use disjoint devices): panic box, doors and
    # a bollard give alarm.*, access.* and bollard.* events to both brokers in about 2.5 s.
    scenarios = [
        load_scenario(SCENARIOS / "panic_and_reset.toml"),
        load_scenario(SCENARIOS / "intrusion_at_night.toml"),
    ]
    async with simulated_gate(tmp_path) as gate:
        t0 = gate.ready_at
        async with asyncio.TaskGroup() as tg:
            for scenario in scenarios:
                tg.create_task(play(gate, scenario, t0), name=f"play:{scenario.name}")
        # The last step of each scenario has been delivered: the record is complete enough.
        for listener in gate.listeners.values():
            await listener.wait_event(lambda e: e["type"] == "alarm.reset")
        await gate.bureau.wait_event(lambda e: e["type"] == "access.door_held_open")
    # Checked after the gateway has stopped, so its offline status is in the record too.
    checker = ContractChecker(root="schoolgate/v1")
    seen: dict[str, set[str]] = {}
    for name, listener in gate.listeners.items():
        assert checker.check_all(listener.messages) == [], name
        seen[name] = {
            checked.body.get("type", "status")
            for checked in (checker.check(m.topic, m.payload) for m in listener.messages)
        }
    police_alarms = {"alarm.panic", "alarm.panic_repeated", "alarm.reset", "access.door_forced"}
    assert police_alarms | {"access.tamper", "bollard.emergency_raise", "status"} <= seen["police"]
    assert police_alarms | {"bollard.state", "access.door_held_open", "status"} <= seen["bureau"]
