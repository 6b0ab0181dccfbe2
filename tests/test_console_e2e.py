"""End to end, the receiving console against the real gateway (issue: the console's acceptance
tests): the gateway as its own process with a [security] section, the DI/DO simulator as the
guard's box, real mosquitto brokers, and `schoolgate console` in the operator's seat: in-process
through its Python API (keystrokes through its key queue, what it shows read from its board, its
records and its rendered view), or as `python -m gateway console --json` where a subprocess fits.

Press -> the console shows the alarm -> the operator presses `a` -> the lamp goes steady and the
console shows the alarm acknowledged; no acknowledgement -> escalated and the siren; a network
cut between the console and its broker loses events for real -> the heartbeats show it, the
console asks for a replay and ends with every seq the gateway routed to its broker; a SIGSTOPped
gateway is reported silent, a SIGKILLed one offline; the police path down reaches the bureau.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core import keys
from gateway.uplink import mqtt
from receiver.console import Console, ConsoleOptions, Signer
from receiver.state import GatewayRef
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.listener import Listener, listen
from tests_support import ConsoleRecords, GatewayProcess, blinks, screen_text, until

pytestmark = pytest.mark.timeout(60)

SCHOOL, GATEWAY = "school-7", "gate-east"
REF = GatewayRef(SCHOOL, GATEWAY)
BASE = f"schoolgate/v1/{SCHOOL}/{GATEWAY}"
LAMP, SIREN, FAULT = 0, 1, 2
BUTTON, RESET = 0, 7  # the box's desk button and its reset key (tests_support.TEMPLATE)
OPERATOR = "Officer Li"


# --- the gate -----------------------------------------------------------------------------------


class Gate:
    """The gateway process with a [security] section trusting the console's key, and that key."""

    def __init__(
        self,
        tmp_path: Path,
        police: MosquittoBroker,
        bureau: MosquittoBroker,
        box_port: int,
        *,
        ack_timeout_s: float = 30,
    ) -> None:
        self.gateway_pub = keys.write_key_pair(tmp_path, GATEWAY).public_key
        console = keys.write_key_pair(tmp_path, "police-console")
        self.console_key = console.private_key
        extra = f"""
[alarms]
ack_timeout_s = {ack_timeout_s}

[supervision]
heartbeat_s = 1
report_after_s = 1
fault_device = "box"

[security]
gateway_key_file = "{tmp_path}/{GATEWAY}.key"
gateway_key_id = "{GATEWAY}"

[[security.trusted_keys]]
id = "police-console"
public_key = "{console.public_b64}"
commands = ["acknowledge", "replay"]
"""
        self.process = GatewayProcess(
            tmp_path,
            police,
            bureau,
            modbus_tcp_port=box_port,
            extra=extra,
            box_extra=f"fault_coil = {FAULT}",
        )

    def options(self, host: str, port: int, **overrides: Any) -> ConsoleOptions:
        params = mqtt.BrokerParams(host, port, client_id=f"console-{os.urandom(3).hex()}")
        fields: dict[str, Any] = {
            "broker": params,
            "gateway_keys": {GATEWAY: keys.load_public_key(str(self.gateway_pub), Path.cwd())},
            "gateways": (f"{SCHOOL}/{GATEWAY}",),
            "signer": Signer(keys.load_private_key(self.console_key), "police-console"),
            "operator": OPERATOR,
            "tick_s": 0.1,
        }
        return ConsoleOptions(**(fields | overrides))

    def routed_seqs(self, destination: str) -> dict[int, str]:
        """The gateway's own record, read-only: every seq routed to `destination`, its type."""
        db = sqlite3.connect(f"file:{self.process.db}?mode=ro", uri=True, timeout=2.0)
        try:
            rows = db.execute(
                "SELECT d.seq, e.type FROM deliveries AS d JOIN events AS e ON e.seq = d.seq "
                "WHERE d.destination = ?",
                (destination,),
            ).fetchall()
        finally:
            db.close()
        return {int(seq): str(kind) for seq, kind in rows}


# --- the console --------------------------------------------------------------------------------


class Records(ConsoleRecords):
    """The console's sink; events are awaited by type here."""

    async def wait_event(self, event_type: str, timeout_s: float = 10.0) -> dict[str, Any]:
        return await self.wait_for(
            lambda r: "console" not in r and r["type"] == event_type, timeout_s
        )


@contextlib.asynccontextmanager
async def running(console: Console) -> AsyncIterator[Console]:
    task = asyncio.create_task(console.run(), name="test:console")
    try:
        await asyncio.wait_for(console.subscribed.wait(), 10.0)
        yield console
    finally:
        console.stop()
        await asyncio.wait_for(task, 10.0)


