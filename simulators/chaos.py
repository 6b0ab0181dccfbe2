"""The chaos soak (issue 6): a known stream of events at the simulated gate while a fault injector
breaks things at random moments; at the end `simulators.chaos_verify` checks what arrived.

    from simulators.chaos import ChaosSettings, run_chaos
    report = await run_chaos(ChaosSettings(seconds=60, seed=7), workdir)

Owns the workload (panic presses, resets by a person, bollards, sockets, card swipes, doors, with
a burst now and then, everything the harness causes written to a `Ledger`), the fault injector
(seeded; every kind comes up once per round, in a random order, at random moments), bringing the
gate back to health at the end and waiting for the outbox to drain. The gate is
`simulators.chaos_gate`; the checks and the report are `simulators.chaos_verify`. `bench/chaos`
is the command line, `tests/test_chaos.py` the short version in the suite.

Faults: a broker restart (SIGTERM, so mosquitto keeps the listener's persistent session and
queue: a loss must be the gateway's, not the harness's), SIGKILL of the gateway and a start
again, a device that stops answering, the alarm box's TCP server going away, garbage and CRC
errors on the RS-485 line (and garbage on the access controller's line), and the store's disk
filling up. A SIGKILL and a full disk never overlap: what the gateway holds in memory while its
disk is full is by design lost with the process (docs/store_and_forward.md), so that double
fault would not tell us anything new.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from gateway.commands import control
from simulators.access_controller import SimController
from simulators.chaos_gate import ChaosGate, chaos_gate
from simulators.chaos_verify import ChaosReport, Ledger, verify
from simulators.gate import RESET_INPUT
from simulators.modbus_serve import SimUnit

GUARD = "chaos guard"
"""The person who resets alarms (`reset_by` of the resets the soak asks for)."""
FAULT_KINDS = (
    "broker_restart:police",
    "broker_restart:bureau",
    "gateway_sigkill",
    "device_silent",
    "alarm_box_tcp_restart",
    "serial_garbage",
    "crc_errors",
    "disk_full",
)
SILENCEABLE = ("panic_box", "bollard_1", "bollard_2", "lane_sockets", "gate_doors")


@dataclass(frozen=True)
class ChaosSettings:
    seconds: float = 60.0
    seed: int = 1
    disk_full: bool = True
    tmpfs_mb: int = 32
    fault_gap_s: tuple[float, float] = (1.5, 4.0)
    """Time between two faults starting (uniform); faults of different kinds may overlap."""
    drain_timeout_s: float = 60.0
    log: Callable[[str], None] = field(default=lambda _line: None)


class _Soak:
    def __init__(self, gate: ChaosGate, settings: ChaosSettings) -> None:
        self.gate = gate
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.ledger = Ledger(seed=settings.seed)
        self._exclusive = asyncio.Lock()  # SIGKILL and disk full never overlap
        self._busy: set[str] = set()
        self._t0 = time.monotonic()

    def say(self, text: str) -> None:
        self.settings.log(f"{time.monotonic() - self._t0:7.2f}s  {text}")

    # -- the workload ------------------------------------------------------------------------

    async def presses(self) -> None:
        box = self.gate.panic_box
        while True:
            await asyncio.sleep(self.rng.uniform(1.5, 4.0))
            button = self.rng.choice((0, 1))
            for _ in range(2 if self.rng.random() < 0.2 else 1):  # sometimes pressed twice
                self.ledger.presses.append((time.time_ns(), button))
                await box.pulse(button, 100)
                await asyncio.sleep(0.3)

    async def resets(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(2.0, 6.0))
            if self.rng.random() < 0.2:
                self.ledger.reset_key_pulses.append(time.time_ns())
                await self.gate.panic_box.pulse(RESET_INPUT, 150)
                continue
            try:
                open_alarms = (await self.gate.control({"op": "alarms"}))["alarms"]
            except control.ControlError:
                continue  # the gateway is down: the guard tries again later
            for alarm in open_alarms:
                if self.rng.random() < 0.7:
                    self.ledger.resets_asked.add(alarm["alarm_id"])
                    with contextlib.suppress(control.ControlError):
                        await self.gate.control(
                            {"op": "reset", "alarm_id": alarm["alarm_id"], "by": GUARD}
                        )

    async def bollards(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.8, 2.5))
            bollard = self.gate.bollards[self.rng.choice((1, 2))]
            bollard.operate("lower" if bollard.position in {"up", "rising"} else "raise")
            self.ledger.bollard_moves += 1

    async def sockets(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            i = self.rng.choice((0, 1))
            (
                self.gate.sockets.insert
                if not self.gate.sockets.present(i)
                else self.gate.sockets.pull
            )(i)
            self.ledger.socket_changes += 1

    async def doors(self) -> None:
        doors = self.gate.doors
        next_burst = time.monotonic() + self.rng.uniform(5, 15)
        while True:
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
            swipes = 1
            if time.monotonic() >= next_burst:  # a class arriving at once
                swipes = self.rng.randint(15, 30)
                next_burst = time.monotonic() + self.rng.uniform(10, 20)
            for _ in range(swipes):
                card = 100_000 + len(self.ledger.cards)
                doors.present_card(card, self.rng.choice((1, 2)), granted=self.rng.random() < 0.9)
                self.ledger.cards.append(card)
            roll = self.rng.random()
            if roll < 0.15:
                door = self.rng.choice((1, 2))
                doors.open_door(door)
                doors.close_door(door)
                self.ledger.door_events += 2
            elif roll < 0.18:
                doors.force_door(1)  # alarm lane: the police get it
                doors.close_door(1)
                self.ledger.forced_doors += 1
                self.ledger.door_events += 1

    # -- faults ------------------------------------------------------------------------------

    async def inject(self) -> None:
        kinds = [k for k in FAULT_KINDS if self.settings.disk_full or k != "disk_full"]
        async with asyncio.TaskGroup() as tg:
            bag: list[str] = []
            while True:
                await asyncio.sleep(self.rng.uniform(*self.settings.fault_gap_s))
                if not bag:
                    bag = self.rng.sample(kinds, len(kinds))
                kind = bag.pop()
                if kind in self._busy:
                    bag.insert(0, kind)  # still running: try it again later
                    continue
                self._busy.add(kind)
                tg.create_task(self._fault(kind), name=f"fault:{kind}")

    async def _fault(self, kind: str) -> None:
        start = time.time_ns()
        detail = "cut short by the end of the soak"
        try:
            detail = await self._FAULTS[kind](self)
        finally:
            self._busy.discard(kind)
            self.ledger.faults.append((kind, start, time.time_ns(), detail))
            self.say(f"fault {kind} {detail}")

    async def _broker_restart(self, name: str) -> str:
        broker = self.gate.brokers[name]  # type: ignore[index]
        down_s = self.rng.uniform(0.3, 3.0)
        await broker.stop(graceful=True)
        await asyncio.sleep(down_s)
        await broker.start()
        return f"down {down_s:.1f} s"

    async def _police(self) -> str:
        return await self._broker_restart("police")

    async def _bureau(self) -> str:
        return await self._broker_restart("bureau")

    async def _sigkill(self) -> str:
        async with self._exclusive:
            down_s = self.rng.uniform(0.0, 1.5)
            await self.gate.gateway.kill()
            await asyncio.sleep(down_s)
            await self.gate.gateway.start()
            # Let it come up before anything else may kill it or fill its disk.
            await asyncio.sleep(1.0)
            return f"down {down_s:.1f} s"

    async def _silent(self) -> str:
        name = self.rng.choice(SILENCEABLE)
        devices: dict[str, SimUnit | SimController] = {
            "panic_box": self.gate.panic_box,
            "bollard_1": self.gate.bollards[1],
            "bollard_2": self.gate.bollards[2],
            "lane_sockets": self.gate.sockets,
            "gate_doors": self.gate.doors,
        }
        device = devices[name]
        quiet_s = self.rng.uniform(0.5, 4.0)
        device.silent = True
        try:
            await asyncio.sleep(quiet_s)
        finally:
            device.silent = False
        return f"{name} {quiet_s:.1f} s"

    async def _tcp_restart(self) -> str:
        down_s = self.rng.uniform(0.2, 3.0)
        await self.gate.panic_server.stop()
        await asyncio.sleep(down_s)
        await self.gate.panic_server.start()
        return f"down {down_s:.1f} s"

    async def _garbage(self) -> str:
        bursts = self.rng.randint(2, 6)
        for _ in range(bursts):
            noise = self.rng.randbytes(self.rng.randint(1, 40))
            self.gate.gate_bus.inject_garbage("to_host", noise)
            self.gate.door_link.inject_garbage("to_host", noise)
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
        return f"{bursts} bursts"

    async def _crc(self) -> str:
        frames = self.rng.randint(1, 5)
        for _ in range(frames):
            self.gate.gate_bus.corrupt_next("to_host")
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
        return f"{frames} frames"

    async def _disk_full(self) -> str:
        """Fill the store's tmpfs and keep it full until the gateway has hit it (SQLite reuses
        the space of its WAL for a while, so a short fill may never meet a write), then a little
        longer; free it and hold off a SIGKILL until the memory spill is written back."""
        async with self._exclusive:
            faults_before = self._logged("storage_fault")
            loop = asyncio.get_running_loop()
            try:
                await self.gate.ns.fill()
                filled_at = loop.time()
                while self._logged("storage_fault") == faults_before:
                    if loop.time() - filled_at > 20:
                        return "full 20 s, never hit by a write"
                    await asyncio.sleep(0.1)  # watching a log file: nothing to await
                noticed_s = loop.time() - filled_at
                await asyncio.sleep(self.rng.uniform(1.0, 3.0))
                full_s = loop.time() - filled_at
            finally:
                self.gate.ns.free()
            deadline = loop.time() + 15
            while self._logged("storage_recovered") < self._logged("storage_fault"):
                if loop.time() > deadline:
                    return f"full {full_s:.1f} s, hit after {noticed_s:.1f} s, NOT recovered"
                await asyncio.sleep(0.1)
            return f"full {full_s:.1f} s, hit after {noticed_s:.1f} s, recovered"

    def _logged(self, event: str) -> int:
        """How often the gateway has logged `event` (its JSON log, across restarts)."""
        return self.gate.gateway.log_path.read_text(errors="replace").count(f'"event": "{event}"')

    _FAULTS: ClassVar[dict[str, Callable[[_Soak], Awaitable[str]]]] = {
        "broker_restart:police": _police,
        "broker_restart:bureau": _bureau,
        "gateway_sigkill": _sigkill,
        "device_silent": _silent,
        "alarm_box_tcp_restart": _tcp_restart,
        "serial_garbage": _garbage,
        "crc_errors": _crc,
        "disk_full": _disk_full,
    }

    # -- the end -----------------------------------------------------------------------------

    async def heal(self) -> None:
        """Everything back up: brokers, devices, the alarm box's server, the gateway."""
        self.gate.ns.free()
        for broker in self.gate.brokers.values():
            await broker.start()
        for device in (self.gate.panic_box, self.gate.sockets, self.gate.doors):
            device.silent = False
        for bollard in self.gate.bollards.values():
            bollard.silent = False
        await self.gate.panic_server.start()
        await self.gate.gateway.start()
        await self.gate.wait_gateway_ready()

    async def lamp_seen_on(self) -> bool:
        """Whether the box's lamp lights within 1.5 s: it blinks (1 Hz or 4 Hz) or is steady
        while an alarm is open, and stays off otherwise."""
        for _ in range(30):
            if self.gate.panic_box.coil(0):
                return True
            await asyncio.sleep(0.05)
        return False

    async def drain(self) -> float:
        """Wait until nothing is pending for any destination; returns how long it took."""
        started = time.monotonic()
        await self.gate.doors.wait_drained(timeout_s=self.settings.drain_timeout_s)
        await asyncio.sleep(1.0)  # the last polls and group commits
        deadline = started + self.settings.drain_timeout_s
        while time.monotonic() < deadline:
            if await self.gate.pending() == 0:
                break
            await asyncio.sleep(0.2)
        return time.monotonic() - started


