"""The simulated gate of the chaos soak: the layout of `simulators.gate` (same devices, lines,
brokers and generated gateway config), but with every piece restartable from outside, which the
fault injector needs and `simulated_gate` does not offer.

Owns: the store's private file system (a small tmpfs mounted in a mount namespace of its own,
`unshare -rm`, so the soak can fill it up without touching the machine's disk), the gateway
process started inside that namespace (`nsenter`) so it can be SIGKILLed and started again, the
alarm box's Modbus TCP server that can be stopped and restarted on the same port, and the order
of start and teardown. It does not decide when a fault happens (`simulators.chaos`) and does not
judge what arrived (`simulators.chaos_verify`).

The store lives at `<workdir>/store/outbox.db` as the gateway sees it; from outside the namespace
the same file is reached through `/proc/<holder pid>/root/...` (`StoreNamespace.outside`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway.commands import control
from simulators.access_controller import SimBus, SimController, serve_serial
from simulators.bollard import BollardController, SocketSensors
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.gate import (
    DOOR_BUS_BAUD,
    GATE_BUS_BAUD,
    BrokerName,
    GateError,
    gate_devices,
    gateway_config,
)
from simulators.listener import Listener, Received, listen
from simulators.measure import gateway_command
from simulators.modbus_serve import SimUnit, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

_COUNT_PENDING = (
    "import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True);"
    " print(db.execute('SELECT COUNT(*) FROM deliveries WHERE sent_at_ms IS NULL').fetchone()[0])"
)


class StoreNamespace:
    """A process (`sleep`) holding a private mount namespace with a tmpfs of `size_mb` on
    `mountpoint`. Processes started through `wrap` see the tmpfs; everyone else sees the empty
    directory. The tmpfs and everything on it live as long as the holder does."""

    def __init__(self, mountpoint: Path, size_mb: int) -> None:
        self.mountpoint = mountpoint
        self.size_mb = size_mb
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the namespace is not started"
        return self._proc.pid

    async def start(self) -> None:
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if unshare is None or nsenter is None:
            raise GateError("unshare and nsenter (util-linux) are needed for the disk-full fault")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        mount = f"mount -t tmpfs -o size={self.size_mb}m tmpfs '{self.mountpoint}'"
        self._proc = await asyncio.create_subprocess_exec(
            unshare,
            "-rm",
            "sh",
            "-c",
            f"{mount} && echo ready && exec sleep infinity",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 10)
        if line.strip() != b"ready":
            err = await self._proc.stderr.read()
            await self.stop()
            raise GateError(f"could not mount a private tmpfs (unshare -rm): {err.decode()}")

    def wrap(self, command: list[str]) -> list[str]:
        """`command` run inside the namespace (so it sees the tmpfs)."""
        return ["nsenter", "-t", str(self.pid), "-U", "-m", "--preserve-credentials", *command]

    def outside(self, path: Path) -> Path:
        """How a path inside the namespace is reached from outside it."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")

    @property
    def filler(self) -> Path:
        return self.mountpoint / "filler"

    async def fill(self) -> None:
        """Write zeros until the tmpfs is full (ENOSPC ends the writer); `free` undoes it."""
        writer = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            f"cat /dev/zero > '{self.outside(self.filler)}'",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await writer.wait()  # exits 1 with "No space left on device": that is the point
        finally:
            if writer.returncode is None:  # cancelled half-way
                writer.kill()
                await writer.wait()

    def free(self) -> None:
        self.outside(self.filler).unlink(missing_ok=True)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


