"""Panic-alarm latching (GB 50394-2007 5.2.2-5.2.3) and the acknowledgement loop: a panic alarm
stays active until a person resets it, a press while latched is recorded, not lost, and an alarm
nobody acknowledges in time is escalated.

Owns the set of open (latched) alarms, the events that open, repeat, acknowledge, escalate and
reset them, the escalation timer, and what each box's lamp and siren show: the lamp follows the
newest open alarm of its box (fast blinking = stored, not yet at the `ack_destination` broker;
slow = that broker has it (PUBACK); steady = acknowledged; off = no open alarm), the siren sounds
while an open alarm of the box is escalated (with `escalate_siren`). The latch state is not a
table of its own: it is derived from the stored events (an `alarm.panic` with no `alarm.reset`
for its `alarm_id`; its `alarm.acknowledged` / `alarm.escalated` / `alarm.siren_silenced`, with
who and when; whether the broker took it), so the events and the latch can never disagree, and a
restart restores every latch as it was. Every change is told to `changed` (the guard's page). It
does not poll devices or blink coils (drivers do), does not send anything (the outbox and uplinks
do) and does not check who may acknowledge (the command handler does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from drivers.alarm_box import OutputPattern
from drivers.base import DriverError, PanicPress
from gateway.core.changes import nothing_changed
from gateway.core.clock import Clock, SystemClock, wait_until_set
from gateway.core.events import DeviceRef, Event, Severity, new_event_id
from gateway.store.records import AlarmStore

log = structlog.get_logger(__name__)


class UnknownAlarm(Exception):
    """No open alarm has that id."""


@dataclass(frozen=True, slots=True)
class BoxInfo:
    device: DeviceRef
    button_names: Mapping[int, str]
    drill: bool = False


@dataclass(frozen=True, slots=True)
class _Resetter:
    """Who reset an alarm (`AlarmLatches.reset`'s words), as the `alarm.reset` event says."""

    by: str
    uid: int | None = None
    user: str = ""
    reason: str = ""


@dataclass(slots=True)
class Latch:
    alarm_id: str
    device_id: str
    button: int
    raised_at_ms: int
    presses: int
    seqs: set[int] = field(default_factory=set)
    """The seqs of its `alarm.panic` and `alarm.escalated`: either one taken by the
    acknowledging destination's broker means the alarm is there."""
    delivered: bool = False
    acknowledged: bool = False
    escalated: bool = False
    acknowledged_by: str = ""
    acknowledged_at_ms: int | None = None
    """Who acknowledged and when, as the command told it (restored from its event)."""
    siren_silenced_by: str = ""
    siren_silenced_at_ms: int | None = None
    """A guard silenced the box's siren for this alarm: who and when (restored from its event);
    None: not silenced."""

    test: bool = False
    """Raised in test mode (its `alarm.panic` was stored marked `test`): the page shows it as a
    test; restored from the stored body after a restart."""

    siren_asked: bool = False
    """A panic reaction sounds the siren for this alarm (not restored after a restart: the
    reaction's own `rule.action` event records it)."""

    @property
    def siren_silenced(self) -> bool:
        return self.siren_silenced_at_ms is not None

    @property
    def lamp(self) -> OutputPattern:
        if self.acknowledged:
            return OutputPattern.STEADY
        return OutputPattern.SLOW if self.delivered else OutputPattern.FAST


FeedbackSetter = Callable[[str, OutputPattern], Awaitable[bool]]
"""`(output_name, pattern) -> wired`: drives an alarm box's `lamp` or `siren`
(`drivers.alarm_box.AlarmBox.set_pattern`); False when the box has no such output. It must not
wait on the line: it is called from inside the box's own poll."""


class AlarmLatches:
    def __init__(
        self,
        outbox: AlarmStore,
        boxes: Mapping[str, BoxInfo],
        *,
        ack_destination: str = "police",
        ack_timeout_s: float = 30.0,
        escalate_siren: bool = True,
        clock: Clock | None = None,
        changed: Callable[[], None] = nothing_changed,
    ) -> None:
        self._outbox = outbox
        self._boxes = boxes
        self._ack_destination = ack_destination
        self._ack_timeout_ms = round(ack_timeout_s * 1000)
        self._escalate_siren = escalate_siren
        self._clock: Clock = clock or SystemClock()
        """Deadlines are wall-clock ms, the clock of `occurred_at_ms`: they survive a restart."""
        self._open: dict[str, Latch] = {}
        self._by_seq: dict[int, Latch] = {}
        self._feedback: dict[str, FeedbackSetter] = {}
        self._changed = changed
        """Told after every change of an open alarm (the guard's page shows them)."""
        self._deadlines_changed = asyncio.Event()
        self._acked_while_restoring: set[int] | None = None
        """PUBACKs that arrive while `restore` reads the store: applied when it has the seqs."""

    def attach_feedback(self, device_id: str, setter: FeedbackSetter) -> None:
        self._feedback[device_id] = setter

    @property
    def open_alarms(self) -> list[Latch]:
        return list(self._open.values())

    def open_alarm(self, alarm_id: str) -> Latch:
        """The open alarm `alarm_id`; UnknownAlarm when no alarm of that id is open."""
        latch = self._open.get(alarm_id)
        if latch is None:
            raise UnknownAlarm(alarm_id)
        return latch

    async def restore(self) -> None:
        """Re-open every latch that was open before a restart, with its delivered, acknowledged
        and escalated state, and show it again on its box's lamp and siren. Called again once a
        store that could not be opened at start opens: the file's latches are merged with those
        raised meanwhile (which stay as they are)."""
        restored: dict[str, Latch] = {}
        self._acked_while_restoring = set()
        try:
            await self._read_latches(restored)
        finally:
            acked, self._acked_while_restoring = self._acked_while_restoring, None
        for seq in acked:
            latch = self._by_seq.get(seq)
            if latch is not None and latch.alarm_id in restored:
                latch.delivered = True
        if not restored:
            return
        # Kept in the order raised: a box's lamp shows its newest open alarm.
        merged = [*self._open.values(), *restored.values()]
        self._open = {
            latch.alarm_id: latch for latch in sorted(merged, key=lambda lt: lt.raised_at_ms)
        }
        for device_id in {latch.device_id for latch in restored.values()}:
            await self._show(device_id)
        self._deadlines_changed.set()
        log.warning(
            "alarms_still_latched",
            count=len(restored),
            acknowledged=sum(latch.acknowledged for latch in restored.values()),
            escalated=sum(latch.escalated for latch in restored.values()),
        )

    async def _read_latches(self, restored: dict[str, Latch]) -> None:
        for alarm in await self._outbox.open_alarms():
            if alarm.alarm_id not in self._open:
                restored[alarm.alarm_id] = Latch(
                    alarm.alarm_id,
                    alarm.device_id,
                    alarm.button,
                    alarm.raised_at_ms,
                    alarm.presses,
                    test=alarm.test,
                )
        progress = await self._outbox.alarm_progress(self._ack_destination, list(restored))
        for step in progress:
            latch = restored[step.alarm_id]
            if step.type == "alarm.acknowledged":
                latch.acknowledged = True
                latch.acknowledged_by, latch.acknowledged_at_ms = step.actor, step.occurred_at_ms
            elif step.type == "alarm.siren_silenced":
                latch.siren_silenced_by = step.actor
                latch.siren_silenced_at_ms = step.occurred_at_ms
            else:
                latch.escalated = latch.escalated or step.type == "alarm.escalated"
                latch.delivered = latch.delivered or step.sent
                self._track(latch, step.seq)

    # -- PanicSink ----------------------------------------------------------------------------

    async def panic_pressed(self, press: PanicPress) -> None:
        device_id, button, presses = press.device_id, press.button, press.presses
        occurred_at_ms = press.occurred_at_ms
        box = self._boxes[device_id]
        latch = self._latch_for(device_id, button)
        if press.held_at_start and latch is not None:
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
        event = self._event(
            latch, event_type, Severity.CRITICAL, occurred_at_ms, data, event_id=event_id
        )
        # Durable before anything else happens: the latch exists once the event is on disk.
        stored = await self._outbox.append(event)
        # No await from here to `_track`: a PUBACK of this seq cannot be handled before it.
        self._open[latch.alarm_id] = latch
        if event_type == "alarm.panic":
            latch.test = stored.test
            self._track(latch, stored.seq)
            self._deadlines_changed.set()
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
            await self._reset(latch, _Resetter("reset input"), occurred_at_ms)

    # -- the gateway side ---------------------------------------------------------------------

    async def reset(
        self,
        alarm_id: str,
        *,
        by: str,
        occurred_at_ms: int,
        uid: int | None = None,
        user: str = "",
        reason: str = "",
    ) -> None:
        """Reset an open alarm by hand: `by` is the name the person gave; `uid` and `user` who the
        operating system says asked (the control socket's peer), recorded alongside, and the
        `reason` given (the guard's page asks for one before the police acknowledged)."""
        latch = self.open_alarm(alarm_id)
        await self._reset(latch, _Resetter(by, uid, user, reason), occurred_at_ms)

    async def silence_siren(self, device_id: str, *, by: str, occurred_at_ms: int) -> list[str]:
        """A guard silenced the siren of `device_id`: each of its open alarms records an
        `alarm.siren_silenced` event with who, and the siren stays off for them (the alarms stay
        latched, the lamp unchanged). Returns the alarm ids; UnknownAlarm when the box has none."""
        latches = [lt for lt in self._open.values() if lt.device_id == device_id]
        if not latches:
            raise UnknownAlarm(device_id)
        for latch in latches:
            data: dict[str, object] = {"button": latch.button, "by": by}
            event = self._event(latch, "alarm.siren_silenced", Severity.INFO, occurred_at_ms, data)
            await self._outbox.append(event)
            latch.siren_silenced_by, latch.siren_silenced_at_ms = by, occurred_at_ms
            log.info("alarm_siren_silenced", alarm_id=latch.alarm_id, device=device_id, by=by)
        await self._show(device_id)
        return [latch.alarm_id for latch in latches]

    async def sound_siren(self, alarm_id: str) -> bool:
        """A panic reaction (gateway.rules.reactions): the box's siren sounds for this open alarm
        until it is reset or a guard silences it. False when the box has no siren wired."""
        latch = self._open.get(alarm_id)
        if latch is None:
            raise UnknownAlarm(alarm_id)
        latch.siren_asked = True
        return await self._show(latch.device_id)

    async def delivered(self, destination: str, seqs: Sequence[int]) -> None:
        """A broker acknowledged (PUBACK) these seqs. When it is the `ack_destination`'s and one
        is an open alarm's `alarm.panic` or `alarm.escalated`, its lamp goes from fast to slow
        blinking. Called for every PUBACK batch: a dictionary look-up per seq, nothing stored
        (after a restart the delivery rows tell the same)."""
        if destination != self._ack_destination:
            return
        if self._acked_while_restoring is not None:
            self._acked_while_restoring.update(seqs)
        if not self._by_seq:
            return
        devices = set()
        for seq in seqs:
            latch = self._by_seq.get(seq)
            if latch is not None and not latch.delivered:
                latch.delivered = True
                devices.add(latch.device_id)
                log.info("alarm_delivered", alarm_id=latch.alarm_id, destination=destination)
        for device_id in devices:
            await self._show(device_id)

    async def acknowledge(
        self, alarm_id: str, *, by: str, issuer: str, command_id: str, occurred_at_ms: int
    ) -> None:
        """Record that `by` (through the key `issuer`, command `command_id`) took the alarm: an
        `alarm.acknowledged` event, the lamp steady, no escalation. A second acknowledgement of
        the same alarm changes nothing. Raises UnknownAlarm when no open alarm has that id."""
        latch = self.open_alarm(alarm_id)
        if latch.acknowledged:
            return
        latch.acknowledged = True  # before the await: a concurrent second one is a no-op too
        latch.acknowledged_by, latch.acknowledged_at_ms = by, occurred_at_ms
        data: dict[str, object] = {
            "by": by,
            "issuer": issuer,
            "command_id": command_id,
            "after_ms": max(0, occurred_at_ms - latch.raised_at_ms),
        }
        event = self._event(latch, "alarm.acknowledged", Severity.INFO, occurred_at_ms, data)
        try:
            stored = await self._outbox.append(event)
        except BaseException:
            latch.acknowledged = False  # not recorded, so not acknowledged
            latch.acknowledged_by, latch.acknowledged_at_ms = "", None
            raise
        log.info("alarm_acknowledged", alarm_id=alarm_id, by=by, issuer=issuer, seq=stored.seq)
        self._deadlines_changed.set()
        await self._show(latch.device_id)

    async def run(self) -> None:
        """The escalation timer: an open alarm not acknowledged within `ack_timeout_s` of being
        raised is escalated once. Sleeps until the next deadline, woken early by a new alarm or
        a restore; runs until cancelled."""
        while True:
            self._deadlines_changed.clear()
            now_ms = self._clock.wall_ms()
            next_deadline_ms: int | None = None
            for latch in list(self._open.values()):
                if latch.acknowledged or latch.escalated or latch.alarm_id not in self._open:
                    continue  # (not in `_open`: reset while an earlier one was escalated)
                deadline_ms = latch.raised_at_ms + self._ack_timeout_ms
                if deadline_ms <= now_ms:
                    await self._escalate(latch, now_ms)
                elif next_deadline_ms is None or deadline_ms < next_deadline_ms:
                    next_deadline_ms = deadline_ms
            if self._deadlines_changed.is_set():
                continue  # something changed while escalating: look again
            timeout_s = None if next_deadline_ms is None else (next_deadline_ms - now_ms) / 1000
            await wait_until_set(self._deadlines_changed, self._clock, timeout_s)

    async def _escalate(self, latch: Latch, now_ms: int) -> None:
        latch.escalated = True
        box = self._boxes[latch.device_id]
        # The siren is only asked for here (no line I/O), so the event can tell whether it is
        # sounding; the box's next poll writes it.
        siren = self._escalate_siren and await self._drive(
            latch.device_id, "siren", OutputPattern.STEADY
        )
        data: dict[str, object] = {
            "button": latch.button,
            "button_name": box.button_names.get(latch.button, ""),
            "presses": latch.presses,
            "after_s": round(max(0, now_ms - latch.raised_at_ms) / 1000, 3),
            "siren": siren,
        }
        event = self._event(latch, "alarm.escalated", Severity.CRITICAL, now_ms, data)
        stored = await self._outbox.append(event)
        if latch.alarm_id in self._open:  # (else reset meanwhile)
            self._track(latch, stored.seq)
        log.warning(
            "alarm_escalated",
            alarm_id=latch.alarm_id,
            device=latch.device_id,
            seq=stored.seq,
            siren=siren,
        )
        await self._show(latch.device_id)

    async def _reset(self, latch: Latch, who: _Resetter, occurred_at_ms: int) -> None:
        by, uid, user = who.by, who.uid, who.user
        data: dict[str, object] = {"button": latch.button, "reset_by": by, "presses": latch.presses}
        if uid is not None:
            data |= {"reset_by_uid": uid, "reset_by_user": user}
        if who.reason:
            data["reason"] = who.reason
        event = self._event(latch, "alarm.reset", Severity.INFO, occurred_at_ms, data)
        await self._outbox.append(event)
        self._open.pop(latch.alarm_id, None)
        for seq in latch.seqs:
            self._by_seq.pop(seq, None)
        self._deadlines_changed.set()
        log.info(
            "alarm_reset",
            alarm_id=latch.alarm_id,
            device=latch.device_id,
            by=who.by,
            uid=who.uid,
            user=who.user,
        )
        await self._show(latch.device_id)

    def _track(self, latch: Latch, seq: int | None) -> None:
        if seq is not None:
            latch.seqs.add(seq)
            self._by_seq[seq] = latch

    def _latch_for(self, device_id: str, button: int) -> Latch | None:
        for latch in self._open.values():
            if latch.device_id == device_id and latch.button == button:
                return latch
        return None

    def _event(
        self,
        latch: Latch,
        event_type: str,
        severity: Severity,
        occurred_at_ms: int,
        data: dict[str, object],
        *,
        event_id: str | None = None,
    ) -> Event:
        """An event of `latch`'s alarm as its box reports it: the box's device and drill mark,
        the alarm's id (a new event id unless given: the first press's is the alarm's)."""
        box = self._boxes[latch.device_id]
        return Event(
            id=event_id or new_event_id(),
            type=event_type,
            severity=severity,
            device=box.device,
            occurred_at_ms=occurred_at_ms,
            data=data,
            drill=box.drill,
            alarm_id=latch.alarm_id,
        )

    async def _show(self, device_id: str) -> bool:
        """The lamp shows the box's newest open alarm (latches are kept in the order raised);
        the siren sounds while any of its open alarms is escalated (or a reaction asked for it).
        Every change of a latch ends here, so this is also where the watchers are told.
        Returns whether the box has a siren wired."""
        self._changed()
        latches = [latch for latch in self._open.values() if latch.device_id == device_id]
        lamp = latches[-1].lamp if latches else OutputPattern.OFF
        sounding = any(
            (latch.siren_asked or (self._escalate_siren and latch.escalated))
            and not latch.siren_silenced
            for latch in latches
        )
        await self._drive(device_id, "lamp", lamp)
        return await self._drive(
            device_id, "siren", OutputPattern.STEADY if sounding else OutputPattern.OFF
        )

    async def _drive(self, device_id: str, output: str, pattern: OutputPattern) -> bool:
        setter = self._feedback.get(device_id)
        if setter is None:
            return False
        try:
            return await setter(output, pattern)
        except DriverError as exc:
            # The alarm is already stored and queued; a lamp that cannot be lit is logged,
            # and the driver re-applies its wanted outputs on its next good poll.
            log.error("feedback_failed", device=device_id, output=output, error=str(exc))
            return False
