"""The fault ledger's kinds (issue 12, item 7) and access controllers locked down at night
(item 2), through the rules engine on the fake clock with the real SQLite state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_rules_engine import ACCESS, BOLLARD, CALENDAR, DEVICES, RULES, Gate, running, wall

from edge_config.rules import RuleCommand
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.rules.engine import RulesEngine, RulesLinks
from gateway.rules.faults import ledger_action
from gateway.rules.ledger import EntryAlreadyClosed, LedgerError
from gateway.rules.windows import CloseLedger, OpenLedger

GATEWAY = DeviceRef("gateway", "gateway")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


FAULTS = [
    (BOLLARD, "bollard.fault", {"code": 7}, "bollard.fault_cleared", {}, "bollard_fault"),
    (
        BOLLARD,
        "bollard.stuck",
        {"target": "up", "position": "rising"},
        "bollard.raised",
        {"previous": "rising"},
        "bollard_stuck",
    ),
    (ACCESS, "access.tamper", {"active": True}, "access.tamper", {"active": False}, "tamper"),
    (
        ACCESS,
        "access.clock_not_correctable",
        {"skew_ms": 90_000, "max_clock_skew_ms": 1000, "error": "unknown_command"},
        "access.clock_corrected",
        {"skew_ms": 95_000, "max_clock_skew_ms": 1000},
        "clock_not_correctable",
    ),
    (
        GATEWAY,
        "gateway.path_down",
        {"destination": "police", "error": "refused"},
        "gateway.path_up",
        {"destination": "police", "down_s": 70.0},
        "broker_path_down",
    ),
    (
        GATEWAY,
        "gateway.storage_fault",
        {"fault": "write_failed", "error": "disk full"},
        "gateway.storage_recovered",
        {"written_back": 3},
        "storage_fault",
    ),
]


@pytest.mark.parametrize("case", FAULTS, ids=[case[-1] for case in FAULTS])
async def test_each_fault_kind_opens_an_entry_and_its_end_closes_it(
    db: Path, case: tuple[DeviceRef, str, dict[str, Any], str, dict[str, Any], str]
) -> None:
    device, opened, opened_data, closed, closed_data, kind = case
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(device, opened, **opened_data)
        await gate.feed(device, opened, **opened_data)  # again: still one entry
        assert gate.types() == ["ledger.opened"]
        entry = gate.emitted[0].data
        assert entry["kind"] == kind
        assert "?" not in entry["what"]
        await clock.run_for(600)
        await gate.feed(device, closed, **closed_data)
        assert gate.types() == ["ledger.opened", "ledger.closed"]
        assert gate.emitted[1].data["closed_by"] == "auto"
        assert gate.emitted[1].data["repair_s"] == 600


async def test_a_kind_with_a_shorter_repair_deadline_is_overdue_sooner(db: Path) -> None:
    rules = RULES.model_copy(
        update={"ledger": RULES.ledger.model_copy(update={"repair_h": {"bollard_fault": 4}})}
    )
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    gate = Gate(db, clock)
    gate.engine = RulesEngine(rules, CALENDAR, gate.state, RulesLinks(clock, DEVICES, gate.emit))
    async with running(gate):
        await gate.feed(BOLLARD, "bollard.fault", code=7)
        await clock.run_for(4 * 3600 - 1)
        assert "ledger.overdue" not in gate.types()
        await clock.run_for(2)
        assert gate.types().count("ledger.overdue") == 1


def test_an_event_without_the_fields_a_text_names_still_makes_an_entry() -> None:
    event = new_event(
        "gateway.path_down", GATEWAY, severity=Severity.MAJOR, occurred_at_ms=1, data={}
    )
    action = ledger_action(event)
    assert isinstance(action, OpenLedger)
    assert action.key == "path:?"
    closing = new_event(
        "bollard.lowered", BOLLARD, severity=Severity.INFO, occurred_at_ms=2, data={}
    )
    assert isinstance(ledger_action(closing), CloseLedger)
    card = new_event("access.card", ACCESS, severity=Severity.INFO, occurred_at_ms=3, data={})
    assert ledger_action(card) is None


NIGHT_LOCKDOWN = RULES.model_copy(
    update={
        "window": [
            RULES.window[0].model_copy(
                update={
                    "id": "night-lockdown",
                    "devices": ["access-east"],
                    "required_state": "locked_down",
                    "grace_s": 300,
                    "on_violation": [RuleCommand(command="lockdown")],
                }
            )
        ]
    }
)


async def test_an_access_controller_not_locked_down_outside_the_windows_is_locked_down(
    db: Path,
) -> None:
    clock = FakeClock(wall_ms=wall(7, "21:00"))  # a Monday night: outside every window
    gate = Gate(db, clock)
    gate.engine = RulesEngine(
        NIGHT_LOCKDOWN, CALENDAR, gate.state, RulesLinks(clock, DEVICES, gate.emit, gate.command)
    )
    async with running(gate):
        await clock.run_for(299)
        assert gate.types() == []  # unknown since the start counts as not locked down: grace
        await clock.run_for(2)
        assert gate.types()[:2] == ["rule.violation", "rule.action"]
        assert gate.emitted[0].data["state"] == "not_locked_down"
        assert gate.commands == [("access-east", "lockdown")]
        await gate.feed(ACCESS, "access.lockdown", lockdown=True)  # the driver's record
        assert "rule.restored" in gate.types()
        await gate.feed(ACCESS, "device.offline", error="timeout")
        await clock.run_for(301)
        assert gate.types().count("rule.violation") == 2  # back, it may have lost it


async def test_a_person_closes_an_entry_with_a_note_and_it_stays_closed(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "bollard.fault", code=7)
        entry = gate.emitted[0].data["entry"]
        await clock.run_for(3600)
        with pytest.raises(LedgerError, match="needs a note"):
            await gate.engine.close_ledger(entry, by="Wang", note=" ")
        await gate.engine.close_ledger(entry, by="Wang", note="controller board replaced")
        closed = gate.emitted[-1]
        assert closed.type == "ledger.closed"
        assert closed.data["closed_by"] == "Wang"
        assert closed.data["note"] == "controller board replaced"
        assert closed.occurred_at_ms == wall(7, "10:00")
        with pytest.raises(EntryAlreadyClosed):
            await gate.engine.close_ledger(entry, by="Li", note="again")
        await gate.feed(BOLLARD, "bollard.fault_cleared")  # nothing left open to close
        assert gate.types() == ["ledger.opened", "ledger.closed"]
