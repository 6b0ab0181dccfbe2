"""The daemon's `GuardSource` (gateway/guard_source.py): what the page shows follows the real
latches and path board (a real outbox in a temporary file), the parts bump the version and
`changed` wakes at once (nothing polled; not without a change), the NTP flag is read again on
the clock, and the guard's actions go through the latches with who did them: a reset needs a
reason until the police acknowledged, the siren is silenced for the box's
open alarms and stays off, a test press starts test mode (the daemon's own start, for
`[guard] test_press_minutes`, by the guard) and the next press shows as a test."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from test_latch import Outputs, deliver_to, stored, wait_stored

from drivers.alarm_box import OutputPattern
from drivers.base import DriverContext, PanicPress
from drivers.polling import DeviceHealth
from edge_config.loader import parse_config
from edge_config.models import GatewayConfig
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.alarms.test_mode import UNTIL_KEY, TestMode
from gateway.core import contract
from gateway.core.changes import ChangeCounter
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event
from gateway.guard.view import ActionRefused
from gateway.guard_source import CLOCK_CHECK_S, DaemonGuardSource, GuardTestMode
from gateway.rules.calendar import Window
from gateway.rules.state import LedgerEntry, ViolationRecord
from gateway.rules.today import RulesToday
from gateway.store.outbox import Marks
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink.paths import PathBoard

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
CONFIG = """
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
location = "东门岗亭"
[[devices.box.buttons]]
input = 0
"""


async def _no_emit(event: Event) -> Event:
    raise AssertionError(f"nothing is emitted here: {event.type}")


async def _nothing() -> None:
    return None


class Parts:
    def __init__(self, config: GatewayConfig, store: Storage, clock: FakeClock) -> None:
        self.outputs = Outputs()
        self.changes = ChangeCounter()
        self.latches = self.make_latches(store)
        self.paths = PathBoard(
            ["police", "bureau"],
            store.outbox,
            SITE,
            report_after_s=60,
            clock=clock,
            changed=self.changes.bump,
        )
        self.config = config
        self.store = store
        self.clock = clock
        self.synchronised: bool | None = None
        self.test_mode = TestMode(
            store.outbox, store.log.memory("gateway"), SITE, clock=clock, changed=self.changes.bump
        )
        self.test_starts: list[tuple[int, str]] = []
        self.source = self.make_source()

    async def start_test(self, *, minutes: int, by: str) -> int:
        """The daemon's `test_mode_start`, noting each call (the page must go through it)."""
        self.test_starts.append((minutes, by))
        return await self.test_mode.start(minutes=minutes, by=by)

    def guard_test_mode(self) -> GuardTestMode:
        return GuardTestMode(self.test_mode, self.start_test)

    def make_latches(self, store: Storage, **options: float) -> AlarmLatches:
        box = BoxInfo(DeviceRef("box", "alarm_box", "东门岗亭"), {0: "desk"})
        latches = AlarmLatches(
            store.alarms,
            {"box": box},
            changed=self.changes.bump,
            **options,  # type: ignore[arg-type]
        )
        latches.attach_feedback("box", self.outputs)
        return latches

    def make_source(self) -> DaemonGuardSource:
        return DaemonGuardSource(
            self.config,
            self.latches,
            self.paths,
            {},
            self.clock,
            changes=self.changes,
            test_mode=self.guard_test_mode(),
            clock_synchronised=lambda: self.synchronised,
        )

    async def press(self) -> str:
        await self.latches.panic_pressed(
            PanicPress("box", 0, presses=1, occurred_at_ms=self.clock.wall_ms())
        )
        return self.latches.open_alarms[-1].alarm_id


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    async with gate_parts(tmp_path) as made:
        yield made


