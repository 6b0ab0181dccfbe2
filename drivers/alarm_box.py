"""The one-key alarm box: a Modbus DI/DO module with panic buttons, a reset input, a lamp and a
siren (docs/drivers/alarm_box.md has the register map).

Owns one poll of a box: reading the button contacts (and the module's press counters where it
has them, so a press shorter than the poll interval, or made while the gateway was down, is still
seen), debouncing, reporting presses and the reset input to the `PanicSink`, and driving the lamp,
siren and fault-lamp coils: steady, off, or blinking (`OutputPattern`), blinking done by the poll
loop itself. The loop, pacing and `device.offline` / `device.online` are `drivers.polling`'s,
shared with the other polled devices. It does not latch alarms or decide what the lamp shows
(`gateway.alarms.latch` does) and does not own the line (`drivers.lines.modbus.ModbusLine` does).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.base import CommandError, DriverContext, PanicPress
from drivers.codecs import counter_delta, span
from drivers.lines.arbiter import PRIORITY_ALARM
from drivers.lines.modbus import ModbusLine
from drivers.polling import PolledDriver
from edge_config.models import AlarmBoxDevice

_COUNTER_RESET_LIMIT = 1000
"""More presses than this between two looks means the module's counter was reset."""


class OutputPattern(enum.StrEnum):
    """What an output shows. The guard's lamp: `fast` = alarm stored, not yet at the police;
    `slow` = at the police, waiting for an acknowledgement; `steady` = acknowledged."""

    OFF = "off"
    STEADY = "steady"
    FAST = "fast"
    """4 Hz: on and off 125 ms each."""
    SLOW = "slow"
    """1 Hz: on and off 500 ms each."""


_HALF_PERIOD_MS = {OutputPattern.FAST: 125, OutputPattern.SLOW: 500}


@dataclass(slots=True)
class _Blink:
    """A blinking coil: toggled by the poll loop once `next_toggle_ms` has passed."""

    half_period_ms: int
    lit: bool
    next_toggle_ms: int

    def step(self, now_ms: int) -> bool:
        """Advance to `now_ms`; True when the coil must be written (it toggled)."""
        if now_ms < self.next_toggle_ms <= now_ms + self.half_period_ms:
            return False
        # Toggle once, however late: a poll slower than the blink toggles on every poll (a
        # slower blink, never a stuck one); a clock stepped back restarts the half period.
        self.lit = not self.lit
        self.next_toggle_ms += self.half_period_ms
        if not now_ms < self.next_toggle_ms <= now_ms + self.half_period_ms:
            self.next_toggle_ms = now_ms + self.half_period_ms
        return True


