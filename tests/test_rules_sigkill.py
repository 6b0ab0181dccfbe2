"""The rules' timers survive SIGKILL: the real gateway process is killed while two socket timers
(随拔随插) and a window rule's grace are running; after the restart each fires exactly once, at
its deadline, as the bureau's broker receives it; a second kill and restart after they fired
repeats none of them. The daily report likewise: killed before its time, the gateway is dead
while the time passes, and after the restart the bureau gets the day's report once; killed again
after sending it, the next restart sends no other.

Real parts: the gateway process (with `[rules]`), simulated socket sensors and a rising bollard
on Modbus TCP, mosquitto brokers. Time is real and the deadlines are short (3 s and 12 s timers,
a 4 s grace). The only wait on the clock is the scenario's own: the gateway stays dead until the
first timer's stored deadline has passed (that timer must then fire at once after the restart);
everything else waits for an event or for a row in the store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.core.clock import TEST_WALL_START_VAR
from simulators.bollard import GENERIC, BollardController, SocketSensors
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp
from simulators.gate import SITE_TZ
from simulators.listener import Listener, listen
from tests_support import GatewayProcess, report_rules, rules_calendar, socket_module, until

pytestmark = [pytest.mark.long(14), pytest.mark.timeout(120)]

SHORT_S, LONG_S, GRACE_S = 3.0, 12.0, 4.0
"""The two socket timers and the window rule's grace."""
LATE_MS = 2000
"""How late after its deadline a timer's event may be stamped (the engine's wake-up, a poll)."""


def extra_config(folder: Path, port: int) -> str:
    # No gate window on any weekday: the bollard must be up all day, every day.
    return (
        socket_module("lane", port)
        + f"""
[devices.vehicle]
kind = "bollard"
line = "lane"
unit_id = 2
location = "East gate vehicle lane"
profile = "generic_bollard"
travel_timeout_ms = 2000

[rules]
calendar_file = "{rules_calendar(folder)}"

[[rules.window]]
id = "vehicle-up"
devices = ["vehicle"]
required_state = "up"
grace_s = {GRACE_S}

[[rules.socket_timer]]
device = "lane_sockets"
sockets = {{ "socket-0" = {SHORT_S / 60}, "socket-1" = {LONG_S / 60} }}
"""
    )


