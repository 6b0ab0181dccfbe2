"""The rising anti-collision bollard: one controller on a Modbus line, its register map taken
from a profile (`edge_config.profile_files`) with the device's overrides (docs/drivers/bollard.md).

Owns the poll loop of one bollard (position, fault code, EFO input, cycle counter), turning
changes into events (`bollard.state`, `bollard.raised`, `bollard.lowered`, `bollard.fault`,
`bollard.fault_cleared`, `bollard.emergency_raise`), watching every movement against
`travel_timeout_ms` (`bollard.stuck`), and the `raise` / `lower` / `emergency_raise` commands,
each confirmed by reading the status back. It does not decide when a bollard should move (school
rules do) and does not own the line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.base import CommandError, DriverContext, DriverError
from drivers.codecs import BIT_LIMIT, REGISTER_LIMIT, decode_words, plan_reads
from drivers.lines.modbus import ModbusLine
from drivers.polling import PolledDriver, read_table
from edge_config.devices_modbus import BollardDevice, CommandRef, Function, Position
from gateway.core.events import Severity

Reading = Position | Literal["unknown"]
_TARGETS: dict[str, Literal["up", "down"]] = {
    "raise": "up",
    "lower": "down",
    "emergency_raise": "up",
}
_IMPLIED: dict[str, Literal["up", "down"]] = {"rising": "up", "lowering": "down"}
_BITS: tuple[Function, ...] = ("coil", "discrete_input")


@dataclass(slots=True)
class _Movement:
    """A travel being watched: commanded, or seen starting (local button, EFO)."""

    target: Literal["up", "down"]
    deadline: float
    """time.monotonic() by which the bollard must be at `target`."""
    command: str | None
    outcome: Literal["reached", "stuck"] | None = field(default=None)


_Emit = tuple[str, Severity, dict[str, Any]]


class Bollard(PolledDriver[BollardDevice, ModbusLine]):
    kind = "bollard"

    def __init__(self, config: BollardDevice, line: ModbusLine, ctx: DriverContext) -> None:
        super().__init__(config, line, ctx)
        self._map = config.register_map()
        self._changed = ctx.changed
        self._plan = self._read_plan()
        self.position: Reading | None = None
        self.fault_code: int | None = None
        self.cycles: int | None = None
        self._efo = False
        self._movement: _Movement | None = None
        self._handled: list[list[int]] | None = None
        """The words last read and handled in full: the same again, with no movement being
        watched, changes nothing (a movement has a deadline, so it is always looked at)."""
        self._polling = asyncio.Lock()
        """The poll loop and a command's confirmation both poll: one reading at a time, so an
        older reading is never taken after a newer one."""

    def _read_plan(self) -> list[tuple[Function, int, int]]:
        spans: dict[Function, list[tuple[int, int]]] = {}
        m = self._map
        for ref, count in (
            (m.position, 1),
            (m.fault_code, 1),
            (
                m.cycle_counter,
                2 if m.cycle_counter and m.cycle_counter.data_type == "uint32" else 1,
            ),
            (m.efo_input, 1),
        ):
            if ref is not None:
                spans.setdefault(ref.table, []).append((ref.address, count))
        return [
            (table, start, count)
            for table, wanted in spans.items()
            for start, count in plan_reads(
                wanted, max_count=BIT_LIMIT if table in _BITS else REGISTER_LIMIT
            )
        ]

    # -- Driver ------------------------------------------------------------------------------

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        """`raise`, `lower`, `emergency_raise` (no arguments): write the command, then read the
        position back until it is reached. CommandError (and `bollard.stuck`) if it is not
        within travel_timeout_ms; DriverError if the device stopped answering meanwhile."""
        if name not in _TARGETS:
            raise CommandError(f"bollard has no command {name!r} (raise, lower, emergency_raise)")
        if args:
            raise CommandError(f"{name} takes no arguments, got {sorted(args)}")
        ref: CommandRef | None = getattr(self._map, f"{name}_command")
        if ref is None:
            raise CommandError(f"profile {self._cfg.profile!r} has no {name}_command register")
        timeout_s = self._cfg.travel_timeout_ms / 1000
        movement = _Movement(_TARGETS[name], time.monotonic() + timeout_s, name)
        self._movement = movement  # before the write: the poll loop must not see a local move
        try:
            await self._write(ref)
        except DriverError:
            if self._movement is movement:
                self._movement = None
            raise
        self._log.info("bollard_command", command=name)
        if name == "emergency_raise":
            await self._health.emit("bollard.emergency_raise", Severity.CRITICAL, source="command")
        return await self._confirm(movement)

    async def _confirm(self, movement: _Movement) -> dict[str, object]:
        interval_s = self._cfg.poll_interval_ms / 1000
        while True:
            error: DriverError | None = None
            try:
                await self.poll_once()  # the whole status, so the result carries the new count
            except DriverError as exc:
                error = exc  # one lost answer on a busy bus is no reason to give up yet
            if movement.outcome == "reached":
                return {"position": movement.target, **self._counter()}
            if movement.outcome == "stuck":
                raise CommandError(
                    f"{movement.command}: bollard is {self.position}, not {movement.target}, "
                    f"after {self._cfg.travel_timeout_ms} ms"
                )
            if self._movement is not movement:
                raise CommandError(f"{movement.command}: interrupted by a later command")
            left_s = movement.deadline - time.monotonic()
            if left_s <= 0 and error is not None:
                if self._movement is movement:
                    self._movement = None
                raise error
            # The device is polled, it has no way to tell us when it arrives.
            await asyncio.sleep(max(0.0, min(interval_s, left_s)))

    async def _write(self, ref: CommandRef) -> None:
        if ref.table == "coil":
            await self._line.write_coil(self._cfg.unit_id, ref.address, bool(ref.value))
        else:
            await self._line.write_register(self._cfg.unit_id, ref.address, ref.value)

    # -- one poll ----------------------------------------------------------------------------

    async def poll_once(self) -> None:
        async with self._polling:
            await self._poll()

    async def _poll(self) -> None:
        reads = [
            await read_table(self._line, self._cfg.unit_id, table, start, count)
            for table, start, count in self._plan
        ]
        await self._health.answered()
        if self._movement is None and reads == self._handled:
            return
        self._handled = None  # until this reading is handled in full
        values: dict[tuple[Function, int], int] = {}
        for (table, start, _count), words in zip(self._plan, reads, strict=True):
            values.update({(table, start + i): v for i, v in enumerate(words)})
        m = self._map
        assert m.position is not None
        raw = values[(m.position.table, m.position.address)]
        if (counter := m.cycle_counter) is not None:
            words = [values[(counter.table, counter.address)]]
            if counter.data_type == "uint32":
                words.append(values[(counter.table, counter.address + 1)])
            self.cycles = int(decode_words(words, counter.data_type, word_order=counter.word_order))
        emits: list[_Emit] = []
        position = m.position.decode(raw) or "unknown"
        if position == "unknown" and self.position != "unknown":
            self._log.warning("bollard_position_unknown", raw=raw)
        emits += self._observe_position(position, time.monotonic(), raw=raw)
        if m.fault_code is not None:
            emits += self._observe_fault(values[(m.fault_code.table, m.fault_code.address)])
        if m.efo_input is not None:
            efo = bool(values[(m.efo_input.table, m.efo_input.address)])
            if efo and not self._efo:
                emits.append(("bollard.emergency_raise", Severity.CRITICAL, {"source": "input"}))
            self._efo = efo
        await self._emit_all(emits)
        self._handled = reads

    def _observe_position(
        self, position: Reading, now: float, raw: int | None = None
    ) -> list[_Emit]:
        """Take a position reading; returns the events it causes. No await inside, so two
        readers (poll loop and a command) never interleave half an update."""
        emits: list[_Emit] = []
        previous, self.position = self.position, position
        if position != previous:
            self._changed()
            data: dict[str, Any] = {"position": position, "previous": previous, **self._counter()}
            if position == "unknown":
                data["raw"] = raw
            emits.append(("bollard.state", Severity.INFO, data))
            if previous is not None and position in ("up", "down"):
                kind = "bollard.raised" if position == "up" else "bollard.lowered"
                emits.append((kind, Severity.INFO, {"previous": previous, **self._counter()}))
            implied = _IMPLIED.get(position)
            if implied is not None and (self._movement is None or self._movement.target != implied):
                # Moving without our command (local button, EFO, another master): watch it too.
                timeout_s = self._cfg.travel_timeout_ms / 1000
                self._movement = _Movement(implied, now + timeout_s, None)
        watched = self._movement
        if watched is not None:
            if position == watched.target:
                watched.outcome, self._movement = "reached", None
            elif now >= watched.deadline:
                watched.outcome, self._movement = "stuck", None
                self._log.warning("bollard_stuck", target=watched.target, position=position)
                emits.append(
                    (
                        "bollard.stuck",
                        Severity.MAJOR,
                        {
                            "target": watched.target,
                            "position": position,
                            "command": watched.command,
                            "travel_timeout_ms": self._cfg.travel_timeout_ms,
                        },
                    )
                )
        return emits

    def _observe_fault(self, code: int) -> list[_Emit]:
        previous, self.fault_code = self.fault_code, code
        if code == previous or (previous is None and code == 0):
            return []
        if code != 0:
            return [("bollard.fault", Severity.MAJOR, {"code": code, "previous_code": previous})]
        return [("bollard.fault_cleared", Severity.INFO, {"previous_code": previous})]

    def _counter(self) -> dict[str, Any]:
        return {} if self._map.cycle_counter is None else {"cycles": self.cycles}

    async def _emit_all(self, emits: list[_Emit]) -> None:
        for event_type, severity, data in emits:
            await self._health.emit(event_type, severity, **data)
