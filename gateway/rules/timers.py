"""Durable timers (随拔随插): an insert-type bollard pulled from its socket must be back within N
minutes; past that, one alarm-lane event that latches until the bollard is back or a person
clears it.

Owns starting, stopping, clearing and expiring the timers, and the wall-clock-step policy below.
It performs no I/O and sends nothing: each call returns the events to emit; every change is
written to `RulesState` before the events are returned, so a restart finds the timer as it was
last reported. The caller sleeps `next_due_in_s()` on the injected clock and calls `check()`.

How time is kept (decided here):
- Inside one process a running timer is measured on the MONOTONIC clock from when it started (or
  from when this process took it over): a wall-clock step of +-1 h neither fires it early nor
  holds it late.
- The stored deadline is WALL time (the only time that means anything after a restart). When
  `check()` sees the wall clock has stepped (wall minus monotonic moved by more than
  `STEP_TOLERANCE_MS`), it rewrites each running timer's stored deadline to the corrected wall
  time plus what is left, so the record stays true for the next restart.
- After a restart (or a power cut) the time left is the stored wall deadline minus the wall time
  now, clamped to [0, duration]: a clock that was stepped back while the gateway was off cannot
  stretch a timer beyond its full duration, and one stepped forward fires it at once, never
  twice (a fired timer is stored with `fired_ms` and never fires again).
- A timer taken over from the store is HELD (never fired) until its socket's state is known
  again: `confirm(key)` (the bollard is still out) or `stop(key)` (it is back). The socket may
  have been filled while the gateway was off, and nothing would say so (see
  gateway.rules.engine, which confirms or stops them after the device's first poll).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import structlog

from gateway.core.clock import Clock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.state import RulesState, TimerRecord

log = structlog.get_logger(__name__)

EXPIRED_TYPE = "bollard.not_reinserted"
"""The expiry event. It must be on the alarm lane: the integration adds it to
`gateway.core.events._ALARM_TYPES` (that file is not ours to edit yet)."""
RESTORED_TYPE = "bollard.reinserted"
CLEARED_TYPE = "bollard.not_reinserted_cleared"
STEP_TOLERANCE_MS = 2_000


class TimerNotFound(LookupError):
    """No timer with that key is running or latched."""


@dataclass(slots=True)
class _Running:
    started_mono: float
    remaining_at_start_s: float
    held: bool = False
    """Taken over from the store, its socket not read yet: not fired until confirmed."""


def timer_key(device_id: str, socket: str) -> str:
    """A socket timer's key: one timer per socket of a device."""
    return f"{device_id}:{socket}"


def socket_of(record: TimerRecord) -> str:
    """The socket's name (as `bollard.pulled` says it) from its timer's key."""
    return record.key.removeprefix(f"{record.device_id}:")