def stored_rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of the gateway's store; none while its rules' tables are not made yet."""
    with sqlite3.connect(db, timeout=1.0) as conn:
        try:
            rows = conn.execute(query).fetchall()
        except sqlite3.OperationalError:  # the tables are not made yet
            rows = []
    conn.close()
    return rows


def stored_deadlines(db: Path) -> dict[str, int]:
    """The running timers the gateway has stored: socket name -> wall deadline (ms)."""
    rows = stored_rows(db, "SELECT key, deadline_ms FROM rules_timers")
    return {str(key).rsplit("/", 1)[-1].rsplit(":", 1)[-1]: int(ms) for key, ms in rows}


def occurred_ms(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["occurred_at"]).timestamp() * 1000)


def distinct(events: list[dict[str, Any]]) -> set[str]:
    """Event ids: a SIGKILL between sending and marking sent makes the gateway send an event
    again after the restart (at least once, the same id); a timer firing twice is two ids."""
    return {e["id"] for e in events}


def late(bureau: Listener, socket: str) -> set[str]:
    return distinct(
        [e for e in bureau.events("bollard.not_reinserted") if e["data"]["socket"] == socket]
    )


async def restart(
    gateway: GatewayProcess, bureau: Listener, env: dict[str, str] | None = None
) -> None:
    """Start the gateway again and wait until it is online and has polled every device."""
    since = len(bureau.messages)
    gateway.start(env)
    await bureau.wait_for(
        lambda m: m.topic.endswith("/status") and m.json.get("online") is True, since=since
    )
    await gateway.wait_ready()


async def test_timers_and_a_grace_fire_once_at_their_deadlines_across_sigkill(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, box_port = box
    sensors = SocketSensors(4, sockets=2)
    bollard = BollardController(2, layout=GENERIC, travel_ms=300)
    async with (
        serve_tcp({2: bollard, 4: sensors}) as (_, port),
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        gateway = GatewayProcess(
            tmp_path,
            police_broker,
            bureau_broker,
            modbus_tcp_port=box_port,
            extra=extra_config(tmp_path, port),
        )
        gateway.start()
        try:
            await gateway.wait_ready()
            sensors.pull(0)
            sensors.pull(1)
            bollard.operate("lower")
            await bureau.wait_event(lambda e: e["type"] == "bollard.lowered")
            # The positive sign that both timers run: their deadlines are in the store.
            await until(lambda: len(stored_deadlines(gateway.db)) == 2)
            deadlines = stored_deadlines(gateway.db)
            await gateway.kill()
            killed_ms = time.time_ns() // 1_000_000
            assert bureau.events("bollard.not_reinserted") == []
            assert bureau.events("rule.violation") == []  # its grace was still running
            assert killed_ms < deadlines["socket-0"] < deadlines["socket-1"]

            # Dead while the short timer's deadline passes (the scenario, not a wait for a result).
            await asyncio.sleep((deadlines["socket-0"] - killed_ms) / 1000 + 0.2)
            await restart(gateway, bureau)
            short = await bureau.wait_event(
                lambda e: (
                    e["type"] == "bollard.not_reinserted" and e["data"]["socket"] == "socket-0"
                )
            )
            long = await bureau.wait_event(
                lambda e: (
                    e["type"] == "bollard.not_reinserted" and e["data"]["socket"] == "socket-1"
                ),
                timeout_s=LONG_S + 5,
            )
            violation = await bureau.wait_event(
                lambda e: e["type"] == "rule.violation", timeout_s=GRACE_S + 5
            )

            # Killed again after they fired: the restart must repeat none of them. The positive
            # sign that it had its chance: it reads the sockets and the bollard and answers
            # their changes (reinserted, restored) after its first poll.
            await gateway.kill()
            await restart(gateway, bureau)
            sensors.insert(0)
            sensors.insert(1)
            bollard.operate("raise")
            await bureau.wait_event(lambda e: e["type"] == "rule.restored")
            await until(lambda: len(distinct(bureau.events("bollard.reinserted"))) == 2)
        finally:
            await gateway.stop()
    # The short timer's deadline passed while the gateway was dead: it fired once, after the
    # restart, stamped at once (never before its deadline).
    assert len(late(bureau, "socket-0")) == 1
    assert deadlines["socket-0"] <= occurred_ms(short)
    # The long one ran on across the restart and fired once at its stored deadline.
    assert len(late(bureau, "socket-1")) == 1
    assert deadlines["socket-1"] <= occurred_ms(long) <= deadlines["socket-1"] + LATE_MS
    # The grace is not stored: it starts again at the restart (one grace late at worst), once.
    assert len(distinct(bureau.events("rule.violation"))) == 1
    assert occurred_ms(violation) >= killed_ms + GRACE_S * 1000
    assert violation["data"]["rule"] == "vehicle-up"
    assert len(distinct(bureau.events("rule.restored"))) == 1


REPORT_DAY = date.today()


def wall_at(hhmmss: str) -> dict[str, str]:
    """The gateway's wall clock starting at this site time of REPORT_DAY (the clock seam the
    scenario runner uses; the store is under the temporary folder, so it is allowed)."""
    at = datetime.combine(REPORT_DAY, datetime.strptime(hhmmss, "%H:%M:%S").time())
    return {TEST_WALL_START_VAR: str(int(at.replace(tzinfo=ZoneInfo(SITE_TZ)).timestamp() * 1000))}


def kept_reports(db: Path) -> list[tuple[str, int]]:
    """The reports the gateway has built and kept: (day, sent)."""
    rows = stored_rows(db, "SELECT day, sent FROM rules_reports")
    return [(str(day), int(sent)) for day, sent in rows]


async def test_a_report_due_while_the_gateway_is_dead_is_sent_once_after_the_restart(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, box_port = box
    extra = report_rules(tmp_path, "18:00")
    async with listen("bureau", bureau_broker.host, bureau_broker.port) as bureau:
        gateway = GatewayProcess(
            tmp_path, police_broker, bureau_broker, modbus_tcp_port=box_port, extra=extra
        )
        # Its clock starts a minute before the report time: killed well before it.
        gateway.start(wall_at("17:59:00"))
        try:
            await gateway.wait_ready()
            await gateway.kill()
            assert kept_reports(gateway.db) == []
            assert bureau.events("report.daily") == []

            # Dead across 18:00: it comes back at 18:00:30 and the day has no report yet.
            await restart(gateway, bureau, wall_at("18:00:30"))
            report = await bureau.wait_event(lambda e: e["type"] == "report.daily")
            await until(lambda: kept_reports(gateway.db) == [(REPORT_DAY.isoformat(), 1)])

            # Killed again after sending: the next restart must build and send no other. The
            # positive sign that its rules had their chance: a drill started on the box goes
            # through them and out to the bureau.
            await gateway.kill()
            await restart(gateway, bureau, wall_at("18:02:00"))
            drill = await gateway.cli("drill", "start", "--minutes", "5", "--by", "head teacher")
            assert drill.returncode == 0, drill.stderr
            await bureau.wait_event(lambda e: e["type"] == "gateway.drill_started")
        finally:
            await gateway.stop()
    # Once: one event id (a resend of the same id after a kill is at-least-once delivery).
    assert distinct(bureau.events("report.daily")) == {report["id"]}
    assert report["data"]["date"] == REPORT_DAY.isoformat()
    assert kept_reports(gateway.db) == [(REPORT_DAY.isoformat(), 1)]
    # Built after the restart, at the restarted clock: not before its time.
    assert occurred_ms(report) >= int(wall_at("18:00:30")[TEST_WALL_START_VAR])
