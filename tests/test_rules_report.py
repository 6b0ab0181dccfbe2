"""The daily inspection report and the drills per quarter, on the fake clock with a real store
file: the report is due at its time and sent once, also across restarts (a crash before it was
stored, and one after it was stored but before it was marked sent); its figures come from the
log; quarters follow the site's calendar; a drill's end survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_config.calendar import Calendar
from edge_config.rules import RulesConfig
from gateway.alarms.drill import Drill
from gateway.cli import main
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.daily_report import DailyReporter
from gateway.rules.drills import DrillQuarters, quarter_of
from gateway.rules.engine import RulesEngine, RulesLinks
from gateway.rules.ledger import LedgerSummary
from gateway.rules.report import (
    DeviceLive,
    LiveFigures,
    PathLive,
    RulesFigures,
    build_report,
    report_span,
)
from gateway.rules.report_store import SqliteReports, StoredReport, read_reports
from gateway.rules.sqlite_state import SqliteRulesState
from gateway.rules.state import InMemoryRulesState
from gateway.store.routing import Router
from gateway.store.storage import Storage

TZ = ZoneInfo("Asia/Shanghai")
SITE = contract.Site("school-1", "gate-1", TZ)
BOLLARD = DeviceRef("bollard-1", "bollard", "east gate")
DOORS = DeviceRef("access-east", "access_controller", "east door")
DEVICES = {d.id: d for d in (BOLLARD, DOORS)}
CALENDAR = SchoolCalendar(
    Calendar.model_validate(
        {
            "year_start": date(2026, 9, 1),
            "year_end": date(2027, 8, 31),
            "weekdays": {"monday": [{"name": "arrival", "start": "07:00", "end": "08:10"}]},
        }
    ),
    TZ,
)
RULES = RulesConfig.model_validate({"calendar_file": "calendar.toml"})
AT = time(18, 0)


def wall(day: date, hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(datetime.combine(day, time(int(hours), int(minutes)), tzinfo=TZ).timestamp() * 1000)


MONDAY = date(2026, 9, 7)


def live() -> LiveFigures:
    return LiveFigures(
        devices={
            "bollard-1": DeviceLive("bollard", "east gate", "online"),
            "access-east": DeviceLive("access_controller", "east door", "online", -40),
        },
        paths={"bureau": PathLive(True, wall(MONDAY, "00:00"), wall(MONDAY, "17:59"), None)},
        clock_sync={"synchronised": True, "max_error_ms": 12.0, "estimated_error_ms": 0.5},
    )


class Box:
    """One rules engine with the report and drill blocks on the store file: a gateway run."""

    def __init__(self, store: Storage, path: Path, clock: FakeClock, *, fail: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.fail = fail
        self.state = SqliteRulesState(path)
        self.reports = SqliteReports(path)
        self.engine = RulesEngine(
            RULES, CALENDAR, self.state, RulesLinks(clock, DEVICES, self.append)
        )
        self.drills = DrillQuarters(self.state, TZ, 14)
        self.reporter = DailyReporter(
            at=AT,
            tz=TZ,
            state=self.state,
            ledger=self.engine.ledger,
            patrols=self.engine.patrols,
            drills=self.drills,
            reports=self.reports,
            store_path=path,
            live=live,
            append=self.append,
        )
        self.engine.add_block(self.drills)
        self.engine.add_block(self.reporter)
        self.emitted: list[Event] = []

    async def append(self, event: Event) -> Event:
        if self.fail and event.type == "report.daily":
            raise OSError("the power went (a crash before the report was stored)")
        self.emitted.append(event)
        return await self.store.outbox.append(event)

    async def stored(self, event: Event) -> None:
        """A driver's event: stored, then seen by the rules."""
        self.engine.on_stored(await self.store.outbox.append(event))
        await self.clock.settle()


@contextlib.asynccontextmanager
async def running(box: Box) -> AsyncIterator[Box]:
    task = asyncio.create_task(box.engine.run(), name="rules:engine")
    await box.clock.settle()
    try:
        yield box
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        box.state.close()
        box.reports.close()