class DurableTimers:
    def __init__(self, state: RulesState, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self._offset_ms = self._wall_minus_mono()
        self._running: dict[str, _Running] = {}
        now_ms = clock.wall_ms()
        for timer in state.timers():
            if timer.fired_ms is None:
                left_ms = min(max(timer.deadline_ms - now_ms, 0), timer.duration_ms)
                self._running[timer.key] = _Running(clock.monotonic(), left_ms / 1000, held=True)
                log.info("timer_resumed", key=timer.key, remaining_s=left_ms / 1000)

    def start(self, key: str, device: DeviceRef, duration_s: float) -> None:
        """The bollard left its socket. A timer already running (or latched) is left alone."""
        if self._state.timer(key) is not None:
            return
        now_ms = self._clock.wall_ms()
        duration_ms = round(duration_s * 1000)
        record = TimerRecord(
            key=key,
            device_id=device.id,
            device_kind=device.kind,
            device_location=device.location,
            started_ms=now_ms,
            duration_ms=duration_ms,
            deadline_ms=now_ms + duration_ms,
        )
        self._state.put_timer(record)
        self._running[key] = _Running(self._clock.monotonic(), duration_s)
        log.info("timer_started", key=key, device=device.id, duration_s=duration_s)

    def held(self) -> list[TimerRecord]:
        """The timers taken over from the store whose sockets are not read yet."""
        return [
            record
            for key, running in sorted(self._running.items())
            if running.held and (record := self._state.timer(key)) is not None
        ]

    def confirm(self, key: str) -> None:
        """The socket of a held timer is still empty: it runs on (and fires when due)."""
        running = self._running.get(key)
        if running is not None and running.held:
            running.held = False
            log.info("timer_confirmed", key=key)

    def stop(self, key: str) -> list[Event]:
        """The bollard is back. Ends the timer; a latched expiry is answered with RESTORED_TYPE."""
        record = self._state.timer(key)
        self._running.pop(key, None)
        if record is None:
            return []
        self._state.delete_timer(key)
        if record.fired_ms is None:
            log.info("timer_stopped", key=key)
            return []
        return [self._event(RESTORED_TYPE, record, Severity.INFO, {"expired_ms": record.fired_ms})]

    def clear(self, key: str, *, by: str, note: str) -> list[Event]:
        """A person clears a latched expiry (the bollard stays out, e.g. under repair)."""
        record = self._state.timer(key)
        if record is None or record.fired_ms is None:
            raise TimerNotFound(f"no expired timer {key!r} to clear")
        self._state.delete_timer(key)
        data = {"expired_ms": record.fired_ms, "by": by, "note": note}
        return [self._event(CLEARED_TYPE, record, Severity.INFO, data)]

    def latched(self) -> list[TimerRecord]:
        return [t for t in self._state.timers() if t.fired_ms is not None]

    def next_due_in_s(self) -> float | None:
        """Seconds until the next running timer expires (0 if one is due), None if none runs."""
        lefts = [self._left_s(r) for r in self._running.values() if not r.held]
        return max(min(lefts), 0.0) if lefts else None

    def check(self) -> list[Event]:
        """Expire every due timer, once. Call after sleeping `next_due_in_s()`."""
        self._follow_wall_step()
        events: list[Event] = []
        for key, running in sorted(self._running.items()):
            if running.held or self._left_s(running) > 0:
                continue
            record = self._state.timer(key)
            del self._running[key]
            if record is None or record.fired_ms is not None:
                continue
            fired = replace(record, fired_ms=self._clock.wall_ms())
            self._state.put_timer(fired)  # stored before it is reported: never fires twice
            data: dict[str, object] = {
                "started_ms": record.started_ms,
                "allowed_s": record.duration_ms / 1000,
            }
            events.append(self._event(EXPIRED_TYPE, fired, Severity.CRITICAL, data))
            log.warning("timer_expired", key=key, device=record.device_id)
        return events

    def _left_s(self, running: _Running) -> float:
        return running.remaining_at_start_s - (self._clock.monotonic() - running.started_mono)

    def _wall_minus_mono(self) -> int:
        return self._clock.wall_ms() - round(self._clock.monotonic() * 1000)

    def _follow_wall_step(self) -> None:
        offset = self._wall_minus_mono()
        step_ms = offset - self._offset_ms
        if abs(step_ms) <= STEP_TOLERANCE_MS:
            return
        self._offset_ms = offset
        now_ms = self._clock.wall_ms()
        for key, running in self._running.items():
            record = self._state.timer(key)
            if record is not None and record.fired_ms is None:
                deadline = now_ms + round(max(self._left_s(running), 0) * 1000)
                self._state.put_timer(replace(record, deadline_ms=deadline))
        log.warning("wall_clock_step", step_ms=step_ms, running=len(self._running))

    def _event(
        self, type: str, record: TimerRecord, severity: Severity, data: dict[str, object]
    ) -> Event:
        device = DeviceRef(record.device_id, record.device_kind, record.device_location)
        return new_event(
            type,
            device,
            severity=severity,
            occurred_at_ms=self._clock.wall_ms(),
            data={"socket": socket_of(record), **data},
        )