class AlarmBox(PolledDriver[AlarmBoxDevice, ModbusLine]):
    kind = "alarm_box"
    line_priority = PRIORITY_ALARM
    """On a shared line, a waiting alarm-box request goes before other devices' polls."""

    def __init__(self, config: AlarmBoxDevice, line: ModbusLine, ctx: DriverContext) -> None:
        super().__init__(config, line, ctx)
        self._buttons = [b.input for b in config.buttons]
        self._inputs = [*self._buttons] + (
            [config.reset_input] if config.reset_input is not None else []
        )
        self._di_start, self._di_count = span(self._inputs)
        counters = [b.press_counter_register for b in config.buttons]
        self._counter_regs = {
            b.input: b.press_counter_register
            for b in config.buttons
            if b.press_counter_register is not None
        }
        self._ir_span = span(c for c in counters if c is not None) if self._counter_regs else None
        self._outputs = {
            "lamp": config.lamp_coil,
            "siren": config.siren_coil,
            "fault": config.fault_coil,
        }
        self._patterns: dict[int, OutputPattern] = {}
        self._blinks: dict[int, _Blink] = {}
        self._wanted: dict[int, bool] = {}
        self._applied: dict[int, bool] = {}
        self._previous: dict[int, bool] | None = None
        self._handled: tuple[list[int], list[int] | None] | None = None
        """The inputs and counters last handled in full: a poll that reads the same again has
        nothing to report (no edge, no new count), so it skips straight to the outputs."""
        self._counters: dict[int, int] = {}
        self._remembered: dict[int, int] = {}
        """The counter values in the store, so an unchanged one is not written again."""
        self._lockout_until_ms: dict[int, int] = {}
        self._writing = asyncio.Lock()
        """One writer of the outputs at a time (the poll loop, an installer's command): each
        sees what the other has written before it compares."""

    # -- Driver ------------------------------------------------------------------------------

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        """`lamp` / `siren` / `fault` with `on`: drive an output by hand (installer test of the
        wiring). Steady or off: it replaces any blinking until the latch next changes the lamp."""
        if name not in self._outputs:
            raise CommandError(f"alarm_box has no command {name!r} (lamp, siren, fault)")
        on = args.get("on")
        if not isinstance(on, bool):
            raise CommandError(f"{name} needs a boolean 'on'")
        if self._outputs[name] is None:
            raise CommandError(f"this box has no {name} wired (set {name}_coil)")
        await self.set_output(name, on)
        await self._apply_outputs()  # a person is waiting for the answer: write it now
        return {name: on}

    async def set_output(self, name: str, on: bool) -> None:
        """Ask for an output steady on or off; the poll loop writes it after its next read."""
        await self.set_pattern(name, OutputPattern.STEADY if on else OutputPattern.OFF)

    async def set_pattern(self, name: str, pattern: OutputPattern) -> bool:
        """Ask for an output to show `pattern`; False when this box has no such output wired.

        Never waits on the line: the latch calls this from inside a poll, and the next read must
        not be delayed. The poll loop writes the coil after its next read and toggles a blinking
        one there, so a blink costs one coil write per half period (8 writes/s fast, 2 slow), at
        most one per poll; a poll slower than the half period blinks slower. Asking again for the
        pattern already shown changes nothing (the blink keeps its phase); a new blinking pattern
        starts lit, so the guard sees an alarm at the next poll."""
        coil = self._outputs.get(name)
        if coil is None:
            return False
        if self._patterns.get(coil) == pattern:
            return True
        self._patterns[coil] = pattern
        half_period_ms = _HALF_PERIOD_MS.get(pattern)
        if half_period_ms is None:
            self._blinks.pop(coil, None)
            self._wanted[coil] = pattern == OutputPattern.STEADY
        else:
            next_toggle_ms = self._ctx.clock_ms() + half_period_ms
            self._blinks[coil] = _Blink(half_period_ms, True, next_toggle_ms)
            self._wanted[coil] = True
        return True

    def pattern(self, name: str) -> OutputPattern:
        """What `name` is asked to show (`off` for an output never set or not wired)."""
        coil = self._outputs.get(name)
        return OutputPattern.OFF if coil is None else self._patterns.get(coil, OutputPattern.OFF)

    # -- one poll ----------------------------------------------------------------------------

    async def poll_once(self) -> None:
        unit = self._cfg.unit_id
        bits = await self._line.read(
            "discrete_input", unit, self._di_start, self._di_count, priority=self.line_priority
        )
        now_ms = self._ctx.clock_ms()
        counters: list[int] | None = None
        if self._ir_span is not None:
            counters = await self._line.read(
                "input_register", unit, *self._ir_span, priority=self.line_priority
            )
        if self._health.online is False:
            self._applied.clear()  # the module may have lost its outputs; assert them again
        await self._health.answered()
        if self._handled != (bits, counters):
            self._handled = None  # until this reading is handled in full
            start = self._di_start
            state = {addr: bool(bits[addr - start]) for addr in self._inputs}
            await self._handle(state, counters, now_ms)
            self._handled = (bits, counters)
        self._step_blinks(self._ctx.clock_ms())
        if self._wanted != self._applied:
            await self._apply_outputs()

    def _step_blinks(self, now_ms: int) -> None:
        for coil, blink in self._blinks.items():
            if blink.step(now_ms):
                self._wanted[coil] = blink.lit

    async def _handle(
        self, state: dict[int, bool], counters: list[int] | None, now_ms: int
    ) -> None:
        first = self._previous is None
        previous = self._previous or {addr: False for addr in state}
        for button in self._buttons:
            presses = 0
            register = self._counter_regs.get(button)
            if register is not None and counters is not None and self._ir_span is not None:
                value = counters[register - self._ir_span[0]]
                presses = await self._counted_presses(button, value, first=first)
            elif (
                state[button]
                and not previous[button]
                and now_ms >= self._lockout_until_ms.get(button, 0)
            ):
                presses = 1
            if first and state[button] and presses == 0:
                await self._ctx.panic.panic_pressed(
                    PanicPress(
                        self._ctx.device.id,
                        button,
                        presses=1,
                        occurred_at_ms=now_ms,
                        held_at_start=True,
                    )
                )
            elif presses:
                self._lockout_until_ms[button] = now_ms + self._cfg.debounce_ms
                await self._ctx.panic.panic_pressed(
                    PanicPress(self._ctx.device.id, button, presses=presses, occurred_at_ms=now_ms)
                )
            if register is not None:
                await self._remember_counter(button)
        reset = self._cfg.reset_input
        if reset is not None and state[reset] and not previous[reset] and not first:
            await self._ctx.panic.reset_pressed(self._ctx.device.id, occurred_at_ms=now_ms)
        self._previous = state

    async def _counted_presses(self, button: int, value: int, *, first: bool) -> int:
        """Presses the module counted since we last looked. At start the last value seen before
        the restart is the baseline, so a press made while the gateway was down (or before its
        first poll) still raises its alarm."""
        known = self._counters.get(button)
        memory = self._ctx.memory
        if known is None and first and memory is not None:
            known = await memory.recall(f"counter:{button}")
            if known is not None:
                self._remembered[button] = known
        presses = 0
        if known is not None:
            presses = counter_delta(known, value)
            if presses > _COUNTER_RESET_LIMIT:
                # Not thousands of presses: the module restarted and its counter began again.
                self._log.warning("press_counter_restarted", button=button, was=known, now=value)
                presses = value
            if presses and first:
                self._log.warning(
                    "presses_counted_while_not_polled", button=button, presses=presses
                )
        self._counters[button] = value
        return presses

    async def _remember_counter(self, button: int) -> None:
        # Only after the press's alarm is stored: a crash in between would otherwise restart
        # from the new value as the baseline, and the press would be lost.
        memory, value = self._ctx.memory, self._counters.get(button)
        if memory is not None and value is not None and value != self._remembered.get(button):
            await memory.remember(f"counter:{button}", value)
            self._remembered[button] = value

    async def _apply_outputs(self) -> None:
        async with self._writing:
            for coil, on in list(self._wanted.items()):
                if self._applied.get(coil) != on:
                    await self._line.write_coil(
                        self._cfg.unit_id, coil, on, priority=self.line_priority
                    )
                    self._applied[coil] = on
