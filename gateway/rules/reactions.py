"""Panic reactions (issue 12, item 4): what the gateway does when a panic alarm latches:
emergency-raise the bollards, lock down the access controllers (closed campus), sound the siren.

Owns choosing which alarms react (`[rules.panic]`: which boxes, drills or not), running the
configured actions in their own task, and reporting each action's result as one `rule.action`
event (`ok`, `result` or `error`, the alarm's `alarm_id`). The alarm itself never waits for a
reaction: `on_stored` only queues, and it is called by the outbox after the `alarm.panic` is
stored (the drain sends it on its own); the actions of one alarm run side by side, so a bollard
that takes its travel time to confirm does not hold the lockdown back, and a failed or hanging
action is reported (or still running) while the others finish.

It does not decide what an alarm is (gateway.alarms.latch), how a device moves (the drivers,
through `command`) or how the siren is driven (the latch, through `siren`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import structlog

from edge_config.rules import PanicConfig
from gateway.core.clock import Clock
from gateway.core.events import DeviceRef, Event, Severity, new_event

log = structlog.get_logger(__name__)

ACTION_TYPE = "rule.action"
RULE_ID = "panic"
PANIC_TYPE = "alarm.panic"

Emitter = Callable[[Event], Awaitable[Event]]
Commander = Callable[[str, str, Mapping[str, object]], Awaitable[dict[str, object]]]
Siren = Callable[[str], Awaitable[bool]]
"""`alarm_id -> wired`: the latch sounds the alarm's box siren (AlarmLatches.sound_siren)."""


class SirenNotWired(Exception):
    """The box has no siren output configured."""


@dataclass(eq=False)
class PanicReactions:
    config: PanicConfig
    devices: Mapping[str, DeviceRef]
    clock: Clock
    _: KW_ONLY
    emit: Emitter
    command: Commander
    siren: Siren
    _queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue, init=False)
    reacted: int = field(default=0, init=False)
    """Alarms reacted to (all their actions reported)."""

    def on_stored(self, event: Event) -> None:
        """Every stored event (never blocks): a new panic alarm of a box that reacts is queued."""
        if event.type != PANIC_TYPE:
            return
        if self.config.boxes and event.device.id not in self.config.boxes:
            return
        if event.drill and not self.config.during_drill:
            log.info("panic_reaction_skipped", alarm_id=event.alarm_id, reason="drill")
            return
        self._queue.put_nowait(event)

    async def run(self) -> None:
        """The reactions' own task: one alarm after another, its actions side by side."""
        while True:
            alarm = await self._queue.get()
            log.warning("panic_reaction", alarm_id=alarm.alarm_id, box=alarm.device.id)
            async with asyncio.TaskGroup() as tg:
                for n, action in enumerate(self.config.action):
                    for device_id in action.devices:
                        tg.create_task(
                            self._act(alarm, device_id, action.command),
                            name=f"panic:{n}:{device_id}",
                        )
            self.reacted += 1

    async def _act(self, alarm: Event, device_id: str, name: str) -> None:
        data: dict[str, Any] = {"rule": RULE_ID, "command": name, "args": {}}
        if name == "siren" and device_id != alarm.device.id:
            data["args"] = {"on": True}
        severity = Severity.INFO
        try:
            data |= {"ok": True, "result": await self._run(alarm, device_id, name)}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed action is reported, never raised
            data |= {"ok": False, "error": str(exc) or type(exc).__name__}
            severity = Severity.MAJOR
            log.error("panic_reaction_failed", device=device_id, command=name, error=str(exc))
        event = new_event(
            ACTION_TYPE,
            self.devices[device_id],
            severity=severity,
            occurred_at_ms=self.clock.wall_ms(),
            data=data,
        )
        try:
            # It names the alarm it answers (receivers group them by `alarm_id`).
            await self.emit(replace(event, alarm_id=alarm.alarm_id, drill=alarm.drill))
        except Exception as exc:  # the store refused: logged, the other actions go on
            log.error("panic_reaction_unreported", device=device_id, error=str(exc))

    async def _run(self, alarm: Event, device_id: str, name: str) -> dict[str, object]:
        if name != "siren":
            return await self.command(device_id, name, {})
        if device_id != alarm.device.id:  # another box's siren: its output, on
            return await self.command(device_id, "siren", {"on": True})
        # The alarm's own box: through its latch, or the latch's next change would silence it.
        assert alarm.alarm_id is not None
        if not await self.siren(alarm.alarm_id):
            raise SirenNotWired(f"{device_id} has no siren wired (siren_coil)")
        return {"siren": True}