class GatewayRunner:
    """The real gateway process (`schoolgate run`), inside the store's namespace; its JSON log is
    appended to `log_path` across restarts."""

    def __init__(self, config_path: Path, log_path: Path, ns: StoreNamespace) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self._ns = ns
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        if self.running:
            return
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            *self._ns.wrap(gateway_command(self.config_path)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.starts += 1

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(sig)
        try:
            return await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            return await proc.wait()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class RestartableTcpServer:
    """A Modbus TCP server for one unit that can go away and come back on the same port."""

    def __init__(self, unit: SimUnit) -> None:
        self._unit = unit
        self.port = 0
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def serving(self) -> bool:
        return self._stack is not None

    async def start(self) -> None:
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        for _attempt in range(50):  # the port may linger a moment after a close
            try:
                _, self.port = await stack.enter_async_context(
                    serve_tcp(self._unit, port=self.port)
                )
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise GateError(f"could not listen on port {self.port} again")
        self._stack = stack

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


@dataclass
class ChaosGate:
    workdir: Path
    ns: StoreNamespace
    store_path: Path
    """Where the gateway keeps its outbox, as seen inside the namespace."""
    brokers: dict[BrokerName, MosquittoBroker]
    listeners: dict[BrokerName, Listener]
    panic_box: DiDoModule
    panic_server: RestartableTcpServer
    bollards: dict[int, BollardController]
    sockets: SocketSensors
    doors: SimController
    door_bus: SimBus
    gate_bus: VirtualSerialLink
    door_link: VirtualSerialLink
    gateway: GatewayRunner

    @property
    def control_socket(self) -> Path:
        return self.workdir / "control.sock"

    async def control(self, body: dict[str, Any], timeout_s: float = 3.0) -> dict[str, Any]:
        return await control.request(self.control_socket, body, timeout_s=timeout_s)

    async def pending(self) -> int:
        """Deliveries not yet acknowledged by a broker, read inside the namespace (SQLite
        resolves the /proc/<pid>/root link, so it cannot open the file from outside)."""
        reader = await asyncio.create_subprocess_exec(
            *self.ns.wrap([sys.executable, "-c", _COUNT_PENDING, str(self.store_path)]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await reader.communicate()
        return int(out) if reader.returncode == 0 and out.strip() else -1

    def copy_store(self, to: Path) -> sqlite3.Connection:
        """Copy the outbox (with its WAL) out of the namespace to `to`, open it read-only.
        Stop the gateway first, or the copy may catch a write half-way."""
        to.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal"):
            source = self.ns.outside(self.store_path.with_name(self.store_path.name + suffix))
            if source.exists():
                shutil.copyfile(source, to / source.name)
        return sqlite3.connect(f"file:{to / self.store_path.name}?mode=ro", uri=True)

    async def wait_gateway_ready(self, timeout_s: float = 20.0) -> None:
        """Every device polled once (control socket) and both brokers have it online."""

        def online(m: Received) -> bool:
            return m.topic.endswith("/status") and m.json.get("online") is True

        async with asyncio.timeout(timeout_s):
            while True:
                if not self.gateway.running:
                    raise GateError(f"the gateway exited; its log ends:\n{self.gateway.log_tail()}")
                with contextlib.suppress(control.ControlError):
                    if (await self.control({"op": "status"}))["devices_ready"]:
                        break
                await asyncio.sleep(0.05)
            for listener in self.listeners.values():
                await listener.wait_for(online)


@contextlib.asynccontextmanager
async def chaos_gate(workdir: Path, *, tmpfs_mb: int = 32) -> AsyncIterator[ChaosGate]:
    """Start the gate with its gateway and wait until it is ready; tear it all down on exit."""
    panic_box, bollards, sockets, doors = gate_devices()
    on_gate_bus: dict[int, SimUnit] = {b.unit_id: b for b in bollards.values()}
    on_gate_bus[sockets.unit_id] = sockets
    ns = StoreNamespace(workdir / "store", tmpfs_mb)
    panic_server = RestartableTcpServer(panic_box)
    await ns.start()
    try:
        await panic_server.start()
        async with (
            MosquittoBroker("police") as police_broker,
            MosquittoBroker("bureau") as bureau_broker,
            VirtualSerialLink(baudrate=GATE_BUS_BAUD) as gate_bus,
            serve_rtu(on_gate_bus, gate_bus.device_end, baudrate=GATE_BUS_BAUD),
            VirtualSerialLink(baudrate=DOOR_BUS_BAUD) as door_link,
            serve_serial(doors, door_link.device_end, baudrate=DOOR_BUS_BAUD) as door_bus,
            listen("police", police_broker.host, police_broker.port) as police,
            listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        ):
            config = gateway_config(
                workdir,
                police_port=police_broker.port,
                bureau_port=bureau_broker.port,
                modbus_port=panic_server.port,
                gate_bus=gate_bus.host_end,
                door_bus=door_link.host_end,
            )
            store_path = ns.mountpoint / "outbox.db"
            config = config.replace(
                f'path = "{workdir}/outbox.db"', f"path = {json.dumps(str(store_path))}"
            )
            config_path = workdir / "schoolgate.toml"
            config_path.write_text(config)
            runner = GatewayRunner(config_path, workdir / "gateway.log", ns)
            gate = ChaosGate(
                workdir=workdir,
                ns=ns,
                store_path=store_path,
                brokers={"police": police_broker, "bureau": bureau_broker},
                listeners={"police": police, "bureau": bureau},
                panic_box=panic_box,
                panic_server=panic_server,
                bollards=bollards,
                sockets=sockets,
                doors=doors,
                door_bus=door_bus,
                gate_bus=gate_bus,
                door_link=door_link,
                gateway=runner,
            )
            try:
                await runner.start()
                await gate.wait_gateway_ready()
                yield gate
            finally:
                await runner.stop()
                runner.close_log()
                for bollard in bollards.values():
                    bollard.stop()
    finally:
        await panic_server.stop()
        await ns.stop()