@asynccontextmanager
async def gate_parts(tmp_path: Path, extra: str = "") -> AsyncIterator[Parts]:
    """The parts as the daemon wires them (the store marks events while test mode is on), with
    `extra` added to the config."""
    data = tomllib.loads((CONFIG + extra).replace("{store}", str(tmp_path / "o.db")))
    config = parse_config(data, tmp_path / "schoolgate.toml")
    made: list[Parts] = []
    marks = Marks(test=lambda: made[0].test_mode.active())  # noqa: PLW0108 - made next
    clock = FakeClock()
    routes = Router({"police": ["*"], "bureau": ["*"]})
    async with Storage(tmp_path / "o.db", SITE, routes, marks=marks, clock=clock) as box:
        made.append(Parts(config, box, clock))
        yield made[0]


async def test_an_alarm_shows_stored_then_at_the_police_then_acknowledged_by_whom(
    parts: Parts,
) -> None:
    source = parts.source
    assert source.snapshot().alarms == ()
    alarm_id = await parts.press()
    (alarm,) = source.snapshot().alarms
    assert (alarm.alarm_id, alarm.box, alarm.place, alarm.stage) == (
        alarm_id,
        "box",
        "东门岗亭",
        "stored",
    )
    await deliver_to(parts.store, parts.latches, "police")
    assert source.snapshot().alarms[0].stage == "at_police"
    await parts.latches.acknowledge(
        alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
    )
    alarm = source.snapshot().alarms[0]
    assert (alarm.stage, alarm.acknowledged_by) == ("acknowledged", "Officer Li")
    assert alarm.acknowledged_at is not None


async def test_the_parts_bump_the_version_and_changed_wakes_without_a_poll(
    parts: Parts,
) -> None:
    source = parts.source
    start = source.version
    waiting = asyncio.create_task(source.changed(start))
    # Not shown on the page, so no bump: a PUBACK of the other path, a path staying down.
    parts.paths.puback("bureau")
    parts.paths.down("bureau", "still down")
    await asyncio.sleep(0)  # the waiter has had its chance
    assert not waiting.done() and source.version == start
    await parts.press()  # no clock moved: pushed, not polled
    assert await asyncio.wait_for(waiting, 1) > start
    pressed = source.version
    parts.paths.up("police")
    snap = source.snapshot()
    assert snap.version > pressed
    assert {p.destination: p.state for p in snap.paths} == {"police": "up", "bureau": "down"}


async def test_the_ntp_flag_is_read_again_on_the_clock_and_a_change_bumps(parts: Parts) -> None:
    source = parts.source
    watcher = asyncio.create_task(source.run(), name="guard:watch")
    try:
        await asyncio.wait_for(parts.clock.sleeping(), 1)
        start = source.version
        await parts.clock.run_for(CLOCK_CHECK_S)  # read again: still unknown, no bump
        assert source.version == start
        parts.synchronised = True
        await parts.clock.run_for(CLOCK_CHECK_S)
        assert source.version == start + 1
        assert source.snapshot().clock.box_synchronised is True
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])


async def test_since_is_when_the_state_began_even_with_no_page_open(parts: Parts) -> None:
    ctx = DriverContext(
        DeviceRef("box", "alarm_box"), parts.latches, _no_emit, parts.clock.wall_ms,
        changed=parts.changes.bump,
    )  # fmt: skip
    health = DeviceHealth(ctx, 1000, on_offline=_nothing)
    parts.source = DaemonGuardSource(
        parts.config, parts.latches, parts.paths, {"box": SimpleNamespace(health=health)},
        parts.clock, changes=parts.changes, test_mode=parts.guard_test_mode(),
    )  # fmt: skip
    watcher = asyncio.create_task(parts.source.run(), name="guard:watch")
    try:
        await asyncio.wait_for(parts.clock.sleeping(), 1)
        await health.answered()  # the first answer: online, a bump
        answered_ms = parts.clock.wall_ms()
        await parts.clock.settle()
        await parts.clock.run_for(5)  # nobody asks for a snapshot meanwhile
        (box,) = parts.source.snapshot().devices
        assert box.health == "online" and box.since.timestamp() * 1000 == answered_ms
        assert box.since.utcoffset() == SITE.tz.utcoffset(box.since)  # site time
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])


