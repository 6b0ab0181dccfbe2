"""A whole simulated gate for end-to-end tests: the real gateway as its own process, with a
generated config, against simulator modules and mosquitto brokers the test owns; and what the
receiving console's tests share (its records, its screen as text)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import rich.console

from gateway.commands import control
from receiver.view import Screen
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.listener import Listener
from simulators.measure import gateway_command

if TYPE_CHECKING:
    from receiver.console import Console

TEMPLATE = """\
[site]
school_id = "school-7"
gateway_id = "gate-east"
timezone = "Asia/Shanghai"

[store]
path = "{dir}/outbox.db"

[control]
socket_path = "{dir}/control.sock"

[destinations.police]
{police_address}
client_id = "gate-east-police"
routes = ["alarm.*", "device.*"]
{police_extra}

[destinations.bureau]
host = "127.0.0.1"
port = {bureau}
client_id = "gate-east-bureau"

{lines}

[devices.box]
kind = "alarm_box"
line = "{line}"
unit_id = {unit}
location = "East gate booth"
poll_interval_ms = {poll_ms}
reset_input = 7
lamp_coil = 0
siren_coil = 1
offline_after_ms = 1000
{box_extra}
[[devices.box.buttons]]
input = 0
name = "desk"
{counter}

{extra}
"""


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        police: MosquittoBroker | None,
        bureau: MosquittoBroker,
        *,
        police_nodes: list[tuple[str, int]] | None = None,
        modbus_tcp_port: int | None = None,
        serial_port: str | None = None,
        unit: int = 1,
        poll_ms: int = 50,
        press_counter: bool = False,
        extra: str = "",
        box_extra: str = "",
        police_extra: str = "",
    ) -> None:
        """`extra` is appended to the config (whole sections); `box_extra` and `police_extra`
        are lines added to the alarm box's and the police destination's sections. With
        `police_nodes` (and no `police` broker) the police destination is a cluster's nodes."""
        self.dir = workdir
        if modbus_tcp_port is not None:
            lines = f'[lines.io]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {modbus_tcp_port}'
        else:
            lines = f'[lines.io]\ntype = "modbus_rtu"\nport = "{serial_port}"\nbaudrate = 19200'
        self.config = workdir / "schoolgate.toml"
        self.config.write_text(
            TEMPLATE.format(
                dir=workdir,
                police_address=_address(police, police_nodes),
                bureau=bureau.port,
                lines=lines,
                line="io",
                unit=unit,
                poll_ms=poll_ms,
                counter="press_counter_register = 0" if press_counter else "",
                extra=extra,
                box_extra=box_extra,
                police_extra=police_extra,
            )
        )
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.dir / "outbox.db"

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                gateway_command(self.config),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )

    @contextlib.asynccontextmanager
    async def running(self, listener: Listener, *, clean_exit: bool = False) -> AsyncIterator[None]:
        """Start the gateway, wait for its retained `online` at `listener`'s broker, and stop
        it (SIGTERM) when the block ends; `clean_exit` also asserts it exits with 0."""
        self.start()
        try:
            await listener.wait_for(
                lambda m: m.topic.endswith("/status") and m.json["online"] is True, timeout_s=15
            )
            yield
        finally:
            code = await self.stop()
            assert code == 0 or not clean_exit, f"exit {code}\n{self.log_text()[-2000:]}"

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return await loop.run_in_executor(None, proc.wait)

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `schoolgate ARGS -c CONFIG` without blocking the loop the simulators serve on."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *args,
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    async def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Until every device has answered its first poll (asked over the control socket)."""
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(control.ControlError):
                    status = await control.request(self.dir / "control.sock", {"op": "status"})
                    if status["devices_ready"]:
                        return
                await asyncio.sleep(0.02)

    async def wait_stored(self, event_type: str, timeout_s: float = 10.0) -> str:
        """Wait until the outbox file holds an event of this type; returns its id."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self.db.exists():
                row = None
                # A store being created right now has its file before its tables.
                with (
                    sqlite3.connect(self.db, timeout=1.0) as db,
                    contextlib.suppress(sqlite3.OperationalError),
                ):
                    row = db.execute(
                        "SELECT id FROM events WHERE type=? ORDER BY seq DESC LIMIT 1",
                        (event_type,),
                    ).fetchone()
                db.close()
                if row:
                    return str(row[0])
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no {event_type} stored; log:\n{self.log.read_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text()


def rules_calendar(folder: Path, weekdays: str = "") -> str:
    """Write `calendar.toml` for a school year around today into `folder` and return its name
    for `calendar_file`; `weekdays` are the lines of its `[weekdays]` table (none: no gate
    window on any day, so an `outside` rule applies all day)."""
    today = date.today()
    (folder / "calendar.toml").write_text(
        f"year_start = {today - timedelta(days=1)}\nyear_end = {today + timedelta(days=300)}\n"
        f"[weekdays]\n{weekdays}"
    )
    return "calendar.toml"


MONDAY_ARRIVAL = 'monday = [{ name = "arrival", start = "07:00", end = "08:10" }]\n'
"""A `[weekdays]` line: Monday's arrival window, 07:00-08:10 (for `rules_calendar`)."""


def report_rules(folder: Path, at: str, weekdays: str = "") -> str:
    """The `[rules]` config of a gateway with a calendar in `folder` (see `rules_calendar`)
    and its daily report built at `at` (site time, "HH:MM")."""
    calendar = rules_calendar(folder, weekdays)
    return f'\n[rules]\ncalendar_file = "{calendar}"\n\n[rules.daily_report]\nat = "{at}"\n'


def socket_module(line: str, port: int) -> str:
    """Config sections: the Modbus TCP line `line` to 127.0.0.1:`port` and on it, unit 4, the
    socket module `lane_sockets` with sockets "socket-0" (input 0) and "socket-1" (input 1)."""
    return f"""
[lines.{line}]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}

[devices.lane_sockets]
kind = "bollard_sockets"
line = "{line}"
unit_id = 4
location = "East gate lane"
poll_interval_ms = 50
sockets = [{{ input = 0, name = "socket-0" }}, {{ input = 1, name = "socket-1" }}]
"""


def _address(broker: MosquittoBroker | None, nodes: list[tuple[str, int]] | None) -> str:
    if broker is not None:
        return f'host = "{broker.host}"\nport = {broker.port}'
    if not nodes:
        raise ValueError("give the police broker or its nodes")
    return "nodes = [" + ", ".join(f'"{host}:{port}"' for host, port in nodes) + "]"


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """For state that has no event to await (the console's heartbeat count, a set of seqs)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - nothing to await: polled, bounded
            await asyncio.sleep(0.02)


async def blinks(module: DiDoModule, coil: int, *, within_s: float) -> bool:
    """The simulated module's coil goes both on and off within the time (a blinking lamp)."""
    seen: set[bool] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while loop.time() < end and len(seen) < 2:
        seen.add(module.coil(coil))
        await asyncio.sleep(0.02)
    return len(seen) == 2


class ConsoleRecords:
    """A console's sink (`receiver.console`): every event and notice it gives out, and a way to
    await one."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._new = asyncio.Event()

    def __call__(self, record: dict[str, Any]) -> None:
        self.items.append(record)
        self._new.set()

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        found = [r for r in self.items if "console" not in r]
        return [e for e in found if event_type is None or e["type"] == event_type]

    def notices(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.items if r.get("console") == kind]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                for record in self.items:
                    if predicate(record):
                        return record
                self._new.clear()
                await self._new.wait()

    async def wait_notice(
        self, kind: str, timeout_s: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        return await self.wait_for(
            lambda r: r.get("console") == kind and all(r.get(k) == v for k, v in fields.items()),
            timeout_s,
        )


def screen_text(console: Console, *, width: int = 160, height: int = 60) -> str:
    """The console's view as plain text on a terminal of that size (`receiver.view.Screen`)."""
    terminal = rich.console.Console(
        width=width, height=height, record=True, file=io.StringIO(), color_system=None
    )
    terminal.print(Screen(console))
    return terminal.export_text()


BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str) -> ModuleType:
    """A bench module or package by path, as `bench_<name>` (bench/ is scripts, not a package of
    the project)."""
    package = BENCH / name / "__init__.py"
    spec = (
        importlib.util.spec_from_file_location(
            f"bench_{name}", package, submodule_search_locations=[str(package.parent)]
        )
        if package.exists()
        else importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