@contextlib.asynccontextmanager
async def store_at(path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    async with Storage(path, SITE, Router({"bureau": ["*"]}), clock=clock) as store:
        yield store


def stored_reports(path: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM events WHERE type = 'report.daily' ORDER BY seq")
        return [json.loads(body) for (body,) in rows]
    finally:
        db.close()


async def settle_all(clock: FakeClock, box: Box, seconds: float) -> None:
    """Run the fake clock; the report's store reads run in a worker thread, so after each stop
    wait (in real time, bounded) until the engine is idle again, and let its deadline timer start
    before time moves on."""
    target = clock.monotonic() + seconds
    while True:
        async with asyncio.timeout(10):
            await box.engine.idle.wait()
        await clock.settle()
        deadline = clock.next_deadline()
        if deadline is None or deadline > target:
            break
        await clock.run_for(deadline - clock.monotonic())
    await clock.run_for(target - clock.monotonic())
    async with asyncio.timeout(10):
        await box.engine.idle.wait()
    await clock.settle()


async def test_the_report_is_due_at_its_time_and_sent_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "11:00"))
    async with store_at(path, clock) as store, running(Box(store, path, clock)) as box:
        offline = new_event(
            "device.offline", BOLLARD, severity=Severity.MAJOR, occurred_at_ms=wall(MONDAY, "12:00")
        )
        await box.stored(offline)
        clock.set_wall(wall(MONDAY, "18:00") - 60_000)  # 17:59
        await settle_all(clock, box, 0)
        assert stored_reports(path) == []  # a minute early: nothing
        await settle_all(clock, box, 61)
        await settle_all(clock, box, 3 * 3600)
        reports = stored_reports(path)
        assert [r["type"] for r in reports] == ["report.daily"]
    report = reports[0]["data"]
    assert isinstance(report, dict)
    assert report["date"] == "2026-09-07"
    assert report["from"] == "2026-09-06T18:00:00.000+08:00"
    assert report["to"] == "2026-09-07T18:00:00.000+08:00"
    bollard = next(d for d in report["devices"] if d["id"] == "bollard-1")
    assert bollard["offline_s"] == 6 * 3600  # offline from 12:00 to the report's end
    assert bollard["online_fraction"] == 0.75
    assert report["clocks"] == [
        {"device": "access-east", "offset_ms": -40, "corrected": False, "corrections": []}
    ]
    assert report["store"]["integrity_ok"] is True
    assert report["paths"]["bureau"]["up_fraction"] == 1.0
    assert report["gateway_clock"]["synchronised"] is True
    assert report["drills"]["quarter"] == "2026-Q3"
    assert [r.day for r in read_reports(path)] == ["2026-09-07"]
    assert read_reports(path)[0].sent


async def test_a_crash_before_the_report_was_stored_sends_it_after_the_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "18:00") + 1_000)
    async with store_at(path, clock) as store, running(Box(store, path, clock, fail=True)) as box:
        await settle_all(clock, box, 1)
        assert stored_reports(path) == []
    kept = read_reports(path)
    assert len(kept) == 1 and not kept[0].sent
    clock = FakeClock(wall_ms=clock.wall_ms() + 60_000, monotonic=3.0)  # the restart
    async with store_at(path, clock) as store, running(Box(store, path, clock)) as box:
        await settle_all(clock, box, 1)
        await settle_all(clock, box, 3600)
    reports = stored_reports(path)
    assert len(reports) == 1
    assert reports[0]["id"] == kept[0].event_id  # the kept report, not a second one
    assert read_reports(path)[0].sent


async def test_a_report_stored_but_not_marked_sent_is_not_stored_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "19:00"))
    async with store_at(path, clock) as store, running(Box(store, path, clock)) as box:
        await settle_all(clock, box, 1)
    assert len(stored_reports(path)) == 1
    db = sqlite3.connect(path)  # the crash came between storing the event and marking it
    db.execute("UPDATE rules_reports SET sent = 0")
    db.commit()
    db.close()
    clock = FakeClock(wall_ms=clock.wall_ms() + 60_000, monotonic=3.0)
    async with store_at(path, clock) as store, running(Box(store, path, clock)) as box:
        await settle_all(clock, box, 1)
        await settle_all(clock, box, 3600)
        assert box.emitted == []
    assert len(stored_reports(path)) == 1
    assert read_reports(path)[0].sent


async def test_the_next_report_is_the_next_day(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "19:00"))
    async with store_at(path, clock) as store, running(Box(store, path, clock)) as box:
        await settle_all(clock, box, 1)
        await settle_all(clock, box, 22 * 3600)  # Tuesday 17:00
        assert len(stored_reports(path)) == 1
        await settle_all(clock, box, 3600 + 1)
        assert [r["data"]["date"] for r in stored_reports(path)] == ["2026-09-07", "2026-09-08"]  # type: ignore[index]