async def test_reset_needs_a_reason_until_acknowledged_and_is_recorded_with_who(
    parts: Parts,
) -> None:
    alarm_id = await parts.press()
    with pytest.raises(ActionRefused) as refused:
        await parts.source.reset(alarm_id, "王师傅", None)
    assert refused.value.reason == "reason_required"
    assert len(parts.latches.open_alarms) == 1
    with pytest.raises(ActionRefused) as unknown:
        await parts.source.reset("no-such-alarm", "王师傅", "x")
    assert unknown.value.reason == "unknown_alarm"
    version = parts.source.version
    await parts.source.reset(alarm_id, "王师傅", "误按 已核实")
    assert parts.source.version > version  # an action shows at once, without waiting a poll
    assert parts.source.snapshot().alarms == ()
    (reset,) = await stored(parts.store, "alarm.reset")
    assert reset["data"]["reset_by"] == "王师傅"
    assert reset["data"]["reason"] == "误按 已核实"


async def test_reset_without_a_reason_once_the_police_acknowledged(parts: Parts) -> None:
    alarm_id = await parts.press()
    await parts.latches.acknowledge(
        alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
    )
    await parts.source.reset(alarm_id, "王师傅", None)
    assert parts.latches.open_alarms == []


async def test_silence_siren_turns_it_off_for_the_alarm_and_it_stays_off(parts: Parts) -> None:
    # The same parts, with a short acknowledgement timeout.
    latches = parts.latches = parts.make_latches(parts.store, ack_timeout_s=0.05)
    parts.source = parts.make_source()
    with pytest.raises(ActionRefused) as nothing_open:
        await parts.source.silence_siren("box", "王师傅")
    assert nothing_open.value.reason == "not_allowed_now"
    alarm_id = await parts.press()
    timer = asyncio.create_task(latches.run(), name="escalation")
    try:
        await parts.outputs.wait("siren", OutputPattern.STEADY)
        await wait_stored(parts.store, "alarm.escalated")
        assert parts.source.snapshot().alarms[0].stage == "escalated"
        await parts.source.silence_siren("box", "王师傅")
        assert parts.outputs.state["siren"] is OutputPattern.OFF
        # A later change of the alarm (the police acknowledge) does not sound it again.
        await latches.acknowledge(
            alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
        )
        assert parts.outputs.state["siren"] is OutputPattern.OFF
        assert parts.outputs.state["lamp"] is OutputPattern.STEADY
    finally:
        timer.cancel()
        await asyncio.wait([timer])
    (silenced,) = await stored(parts.store, "alarm.siren_silenced")
    assert (silenced["data"]["by"], silenced["alarm_id"]) == ("王师傅", alarm_id)
    assert len(latches.open_alarms) == 1  # still latched


GUARD_SECTION = """
[guard]
test_press_minutes = 3
[[guard.guards]]
name = "王师傅"
pin_hash = "scrypt$1$1$1$AA==$AA=="
"""


async def test_a_test_press_starts_test_mode_and_the_next_press_shows_as_a_test(
    tmp_path: Path,
) -> None:
    async with gate_parts(tmp_path, GUARD_SECTION) as parts:
        await _test_press_then_a_test(parts)