async def run_chaos(settings: ChaosSettings, workdir: Path) -> ChaosReport:
    """Run the soak for `settings.seconds` and return the verified report."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # once, before anything runs
    started = time.monotonic()
    async with chaos_gate(workdir, tmpfs_mb=settings.tmpfs_mb) as gate:
        soak = _Soak(gate, settings)
        soak.say(f"gate ready in {time.monotonic() - started:.1f} s; seed {settings.seed}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.seconds), asyncio.TaskGroup() as tg:
                for job in (soak.presses, soak.resets, soak.bollards, soak.sockets, soak.doors):
                    tg.create_task(job(), name=f"workload:{job.__name__}")
                tg.create_task(soak.inject(), name="faults")
        soak.say("chaos over; healing and draining")
        await soak.heal()
        drain_s = await soak.drain()
        soak.say(f"drained in {drain_s:.1f} s")
        lamp_on = await soak.lamp_seen_on()
        final_counters = gate.panic_box.counters()[:2]
        open_alarms = (await gate.control({"op": "alarms"}))["alarms"]
        await asyncio.sleep(1.0)  # the listeners take the last PUBACKed messages
        await gate.gateway.stop()
        with contextlib.closing(gate.copy_store(workdir / "final")) as db:
            report = verify(
                soak.ledger,
                db,
                gate.listeners,
                final_counters=final_counters,
                lamp_on=lamp_on,
                open_alarm_ids={a["alarm_id"] for a in open_alarms},
                guard=GUARD,
            )
    report.seconds = settings.seconds
    report.wall_s = time.monotonic() - started
    report.drain_s = drain_s
    report.gateway_starts = gate.gateway.starts
    return report
