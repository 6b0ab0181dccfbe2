"""The MQTT contract's JSON Schemas (docs/schemas) against what the gateway publishes: the schemas
are valid; a payload of every event type built by `gateway.contract` keeps them and broken ones do
not; and every message the whole simulated gate publishes during two shipped scenarios keeps them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway import contract
from gateway.events import DeviceRef, Event, Severity, new_event, new_event_id
from simulators.contract_check import (
    SCHEMA_DIR,
    SCHEMA_FILES,
    ContractChecker,
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
ALARM_ID = new_event_id()
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

# (type, severity, device, data): what each driver, rule and store really emits (the docs'
# tables, checked against the code). More than one row for a type covers its variants.
EVENTS: list[tuple[str, Severity, DeviceRef, dict[str, Any]]] = [
    ("alarm.panic", Severity.CRITICAL, BOX, {"button": 0, "button_name": "desk", "presses": 1}),
    (
        "alarm.panic_repeated",
        Severity.CRITICAL,
        BOX,
        {"button": 0, "button_name": "", "presses": 3},
    ),
    ("alarm.reset", Severity.INFO, BOX, {"button": 0, "reset_by": "reset input", "presses": 3}),
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
    (
        "access.clock_corrected",
        Severity.MINOR,
        DOORS,
        {"skew_ms": -4200, "max_clock_skew_ms": 1000},
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
]


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
    return dataclasses.replace(event, seq=seq)  # the outbox gives the seq when it stores


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
    # must know each one, so a type written down without a schema is caught here.
    documented = set()
    for page in [ROOT / "docs" / "contract.md", *(ROOT / "docs" / "drivers").glob("*.md")]:
        documented |= set(
            re.findall(
                r"`((?:alarm|device|bollard|access|telemetry|gateway)\.[a-z_]+)`", page.read_text()
            )
        )
    assert documented <= schema_types()


# -- payloads built by gateway.contract -------------------------------------------------------


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


def test_signature_fields_are_allowed_ahead_of_signing() -> None:
    body = _with(sig="c2lnbmF0dXJl", signer="north-gate-2026")
    topic = contract.event_topic(SITE, "alarm")
    assert default_checker().problems(topic, json.dumps(body).encode()) == []


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