async def _test_press_then_a_test(parts: Parts) -> None:
    source = parts.source
    alarm_id = await parts.press()  # before: a real alarm, not a test
    assert source.snapshot().test_mode_until is None
    before = source.version
    await source.test_press("box", "王师傅")
    assert parts.test_starts == [(3, "王师傅")]  # the daemon's start, for the configured minutes
    assert source.version > before  # the page is told
    until = source.snapshot().test_mode_until
    assert until is not None and until.utcoffset() == SITE.tz.utcoffset(until)  # site time
    assert until.timestamp() * 1000 == parts.clock.wall_ms() + 3 * 60_000
    assert await parts.store.log.memory("gateway").recall(UNTIL_KEY) == until.timestamp() * 1000
    (started,) = await stored(parts.store, "gateway.test_started")
    assert (started["data"]["by"], started["data"]["minutes"]) == ("王师傅", 3)
    assert started["test"] is True
    await parts.latches.reset(alarm_id, by="王师傅", occurred_at_ms=parts.clock.wall_ms())
    test_id = await parts.press()  # the guard presses the box: a test
    (alarm,) = source.snapshot().alarms
    assert (alarm.alarm_id, alarm.test) == (test_id, True)
    (panic, test_panic) = await stored(parts.store, "alarm.panic")
    assert (panic["test"], test_panic["test"]) == (False, True)
    # After a restart the latch knows it is a test again (read from the stored body).
    parts.latches = parts.make_latches(parts.store)
    await parts.latches.restore()
    assert [(lt.alarm_id, lt.test) for lt in parts.latches.open_alarms] == [(test_id, True)]
    assert [a.test for a in parts.make_source().snapshot().alarms] == [True]
    with pytest.raises(ActionRefused) as on:  # while it is on: nothing to start
        await source.test_press("box", "王师傅")
    assert on.value.reason == "test_mode_on"
    assert parts.test_starts == [(3, "王师傅"), (3, "王师傅")]
    await parts.test_mode.stop(by="timer")
    assert source.snapshot().test_mode_until is None


async def test_a_test_press_of_what_is_not_an_alarm_box_is_refused(parts: Parts) -> None:
    with pytest.raises(ActionRefused) as no_box:
        await parts.source.test_press("gate_doors", "王师傅")
    assert no_box.value.reason == "unknown_box"
    assert parts.test_starts == []
    assert not parts.test_mode.active()


async def test_without_a_guard_section_a_test_press_lasts_the_default_minutes(
    parts: Parts,
) -> None:
    await parts.source.test_press("box", "王师傅")
    assert parts.test_starts == [(5, "王师傅")]


def test_an_unreadable_box_clock_is_unknown_not_unsynchronised(parts: Parts) -> None:
    assert parts.source.snapshot().clock.box_synchronised is None
    assert parts.source.snapshot().clock.gate_offset_s is None


def test_the_rules_today_become_the_page_view_in_site_time(parts: Parts) -> None:
    assert parts.source.snapshot().rules is None  # no [rules]: no section
    at = 1_788_742_800_000  # 2026-09-07 09:00 in Shanghai
    utc = datetime.fromtimestamp(at / 1000, UTC)
    today = RulesToday(
        windows=(Window("arrival", utc - timedelta(hours=2), utc - timedelta(minutes=50)),),
        patrols_done=2,
        patrols_target=5,
        violations=(ViolationRecord("bollards-up", "box", at, "e-1"),),
        overdue=(LedgerEntry("l-1", "device_offline", "k", "x", "east door", at, at + 60_000),),
    )
    parts.source = DaemonGuardSource(
        parts.config, parts.latches, parts.paths, {}, parts.clock,
        changes=parts.changes, rules_today=lambda: today, test_mode=parts.guard_test_mode(),
    )  # fmt: skip
    rules = parts.source.snapshot().rules
    assert rules is not None
    (window,) = rules.gate_windows
    assert (window.name, window.opens_at.isoformat(), window.closes_at.isoformat()) == (
        "arrival",
        "2026-09-07T07:00:00+08:00",
        "2026-09-07T08:10:00+08:00",
    )
    assert (rules.patrols_done, rules.patrols_target) == (2, 5)
    (broken,) = rules.open_violations
    assert (broken.rule, broken.place, broken.since.isoformat()) == (
        "bollards-up",
        "东门岗亭",  # the device's place, from the config
        "2026-09-07T09:00:00+08:00",
    )
    (overdue,) = rules.overdue_ledger
    assert (overdue.kind, overdue.place) == ("device_offline", "east door")
    assert overdue.due_at.isoformat() == "2026-09-07T09:01:00+08:00"
