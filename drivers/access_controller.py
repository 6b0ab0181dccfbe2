"""The access controller driver: one door controller on a serial bus, spoken to in the protocol of
`drivers.access_codec` (docs/drivers/access_controller.md lists its events and commands).

Owns the poll loop of one controller: asking for its next event, acknowledging it by event seq
(piggybacked on the next poll), dropping a resent event already taken, turning controller events
into gateway events, configuring the controller and keeping its clock within `max_clock_skew_ms`
after each (re)contact and every `clock_check_interval_s`, and the controller's commands. The
poll cadence and its `device.offline` / `device.online` events are the shared ones
(`drivers.polling`). It does not own the port (`drivers.lines.serial` does) nor the byte layout
of frames (`drivers.access_codec` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drivers import access_codec as wire
from drivers.access_codec import Code, ControllerEvent, EventCode, Frame
from drivers.base import (
    CommandError,
    DeviceProtocolError,
    DeviceTimeout,
    DriverContext,
)
from drivers.lines.serial import SerialLine
from drivers.polling import PolledDriver
from edge_config.devices_access import AccessControllerDevice
from gateway.core.events import Severity, new_event

_EVENT_TYPES: dict[EventCode, tuple[str, Severity]] = {
    EventCode.CARD: ("access.card", Severity.INFO),
    EventCode.DOOR_OPENED: ("access.door_opened", Severity.INFO),
    EventCode.DOOR_CLOSED: ("access.door_closed", Severity.INFO),
    EventCode.DOOR_FORCED: ("access.door_forced", Severity.CRITICAL),
    EventCode.DOOR_HELD: ("access.door_held_open", Severity.MINOR),
    EventCode.EXIT_BUTTON: ("access.exit_button", Severity.INFO),
    EventCode.TAMPER: ("access.tamper", Severity.MAJOR),
}


@dataclass(slots=True)
class ProtocolCounters:
    """What went wrong on the wire with this controller's answers, summed over transactions."""

    crc_errors: int = 0
    framing_errors: int = 0
    garbage_bytes: int = 0
    stray_frames: int = 0
    """Valid frames that were not the awaited answer (late answers, other addresses)."""
    duplicates: int = 0
    """Events the controller sent again because our acknowledgement did not reach it."""


_DOOR_STATES: dict[EventCode, str] = {
    EventCode.DOOR_OPENED: "open",
    EventCode.DOOR_CLOSED: "closed",
    EventCode.DOOR_FORCED: "forced",
    EventCode.DOOR_HELD: "held_open",
}