def test_the_span_is_the_24_hours_up_to_the_report_time() -> None:
    span = report_span(MONDAY, AT, TZ)
    assert span.until_ms - span.since_ms == 86_400_000
    assert span.until_ms == wall(MONDAY, "18:00")


# -- drills per quarter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "name", "first", "end"),
    [
        (date(2026, 1, 1), "2026-Q1", date(2026, 1, 1), date(2026, 4, 1)),
        (date(2026, 3, 31), "2026-Q1", date(2026, 1, 1), date(2026, 4, 1)),
        (date(2026, 4, 1), "2026-Q2", date(2026, 4, 1), date(2026, 7, 1)),
        (date(2026, 12, 31), "2026-Q4", date(2026, 10, 1), date(2027, 1, 1)),
    ],
)
def test_quarters(day: date, name: str, first: date, end: date) -> None:
    quarter = quarter_of(day)
    assert (quarter.name, quarter.first_day, quarter.end) == (name, first, end)


def drill_started(at_ms: int) -> Event:
    return new_event(
        "gateway.drill_started",
        DeviceRef("gateway", "gateway"),
        severity=Severity.INFO,
        occurred_at_ms=at_ms,
        data={"by": "li", "minutes": 30},
    )


async def test_a_drill_counts_in_the_quarter_of_its_site_date() -> None:
    drills = DrillQuarters(InMemoryRulesState(), TZ, 14)
    # 00:30 on 1 January in Shanghai is still 31 December in UTC: the site's quarter counts.
    new_year = wall(date(2027, 1, 1), "00:30")
    drills.take(drill_started(new_year))
    assert drills.count(new_year) == 1
    assert drills.count(wall(date(2026, 12, 31), "23:59")) == 0


async def test_no_drill_by_the_warning_day_is_reported_once_per_quarter() -> None:
    state = InMemoryRulesState()
    drills = DrillQuarters(state, TZ, 14)
    before = wall(date(2026, 12, 17), "23:59")
    assert await drills.check(before) == []
    warn_ms = wall(date(2026, 12, 18), "00:00")  # 14 days before 1 January
    assert drills.next_check_ms(before) == warn_ms
    missing = await drills.check(warn_ms)
    assert [e.type for e in missing] == ["drill.missing"]
    assert missing[0].data == {
        "quarter": "2026-Q4",
        "quarter_ends": "2026-12-31",
        "days_left": 14,
        "drills": 0,
    }
    assert await drills.check(warn_ms + 3_600_000) == []  # once
    # after restart (same state): still once
    assert await DrillQuarters(state, TZ, 14).check(warn_ms + 7_200_000) == []
    assert drills.next_check_ms(warn_ms) == wall(date(2027, 3, 18), "00:00")


async def test_a_quarter_with_a_drill_reports_nothing_missing() -> None:
    drills = DrillQuarters(InMemoryRulesState(), TZ, 14)
    drills.take(drill_started(wall(date(2026, 10, 9), "10:00")))
    assert await drills.check(wall(date(2026, 12, 20), "10:00")) == []


# -- a drill across a restart ---------------------------------------------------------------


def drill_events(path: Path) -> list[tuple[str, dict[str, object]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM events WHERE type LIKE 'gateway.drill%' ORDER BY seq")
        return [(b["type"], b["data"]) for b in (json.loads(r) for (r,) in rows)]
    finally:
        db.close()


async def stop_stored(store: Storage, path: Path) -> None:
    """Until the drill's stop is in the file (its memory write runs on the store's thread)."""
    while ("gateway.drill_stopped", {"by": "timer"}) not in drill_events(path):
        await store.outbox.flush()
        await asyncio.sleep(0.01)


async def test_a_drill_across_a_restart_ends_by_itself_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "10:00"))
    async with store_at(path, clock) as store:
        drill = Drill(store.outbox, clock=clock, memory=store.log.memory("gateway"))
        await drill.start(minutes=10, by="school")
        await clock.run_for(180)
    clock = FakeClock(wall_ms=clock.wall_ms() + 60_000, monotonic=5.0)  # off for a minute
    async with store_at(path, clock) as store:
        drill = Drill(store.outbox, clock=clock, memory=store.log.memory("gateway"))
        await drill.restore()
        assert drill.active()
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(drill.run())
            await clock.run_for(6 * 60 - 1)
            assert drill.active()  # 3 min before, 1 min off: 6 min left
            await clock.run_for(1)
            assert not drill.active()
            await asyncio.wait_for(stop_stored(store, path), 5)
            timer.cancel()
    assert drill_events(path) == [
        ("gateway.drill_started", {"by": "school", "minutes": 10}),
        ("gateway.drill_stopped", {"by": "timer"}),
    ]


