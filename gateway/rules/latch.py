"""Panic-alarm latching (GB 50394-2007 5.2.2-5.2.3): a panic alarm stays active until a person
resets it, and a press while latched is recorded, not lost.

Owns the set of open (latched) alarms and the events that open, repeat and reset them, and keeps
each box's feedback lamp (and siren, where configured) in step. The latch state is not a table of
its own: it is derived from the stored events (an `alarm.panic` with no `alarm.reset` for its
`alarm_id`), so the event and the latch can never disagree, and a restart restores every latch.
It does not poll devices (drivers do) and does not send anything (the outbox and uplinks do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from drivers.base import DriverError
from gateway.events import DeviceRef, Event, Severity, new_event_id
from gateway.outbox import Outbox

log = structlog.get_logger(__name__)


class UnknownAlarm(Exception):
    """No open alarm has that id."""


@dataclass(frozen=True, slots=True)
class BoxInfo:
    device: DeviceRef
    button_names: Mapping[int, str]
    drill: bool = False


@dataclass(slots=True)
class Latch:
    alarm_id: str
    device_id: str
    button: int
    raised_at_ms: int
    presses: int


FeedbackSetter = Callable[[str, bool], Awaitable[None]]
"""`(output_name, on)`: drives an alarm box's `lamp` or `siren`."""


class AlarmLatches:
    def __init__(self, outbox: Outbox, boxes: Mapping[str, BoxInfo]) -> None:
        self._outbox = outbox
        self._boxes = boxes
        self._open: dict[str, Latch] = {}
        self._feedback: dict[str, FeedbackSetter] = {}

    def attach_feedback(self, device_id: str, setter: FeedbackSetter) -> None:
        self._feedback[device_id] = setter

    @property
    def open_alarms(self) -> list[Latch]:
        return list(self._open.values())

    async def restore(self) -> None:
        """Re-open every latch that was open before a restart and relight its lamp."""
        for alarm in await self._outbox.open_alarms():
            self._open[alarm.alarm_id] = Latch(
                alarm.alarm_id, alarm.device_id, alarm.button, alarm.raised_at_ms, alarm.presses
            )
        for device_id in {latch.device_id for latch in self._open.values()}:
            await self._show(device_id)
        if self._open:
            log.warning("alarms_still_latched", count=len(self._open))

    # -- PanicSink ----------------------------------------------------------------------------

    async def panic_pressed(
        self,
        device_id: str,
        button: int,
        *,
        presses: int,
        occurred_at_ms: int,
        held_at_start: bool = False,
    ) -> None:
        box = self._boxes[device_id]
        latch = self._latch_for(device_id, button)
        if held_at_start and latch is not None:
            return  # the contact is still closed from the alarm restored at start-up
        data: dict[str, object] = {
            "button": button,
            "button_name": box.button_names.get(button, ""),
        }
        if latch is None:
            alarm_id = new_event_id()
            latch = Latch(alarm_id, device_id, button, occurred_at_ms, presses)
            event_type = "alarm.panic"
            event_id = alarm_id  # the alarm is known by its first event's id
        else:
            latch.presses += presses
            event_type = "alarm.panic_repeated"
            event_id = new_event_id()
        data["presses"] = latch.presses
        event = Event(
            id=event_id,
            type=event_type,
            severity=Severity.CRITICAL,
            device=box.device,
            occurred_at_ms=occurred_at_ms,
            data=data,
            drill=box.drill,
            alarm_id=latch.alarm_id,
        )
        # Durable before anything else happens: the latch exists once the event is on disk.
        stored = await self._outbox.append(event)
        self._open[latch.alarm_id] = latch
        log.warning(
            "alarm_latched" if event_type == "alarm.panic" else "alarm_pressed_again",
            alarm_id=latch.alarm_id,
            device=device_id,
            button=button,
            seq=stored.seq,
            presses=latch.presses,
        )
        await self._show(device_id)

    async def reset_pressed(self, device_id: str, *, occurred_at_ms: int) -> None:
        for latch in [lt for lt in self._open.values() if lt.device_id == device_id]:
            await self._reset(latch, by="reset input", occurred_at_ms=occurred_at_ms)

    # -- the gateway side ---------------------------------------------------------------------

    async def reset(self, alarm_id: str, *, by: str, occurred_at_ms: int) -> None:
        latch = self._open.get(alarm_id)
        if latch is None:
            raise UnknownAlarm(alarm_id)
        await self._reset(latch, by=by, occurred_at_ms=occurred_at_ms)

    async def _reset(self, latch: Latch, *, by: str, occurred_at_ms: int) -> None:
        box = self._boxes[latch.device_id]
        event = Event(
            id=new_event_id(),
            type="alarm.reset",
            severity=Severity.INFO,
            device=box.device,
            occurred_at_ms=occurred_at_ms,
            data={"button": latch.button, "reset_by": by, "presses": latch.presses},
            drill=box.drill,
            alarm_id=latch.alarm_id,
        )
        await self._outbox.append(event)
        self._open.pop(latch.alarm_id, None)
        log.info("alarm_reset", alarm_id=latch.alarm_id, device=latch.device_id, by=by)
        await self._show(latch.device_id)

    def _latch_for(self, device_id: str, button: int) -> Latch | None:
        for latch in self._open.values():
            if latch.device_id == device_id and latch.button == button:
                return latch
        return None

    async def _show(self, device_id: str) -> None:
        setter = self._feedback.get(device_id)
        if setter is None:
            return
        latched = any(latch.device_id == device_id for latch in self._open.values())
        for output in ("lamp", "siren"):
            try:
                await setter(output, latched)
            except DriverError as exc:
                # The alarm is already stored and queued; a lamp that cannot be lit is logged,
                # and the driver re-applies its wanted outputs on its next good poll.
                log.error("feedback_failed", device=device_id, output=output, error=str(exc))