class AccessController(PolledDriver[AccessControllerDevice, SerialLine]):
    kind = "access_controller"

    def __init__(
        self, config: AccessControllerDevice, line: SerialLine, ctx: DriverContext
    ) -> None:
        super().__init__(config, line, ctx, on_offline=self._went_offline)
        self._seq = 0
        self._ack = 0
        """The last event taken (stored durably); sent with every poll until the next one."""
        self._skew_ms = 0
        """Controller clock minus ours, as last measured; event times are corrected by it."""
        self._skew_measured = False
        self._clock_uncorrectable = False
        """A refused correction has been reported and no correction has succeeded since."""
        self.door_states: dict[int, tuple[str, int]] = {}
        """Each door's last reported state (`closed`, `open`, `held_open`, `forced`) and the
        event's time (ms); a door the controller has not reported on is absent."""
        self._greeted = False
        """Configured and clock-checked since the last (re)contact."""
        self._next_clock_check = 0.0
        self.counters = ProtocolCounters()
        self.events_taken = 0

    @property
    def clock_offset_ms(self) -> int | None:
        """The controller's clock minus ours as last measured; None until first read."""
        return self._skew_ms if self._skew_measured else None

    # -- Driver ------------------------------------------------------------------------------

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        """`unlock` (door, optional open_s), `lockdown`, `release_lockdown`, `read_clock`,
        `set_clock` (optional time_ms; default: the gateway's clock)."""
        if name == "unlock":
            door = self._door_arg(args)
            open_s = _int_arg(args, "open_s", 0, 0, 255)
            await self._command(Code.UNLOCK, wire.encode_unlock(door, open_s))
            return {"door": door, "door_name": self._cfg.doors[door], "unlocked": True}
        if name in ("lockdown", "release_lockdown"):
            code = Code.LOCKDOWN if name == "lockdown" else Code.RELEASE_LOCKDOWN
            await self._command(code, b"")
            # The controller cannot be asked later: its confirmed answer is the record.
            await self._health.emit("access.lockdown", Severity.INFO, lockdown=name == "lockdown")
            return {"lockdown": name == "lockdown"}
        if name == "read_clock":
            controller_ms = await self._read_clock()
            return {"controller_time_ms": controller_ms, "skew_ms": self._skew_ms}
        if name == "set_clock":
            time_ms = args.get("time_ms")
            if time_ms is not None and (isinstance(time_ms, bool) or not isinstance(time_ms, int)):
                raise CommandError("set_clock takes an integer time_ms (Unix ms), or none for now")
            sent_ms = await self._set_clock(time_ms)
            return {"time_ms": sent_ms}
        raise CommandError(
            f"access_controller has no command {name!r} "
            "(unlock, lockdown, release_lockdown, read_clock, set_clock)"
        )

    # -- polling -----------------------------------------------------------------------------

    async def _poll_turn(self) -> bool:
        """One turn of the poll loop: configure and clock-check the controller after (re)contact
        or when the check is due, then poll. True if an event came: a burst of buffered events
        is drained without waiting a poll interval each."""
        if not self._greeted:
            await self._greet()
        elif time.monotonic() >= self._next_clock_check:
            await self.check_clock()
        return await self.poll_once()

    async def poll_once(self) -> bool:
        """Ask for the next event, acknowledging the last one; True if an event came."""
        answer = await self._request(Code.POLL, wire.encode_poll(self._ack))
        await self._health.answered()
        if answer.code == Code.NO_EVENT:
            return False
        if answer.code != Code.EVENT:
            raise DeviceProtocolError(f"answer 0x{answer.code:02x} to a POLL")
        try:
            event = wire.decode_event(answer.payload)
        except wire.FrameError as exc:
            raise DeviceProtocolError(f"bad EVENT: {exc}") from exc
        if event.seq == self._ack:
            self.counters.duplicates += 1  # our ack was lost; the next poll carries it again
            return True
        await self._take(event)
        self._ack = event.seq  # only once stored: a crash before this means a resend, not a loss
        return True

    async def _take(self, event: ControllerEvent) -> None:
        event_type, severity = _EVENT_TYPES[event.code]
        data: dict[str, object] = {"controller_seq": event.seq}
        if event.door is not None:
            data |= {"door": event.door, "door_name": self._cfg.doors.get(event.door, "")}
        if event.code is EventCode.CARD:
            data |= {
                "card": event.card,
                "reader": event.reader,
                "reader_name": self._cfg.readers.get(event.reader or 0, ""),
                "granted": event.granted,
            }
            if not event.granted:
                severity = Severity.MINOR
                data["reason"] = (event.reason or wire.DenyReason.OTHER).name.lower()
        elif event.code is EventCode.DOOR_HELD:
            data |= {"held_s": event.held_s}
        elif event.code is EventCode.TAMPER:
            data |= {"active": event.active}
            if not event.active:
                severity = Severity.INFO  # the tamper switch closed again
        self.events_taken += 1
        door_state = _DOOR_STATES.get(event.code)
        if door_state is not None and event.door is not None:
            self.door_states[event.door] = (door_state, event.time_ms - self._skew_beyond_bound())
            self._ctx.changed()
        # Durably, not through the group commit: the next poll acknowledges the event, and the
        # controller then forgets it; a crash within the batch delay would lose it for good.
        store = self._ctx.store or self._ctx.emit
        await store(
            new_event(
                event_type,
                self._ctx.device,
                severity=severity,
                occurred_at_ms=event.time_ms - self._skew_beyond_bound(),
                data=data,
                drill=self._ctx.drill,
            )
        )

    # -- configuration and clock -------------------------------------------------------------

    async def _greet(self) -> None:
        """After (re)contact: the controller may have restarted with defaults and a wrong clock.

        A step the controller refuses is logged and skipped: events matter more than settings,
        so a firmware without CONFIGURE must not keep the driver from polling."""
        configure = wire.encode_configure(self._cfg.held_open_alarm_s)
        try:
            await self._command(Code.CONFIGURE, configure)
        except CommandError as exc:
            self._log.warning("controller_not_configured", error=str(exc))
        await self.check_clock()
        self._greeted = True

    async def check_clock(self) -> None:
        """Measure the controller's skew; set its clock when it is beyond `max_clock_skew_ms`.
        A refusal is logged; the next check is due an interval later either way."""
        self._next_clock_check = time.monotonic() + self._cfg.clock_check_interval_s
        try:
            await self._correct_clock()
        except CommandError as exc:
            self._log.warning("controller_clock_not_checked", error=str(exc))

    async def _correct_clock(self) -> None:
        await self._read_clock()
        skew_ms = self._skew_ms
        if abs(skew_ms) <= self._cfg.max_clock_skew_ms:
            return
        bound: dict[str, object] = {
            "skew_ms": skew_ms,
            "max_clock_skew_ms": self._cfg.max_clock_skew_ms,
        }
        try:
            await self._set_clock(None)
        except CommandError as exc:
            self._log.warning("controller_clock_not_correctable", skew_ms=skew_ms, error=str(exc))
            # Once per spell: the fault ledger keeps the entry open until a correction succeeds.
            if not self._clock_uncorrectable:
                self._clock_uncorrectable = True
                await self._health.emit(
                    "access.clock_not_correctable", Severity.MAJOR, **bound, error=str(exc)
                )
            return
        self._clock_uncorrectable = False
        self._log.warning("controller_clock_corrected", skew_ms=skew_ms)
        await self._health.emit("access.clock_corrected", Severity.MINOR, **bound)

    def _skew_beyond_bound(self) -> int:
        # Within the bound the controller's clock is trusted: our skew estimate is no better
        # than a few milliseconds of round trip. Beyond it, events are placed on our clock.
        return self._skew_ms if abs(self._skew_ms) > self._cfg.max_clock_skew_ms else 0

    async def _read_clock(self) -> int:
        before_ms = self._ctx.clock_ms()
        answer = await self._command(Code.READ_CLOCK, b"", expect=Code.CLOCK)
        after_ms = self._ctx.clock_ms()
        try:
            controller_ms = wire.decode_time(answer.payload)
        except wire.FrameError as exc:
            raise CommandError(f"controller answered READ_CLOCK badly: {exc}") from exc
        # The controller read its clock somewhere in the round trip; the middle is the best guess.
        self._skew_ms = controller_ms - (before_ms + after_ms) // 2
        self._skew_measured = True
        self._ctx.changed()
        return controller_ms

    async def _set_clock(self, time_ms: int | None) -> int:
        sent: list[int] = []

        def payload() -> bytes:
            sent.append(time_ms if time_ms is not None else self._ctx.clock_ms())
            return wire.encode_time(sent[-1])

        await self._command(Code.SET_CLOCK, payload)
        if time_ms is None:
            self._skew_ms = 0
        return sent[-1]

    # -- requests ----------------------------------------------------------------------------

    async def _command(
        self, code: Code, payload: bytes | Callable[[], bytes], *, expect: Code = Code.OK
    ) -> Frame:
        """A request whose answer is OK (or `expect`); tried `command_attempts` times with one
        seq, so a controller that did it but whose answer was lost only answers again."""
        seq = self._next_seq()
        for attempt in range(1, self._cfg.command_attempts + 1):
            try:
                answer = await self._request(code, payload, seq=seq)
                break
            except (DeviceTimeout, DeviceProtocolError):
                if attempt == self._cfg.command_attempts:
                    raise
        if answer.code == Code.ERROR:
            try:
                reason = wire.ErrorCode(wire.decode_error(answer.payload)).name.lower()
            except ValueError:
                reason = f"error 0x{answer.payload[:1].hex()}"
            raise CommandError(f"controller refused {code.name.lower()}: {reason}")
        if answer.code != expect:
            # A valid frame with the wrong answer: a firmware difference, not line noise, so it
            # is not worth retrying (and must not stall the greeting forever).
            raise CommandError(f"controller answered 0x{answer.code:02x} to {code.name}")
        return answer

    async def _request(
        self, code: Code, payload: bytes | Callable[[], bytes], *, seq: int | None = None
    ) -> Frame:
        address = self._cfg.address
        seq = self._next_seq() if seq is None else seq

        def request() -> bytes:
            body = payload() if callable(payload) else payload
            return wire.encode_frame(Frame(address, seq, code, body))

        reader = wire.AnswerTo(address, seq)
        try:
            return await self._line.transact(request, reader, unit=address)
        finally:
            stats = reader.parser.stats
            self.counters.crc_errors += stats.crc_errors
            self.counters.framing_errors += stats.errors - stats.crc_errors
            self.counters.garbage_bytes += stats.garbage_bytes
            self.counters.stray_frames += reader.stray_frames

    def _next_seq(self) -> int:
        self._seq = wire.next_seq(self._seq)
        return self._seq

    def _door_arg(self, args: Mapping[str, object]) -> int:
        door = _int_arg(args, "door", None, 1, 255)
        if door not in self._cfg.doors:
            raise CommandError(f"no door {door} (doors: {sorted(self._cfg.doors)})")
        return door

    # -- health ------------------------------------------------------------------------------

    async def _went_offline(self) -> None:
        # It may come back restarted: configure it and check its clock on the next contact.
        # Unlike a Modbus driver we keep the port open: other controllers on this bus still
        # answer through it, and a serial port cannot be half-open like a TCP connection.
        self._greeted = False


def _int_arg(args: Mapping[str, object], key: str, default: int | None, low: int, high: int) -> int:
    value = args.get(key, default)
    if value is None:
        raise CommandError(f"missing argument {key}")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(f"{key} must be an integer in {low}..{high}")
    return value