def is_type(event_type: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == event_type


class JsonConsole:
    """`python -m gateway console ... --json` as a subprocess; its lines, parsed, as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        for line in self.lines:
            if predicate(line):
                return line
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"the console ended (exit {await self.proc.wait()})"
                self.lines.append(json.loads(raw))
                if predicate(self.lines[-1]):
                    return self.lines[-1]


@contextlib.asynccontextmanager
async def json_console(log: Path, *args: str) -> AsyncIterator[JsonConsole]:
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "console",
            *args,
            "--json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield JsonConsole(proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


# --- the lamp -----------------------------------------------------------------------------------


async def goes_steady(module: DiDoModule, coil: int, *, hold_s: float, timeout_s: float) -> bool:
    """The coil comes on and then stays on, without a single off sample, for `hold_s`, at some
    point within `timeout_s` (a lamp blinking at 1 Hz or 4 Hz never does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    on_since: float | None = None
    while loop.time() < deadline:
        now = loop.time()
        if not module.coil(coil):
            on_since = None
        elif on_since is None:
            on_since = now
        elif now - on_since >= hold_s:
            return True
        await asyncio.sleep(0.02)
    return False


def board_line(console: Console, alarm_id: str) -> str:
    """The view's line of that alarm (the board is drawn as the operator sees it)."""
    alarm = console.board.get(REF, alarm_id)
    assert alarm is not None, f"{alarm_id} not on the board"
    number = console.board.ordered().index(alarm) + 1
    text = screen_text(console)
    return next(line for line in text.splitlines() if line.startswith(f"[{number}]"))


# --- the tests ----------------------------------------------------------------------------------


async def test_press_shows_the_alarm_and_a_keystroke_acknowledges_it(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gate = Gate(tmp_path, police_broker, bureau_broker, port)
    records = Records()
    keystrokes: asyncio.Queue[str] = asyncio.Queue()
    console = Console(
        gate.options(police_broker.host, police_broker.port), records, keys=keystrokes
    )
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gate.process.running(police, clean_exit=True),
        running(console),
    ):
        await module.pulse(BUTTON, 150)
        alarm = await records.wait_event("alarm.panic")
        assert alarm["signer"] == GATEWAY and "sig" not in alarm
        line = board_line(console, alarm["alarm_id"])
        assert "UNACKNOWLEDGED" in line and "alarm.panic" in line, line
        assert await blinks(module, LAMP, within_s=5), "at the police broker, not acknowledged"

        keystrokes.put_nowait("a")  # the top unacknowledged alarm: this one
        sent = await records.wait_notice("command_sent")
        answer = await records.wait_notice("command_result", command_id=sent["command_id"])
        assert answer["command"] == "acknowledge" and answer["status"] == "done", answer
        assert answer["args"] == {"alarm_id": alarm["alarm_id"], "by": OPERATOR}
        acked = await records.wait_event("alarm.acknowledged")
        assert acked["alarm_id"] == alarm["alarm_id"]
        assert acked["data"]["by"] == OPERATOR and acked["data"]["issuer"] == "police-console"
        # The lamp: on, and on without a blink for a second, within a generous bound.
        assert await goes_steady(module, LAMP, hold_s=1.0, timeout_s=5.0), "acknowledged: steady"
        assert module.coil(SIREN) is False
        board = console.board.get(REF, alarm["alarm_id"])
        assert board is not None and board.acknowledged_by == OPERATOR
        line = board_line(console, alarm["alarm_id"])
        assert f"ack by {OPERATOR}" in line and "UNACKNOWLEDGED" not in line, line
    assert console.refused == {}


async def test_no_acknowledgement_shows_the_alarm_escalated_and_sounds_the_siren(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gate = Gate(tmp_path, police_broker, bureau_broker, port, ack_timeout_s=1)
    records = Records()
    console = Console(gate.options(police_broker.host, police_broker.port), records)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gate.process.running(police, clean_exit=True),
        running(console),
    ):
        await module.pulse(BUTTON, 150)
        alarm = await records.wait_event("alarm.panic")
        escalated = await records.wait_event("alarm.escalated")
        assert escalated["alarm_id"] == alarm["alarm_id"] and escalated["data"]["siren"] is True
        await module.wait_coil(SIREN, True, timeout_s=5)
        board = console.board.get(REF, alarm["alarm_id"])
        assert board is not None and board.escalated and not board.acknowledged
        line = board_line(console, alarm["alarm_id"])
        assert "ESCALATED" in line and "UNACKNOWLEDGED" in line, line
        assert records.events("alarm.acknowledged") == []


class CuttableLink:
    """A TCP relay between the console and its broker that the test can cut, as a network
    outage would: cut, its connections are dropped (the broker ends the console's clean
    session, so what is published meanwhile is lost for it) and new ones are closed at once."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self.port = 0
        self._down = False
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(set(self._handlers))

    def cut(self) -> None:
        self._down = True
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    def restore(self) -> None:
        self._down = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            if self._down:
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
            for transport in (writer.transport, up_writer.transport):
                assert isinstance(transport, asyncio.WriteTransport)
                self._transports.add(transport)
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, up_writer), name="link:up")
                group.create_task(_pipe(up_reader, writer), name="link:down")
        finally:
            writer.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass  # the other side went away: the link is down
    finally:
        sink.transport.abort()


async def test_events_lost_in_a_network_cut_are_found_by_the_heartbeats_and_replayed(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gate = Gate(tmp_path, police_broker, bureau_broker, port)
    records = Records()

    async def press_and_reset(police: Listener) -> None:
        """One alarm and its reset at the box, both seen at the police broker."""
        for button, kind in ((BUTTON, "alarm.panic"), (RESET, "alarm.reset")):
            since = len(police.messages)
            await module.pulse(button, 150)
            await police.wait_event(is_type(kind), since=since)

    async with (
        CuttableLink(police_broker.port) as link,
        listen("police", police_broker.host, police_broker.port) as police,
    ):
        # The console listens before the gateway starts, so it may see every event it routes.
        console = Console(gate.options("127.0.0.1", link.port), records)
        async with running(console), gate.process.running(police, clean_exit=True):
            await press_and_reset(police)
            await records.wait_event("alarm.reset")
            heard = console.heartbeats_heard
            await until(lambda: console.heartbeats_heard > heard)  # a heartbeat checked

            link.cut()
            await records.wait_notice("broker", state="disconnected")
            since = len(police.messages)
            for _ in range(3):  # the console misses all of these
                await press_and_reset(police)
            missed = {m.json["seq"] for m in police.messages[since:] if "/events/" in m.topic}
            # The heartbeats that cover them go out while the console is away.
            await police.wait_for(
                lambda m: m.topic == f"{BASE}/heartbeat" and m.json["last_seq"] >= max(missed),
                since=since,
                timeout_s=10,
            )
            assert not missed & {e["seq"] for e in records.events()}
            link.restore()

            gap = await records.wait_notice("gap", timeout_s=20)  # after the reconnection
            assert gap["replay"] == "requested" and gap["routed"] is None, gap
            assert gap["from_seq"] < min(missed) and gap["last_seq"] >= max(missed), gap
            filled = await records.wait_notice("gap_filled", timeout_s=10)
            assert (filled["from_seq"], filled["last_seq"]) == (gap["from_seq"], gap["last_seq"])
            result = await records.wait_notice("command_result", command="replay")
            assert result["status"] == "done", result

            routed = gate.routed_seqs("police")
            await until(lambda: set(routed) <= {e["seq"] for e in records.events()})
        assert console.gaps.open_gaps() == []

    shown = {e["seq"]: e for e in records.events()}
    assert missed <= set(routed) and missed <= set(shown)
    assert all(shown[seq]["historical"] is True for seq in missed)
    assert all(shown[seq]["type"] == kind for seq, kind in routed.items())
    assert set(shown) <= set(gate.routed_seqs("police"))  # nothing the gateway did not route
    assert len(records.events()) == len(shown)  # every seq once: replayed copies de-duplicated


async def test_stopped_gateway_is_reported_silent_and_a_killed_one_offline(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gate = Gate(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gate.process.running(police),
        json_console(
            tmp_path / "console.log",
            f"{SCHOOL}/{GATEWAY}",
            "--host",
            police_broker.host,
            "--port",
            str(police_broker.port),
            "--gateway-key",
            f"{GATEWAY}={gate.gateway_pub}",
            "--silent-after",
            "3",
        ) as console,
    ):
        await console.wait_for(lambda r: r.get("state") == "connected")
        await module.pulse(BUTTON, 150)
        await console.wait_for(lambda r: r.get("type") == "alarm.panic")  # it hears the gate

        proc = gate.process.proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)  # no heartbeats, and no will: the socket stays open
        try:
            quiet = await console.wait_for(lambda r: r.get("console") == "silent", 3 + 7)
        finally:
            proc.send_signal(signal.SIGCONT)
        assert quiet["reason"] == "quiet" and quiet["gateway"] == GATEWAY, quiet
        assert quiet["quiet_s"] >= 3
        await console.wait_for(lambda r: r.get("console") == "back")

        await gate.process.kill()
        offline = await console.wait_for(lambda r: r.get("console") == "silent" and r is not quiet)
        assert offline["reason"] == "offline" and offline["gateway"] == GATEWAY, offline
    assert not [r for r in console.lines if r.get("console") == "refused"]


async def test_police_path_down_is_shown_on_the_bureau_console(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, port = box
    gate = Gate(tmp_path, police_broker, bureau_broker, port)
    records = Records()
    console = Console(gate.options(bureau_broker.host, bureau_broker.port), records)
    async with (
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gate.process.running(bureau, clean_exit=True),
        running(console),
    ):
        await until(lambda: console.heartbeats_heard > 0)
        await police_broker.stop()
        down = await records.wait_event("gateway.path_down", timeout_s=15)
        assert down["data"]["destination"] == "police" and down["severity"] == "major"
        assert console.silence.silent() == []  # the gateway itself is fine