async def test_a_drill_whose_end_passed_while_off_stops_at_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock(wall_ms=wall(MONDAY, "10:00"))
    async with store_at(path, clock) as store:
        drill = Drill(store.outbox, clock=clock, memory=store.log.memory("gateway"))
        await drill.start(minutes=10, by="school")
    clock = FakeClock(wall_ms=clock.wall_ms() + 3_600_000, monotonic=5.0)
    async with store_at(path, clock) as store:
        drill = Drill(store.outbox, clock=clock, memory=store.log.memory("gateway"))
        await drill.restore()
        assert not drill.active()
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(drill.run())
            await clock.settle()
            await asyncio.wait_for(stop_stored(store, path), 5)
            timer.cancel()
        # a later restart finds no drill at all
        drill = Drill(store.outbox, clock=clock, memory=store.log.memory("gateway"))
        await drill.restore()
        assert not drill.active()
    assert [t for t, _ in drill_events(path)] == ["gateway.drill_started", "gateway.drill_stopped"]


# -- schoolgate report ------------------------------------------------------------------------


def test_schoolgate_report_renders_a_stored_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["report", "-c", str(config)]) == 1  # no store yet
    assert "cannot open" in capsys.readouterr().err
    reports = SqliteReports(tmp_path / "outbox.db")
    span = report_span(MONDAY, AT, TZ)
    figures = LiveFigures(
        devices={"bollard-1": DeviceLive("bollard", "<b>east</b> gate", "offline")},
        paths={"bureau": PathLive(False, span.until_ms - 8_640_000, None, None)},
        clock_sync={"synchronised": False, "max_error_ms": 16000.0},
    )
    rules = RulesFigures(
        ledger=[],
        ledger_summary=LedgerSummary(open=0, overdue=0, closed=0, mean_time_to_repair_s=None),
        open_violations=[],
        patrols=[{"plan": "main", "rounds_done": 3, "rounds_required": 5, "latest": "22:00"}],
        drills={"quarter": "2026-Q3", "this_quarter": 0, "quarter_ends": "2026-09-30"},
    )
    body = build_report(
        span,
        TZ,
        events=[],
        health_before={"bollard-1": "device.offline"},
        store="cannot open the store",
        live=figures,
        rules=rules,
    )
    reports.put(StoredReport("2026-09-07", span.until_ms, "e-1", body, sent=True))
    reports.close()
    assert body["devices"][0]["online_fraction"] == 0.0  # offline all the span
    assert body["paths"]["bureau"]["up_fraction"] == 0.9  # down for the last 10 %

    assert main(["report", "-c", str(config), "--date", "2026-09-06"]) == 1
    assert "no report stored for 2026-09-06" in capsys.readouterr().err
    assert main(["report", "-c", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == body
    assert main(["report", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "daily report 2026-09-07" in out and "device bollard-1: offline, online 0.00 %" in out

    page_path = tmp_path / "report.html"
    assert (
        main(["report", "-c", str(config), "--date", "2026-09-07", "--html", str(page_path)]) == 0
    )
    page = page_path.read_text(encoding="utf-8")
    assert "size: A4" in page and "@page" in page and "break-inside: avoid" in page
    assert "每日巡查报告 Daily inspection report 2026-09-07" in page
    assert "设备在线情况 Devices online" in page
    assert "&lt;b&gt;east&lt;/b&gt; gate" in page and "<b>east</b>" not in page  # escaped
    assert "无法读取 not readable" in page  # the store's figures are missing, and say so
    assert "<script" not in page and "http" not in page.replace('lang="zh-CN"', "")


def write_config(root: Path) -> Path:
    (root / "calendar.toml").write_text(
        "year_start = 2026-09-01\nyear_end = 2027-08-31\n[weekdays]\n"
        'monday = [{ name = "arrival", start = "07:00", end = "08:10" }]\n'
    )
    path = root / "schoolgate.toml"
    path.write_text(
        f'[site]\nschool_id = "school-1"\ngateway_id = "gate-1"\ntimezone = "Asia/Shanghai"\n'
        f'[store]\npath = "{root}/outbox.db"\n[control]\nsocket_path = "{root}/c.sock"\n'
        '[destinations.police]\nhost = "127.0.0.1"\nport = 1883\nclient_id = "g"\n'
        '[rules]\ncalendar_file = "calendar.toml"\n[rules.daily_report]\nat = "18:00"\n'
    )
    return path
