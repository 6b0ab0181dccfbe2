"""The rules layer in the daemon: one task that feeds the stored device events and the clock to
the pure rule blocks and runs what they return. Off unless `[rules]` is configured.

Owns turning device events into rule inputs (a bollard's position, which sockets of a socket
module are empty, a card at a patrol reader, a device going offline or online), sleeping until
the next deadline of any block (or a new event), running the actions the blocks return (an
event through `emit`, a device command through `command`, ledger entries), and keeping one bad
input or action from stopping the task: each is logged and counted, the rest goes on. It does
not judge (gateway.rules.windows, timers, patrol, ledger do), store events (the outbox does) or
talk to devices (the drivers do, through `command`).

Seam: `RulesEngine(rules, calendar, state, links)` (`RulesLinks`: the clock, the devices and
the hooks to the rest of the daemon, built once by the app); `on_stored(event)` is the hook the
app calls for each event a driver had stored (it only queues: it never blocks a driver);
`run()` is the task, and tells `changed` after each step (the guard's page reads `today()`).
State goes through `RulesState` (`SqliteRulesState` on the store's file in the daemon, a second
connection).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from edge_config.rules import PatrolConfig, RulesConfig, WindowRuleConfig
from gateway.core.changes import nothing_changed
from gateway.core.clock import Clock, wait_until_set
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.faults import ledger_action
from gateway.rules.ledger import Ledger
from gateway.rules.patrol import PatrolPlan, PatrolTracker
from gateway.rules.reactions import Siren
from gateway.rules.report import LiveFigures
from gateway.rules.state import RulesState
from gateway.rules.timers import DurableTimers, socket_of, timer_key
from gateway.rules.today import RulesToday, rules_today
from gateway.rules.windows import (
    Action,
    CloseLedger,
    CommandTemplate,
    Emit,
    OpenLedger,
    SendCommand,
    WindowRule,
    WindowRuleSpec,
)

log = structlog.get_logger(__name__)

Emitter = Callable[[Event], Awaitable[Event]]
Commander = Callable[[str, str, Mapping[str, object]], Awaitable[dict[str, object]]]
ACTION_TYPE = "rule.action"
LOCKDOWN_TYPE = "access.lockdown"
LOCKED_DOWN, NOT_LOCKED_DOWN = "locked_down", "not_locked_down"


@dataclass(frozen=True, slots=True)
class DevicePolled:
    """A driver's first poll is done: what it found was queued ahead of this."""

    device_id: str
    flushed: bool = False
    """The outbox was flushed since: what the poll found has reached the inbox."""


@dataclass(frozen=True, slots=True)
class RulesLinks:
    """What the rules are handed from the rest of the daemon, built once in gateway.app and
    passed down whole (the service, the engine and the blocks each take what they need)."""

    clock: Clock
    devices: Mapping[str, DeviceRef]
    emit: Emitter
    command: Commander | None = None
    changed: Callable[[], None] = nothing_changed
    """Told after each step (the guard's page reads `today()`)."""
    flush: Callable[[], Awaitable[object]] | None = None
    """Commits what the outbox has queued (the events of a driver's first poll)."""
    siren: Siren | None = None
    append: Emitter | None = None
    """The durable write (the outbox's append): the daily report needs it, and `live`."""
    live: Callable[[], LiveFigures] | None = None


class Block(Protocol):
    """A block added after construction (the daily report, drills per quarter): it sees every
    event the engine sees and is checked when its time comes."""

    def take(self, event: Event) -> list[Event]: ...

    async def check(self, now_ms: int) -> list[Event]: ...

    def next_check_ms(self, now_ms: int) -> int | None: ...


class RulesEngine:
    def __init__(
        self,
        rules: RulesConfig,
        calendar: SchoolCalendar,
        state: RulesState,
        links: RulesLinks,
    ) -> None:
        clock, devices = links.clock, links.devices
        self._clock = clock
        self._emit = links.emit
        self._command = links.command
        self._timers = DurableTimers(state, clock)
        self._ledger = Ledger(
            state, calendar.tz, rules.ledger.repair_h, rules.ledger.default_repair_h
        )
        self._flush = links.flush
        self._windows = [
            WindowRule(_window_spec(w, devices), calendar, state, clock) for w in rules.window
        ]
        self._socket_minutes = {
            (t.device, name): minutes
            for t in rules.socket_timer
            for name, minutes in t.sockets.items()
        }
        self._sockets_out: dict[str, set[str]] = {}
        self._patrols = [
            PatrolTracker(_patrol_plan(p, devices), state, calendar.tz) for p in rules.patrol
        ]
        self._blocks: list[Block] = []
        self._inbox: list[Event | DevicePolled] = []
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        """Set while the engine waits for its next deadline or a change, with nothing queued: a
        test driving a fake clock waits for it before moving time on."""
        self.refused = 0
        """Inputs or actions that raised (logged each; the task goes on)."""
        self._changed = links.changed
        self._today = functools.partial(
            rules_today, calendar=calendar, patrols=self._patrols, state=state
        )

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def patrols(self) -> list[PatrolTracker]:
        return self._patrols

    def add_block(self, block: Block) -> None:
        self._blocks.append(block)

    # -- the hook ------------------------------------------------------------------------------

    def on_stored(self, event: Event) -> None:
        """A driver's event was handed to the outbox: look at it soon (never blocks)."""
        self._inbox.append(event)
        self._wake.set()

    def on_device_ready(self, device_id: str) -> None:
        """A driver's first poll is done (never blocks). A socket module reports only its empty
        sockets then, so a stored timer whose socket it did not report is stopped unfired."""
        self._inbox.append(DevicePolled(device_id))
        self._wake.set()

    async def close_ledger(self, entry_id: str, *, by: str, note: str) -> None:
        """A person closes an entry (LedgerError says why not); `ledger.closed` records who,
        when and the note."""
        events = self._ledger.close_by_person(
            entry_id, by=by, note=note, at_ms=self._clock.wall_ms()
        )
        await self._emit_all(events)

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("rules_started", windows=len(self._windows), patrols=len(self._patrols))
        # A controller cannot be asked whether it is locked down: until a confirmed command says
        # so, it is judged as not locked down (a rule's action then locks it down again).
        for device_id in sorted(
            d.id for w in self._windows for d in w.spec.devices if d.kind == "access_controller"
        ):
            await self._guarded("lockdown unknown", self._observe(device_id, NOT_LOCKED_DOWN))
        while True:
            await self.step()
            self._changed()  # a step may change what `today()` says
            self._wake.clear()
            if not self._inbox:
                self.idle.set()
                try:
                    await wait_until_set(self._wake, self._clock, self.next_wake_in_s())
                finally:
                    self.idle.clear()

    async def step(self) -> None:
        """Take the queued events, then run every block's due checks."""
        inbox, self._inbox = self._inbox, []
        while inbox:
            item = inbox.pop(0)
            if isinstance(item, DevicePolled) and not item.flushed and self._flush is not None:
                # The poll's events may still wait for the group commit: judge after them.
                await self._guarded("outbox flush", self._flushed())
                inbox += [*self._inbox, DevicePolled(item.device_id, flushed=True)]
                self._inbox = []
            elif isinstance(item, DevicePolled):
                await self._guarded("device polled", self._polled(item.device_id))
            else:
                await self._guarded(f"event {item.type}", self._take(item))
                for block in self._blocks:
                    await self._guarded(
                        f"{type(block).__name__} {item.type}", self._give(block, item)
                    )
        await self._guarded("checks", self._check())

    def today(self) -> RulesToday:
        """Today's gate windows, patrol tally, open violations and overdue ledger entries."""
        return self._today(self._clock.wall_ms())

    def next_wake_in_s(self) -> float | None:
        now_ms = self._clock.wall_ms()
        waits = [w.next_check_in_s() for w in self._windows]
        waits.append(self._timers.next_due_in_s())
        waits += [(p.next_check_ms(now_ms) - now_ms) / 1000 for p in self._patrols]
        deadline_ms = self._ledger.next_deadline_ms()
        if deadline_ms is not None:
            waits.append((deadline_ms - now_ms) / 1000)
        for block in self._blocks:
            due_ms = block.next_check_ms(now_ms)
            if due_ms is not None:
                waits.append((due_ms - now_ms) / 1000)
        known = [w for w in waits if w is not None]
        return max(min(known), 0.0) if known else None

    # -- inputs --------------------------------------------------------------------------------

    async def _take(self, event: Event) -> None:
        device = event.device
        kind = event.type
        if kind in ("bollard.pulled", "bollard.inserted"):
            await self._socket(event, pulled=kind == "bollard.pulled")
        elif kind == "bollard.state":
            await self._observe(device.id, str(event.data.get("position")))
        elif kind == LOCKDOWN_TYPE:
            locked = event.data.get("lockdown") is True
            await self._observe(device.id, LOCKED_DOWN if locked else NOT_LOCKED_DOWN)
        elif kind == "access.card" and event.data.get("reader") is not None:
            reader_id = f"{device.id}-r{event.data['reader']}"
            card = str(event.data.get("card", ""))
            for patrol in self._patrols:
                await self._emit_all(patrol.on_card(reader_id, card, event.occurred_at_ms))
        if kind == "device.offline" and device.kind == "access_controller":
            # It may come back restarted, its lockdown lost: known again at the next command.
            await self._observe(device.id, NOT_LOCKED_DOWN)
        if kind == "device.offline":
            for held in self._timers.held():
                if held.device_id == device.id:  # its sockets cannot be read: assume still out
                    self._timers.confirm(held.key)
        fault = ledger_action(event)
        if fault is not None:
            await self._run_actions([fault])

    async def _socket(self, event: Event, *, pulled: bool) -> None:
        device = event.device
        socket = str(event.data.get("socket"))
        out = self._sockets_out.setdefault(device.id, set())
        minutes = self._socket_minutes.get((device.id, socket))
        key = timer_key(device.id, socket)
        if pulled:
            out.add(socket)
            if minutes is not None:
                self._timers.start(key, device, minutes * 60)
                self._timers.confirm(key)  # a timer held since the start: still out
        else:
            out.discard(socket)
            if minutes is not None:
                await self._emit_all(self._timers.stop(key))
        await self._observe(device.id, "some_out" if out else "all_inserted")

    async def _flushed(self) -> None:
        assert self._flush is not None
        await self._flush()

    async def _polled(self, device_id: str) -> None:
        out = self._sockets_out.get(device_id, set())
        for record in [*self._timers.held(), *self._timers.latched()]:
            if record.device_id == device_id and socket_of(record) not in out:
                log.info("timer_socket_filled_meanwhile", key=record.key)
                await self._emit_all(self._timers.stop(record.key))

    async def _observe(self, device_id: str, state: str) -> None:
        for rule in self._windows:
            await self._run_actions(rule.observe(device_id, state))

    async def _check(self) -> None:
        now_ms = self._clock.wall_ms()
        for rule in self._windows:
            await self._run_actions(rule.check())
        await self._emit_all(self._timers.check())
        for patrol in self._patrols:
            await self._emit_all(patrol.check(now_ms))
        await self._emit_all(self._ledger.check_overdue(now_ms))
        for block in self._blocks:
            await self._guarded(type(block).__name__, self._check_block(block, now_ms))

    async def _give(self, block: Block, event: Event) -> None:
        await self._emit_all(block.take(event))

    async def _check_block(self, block: Block, now_ms: int) -> None:
        await self._emit_all(await block.check(now_ms))

    # -- actions -------------------------------------------------------------------------------

    async def _run_actions(self, actions: list[Action]) -> None:
        for action in actions:
            await self._guarded(type(action).__name__, self._run_action(action))

    async def _run_action(self, action: Action) -> None:
        if isinstance(action, Emit):
            await self._emit(action.event)
        elif isinstance(action, OpenLedger):
            _, events = self._ledger.open(
                action.kind, action.key, what=action.what, where=action.where, at_ms=action.at_ms
            )
            await self._emit_all(events)
        elif isinstance(action, CloseLedger):
            await self._emit_all(
                self._ledger.close_cleared(action.key, evidence=action.evidence, at_ms=action.at_ms)
            )
        elif isinstance(action, SendCommand):
            await self._send(action)

    async def _send(self, action: SendCommand) -> None:
        data: dict[str, Any] = {"command": action.name, "args": dict(action.args)}
        severity = Severity.INFO
        if self._command is None:
            data |= {"ok": False, "error": "no command path in this process"}
            severity = Severity.MINOR
        else:
            try:
                data |= {
                    "ok": True,
                    "result": await self._command(action.device.id, action.name, action.args),
                }
            except Exception as exc:  # a failed action is reported, never raised
                data |= {"ok": False, "error": str(exc) or type(exc).__name__}
                severity = Severity.MINOR
        await self._emit(
            new_event(
                ACTION_TYPE,
                action.device,
                severity=severity,
                occurred_at_ms=self._clock.wall_ms(),
                data=data,
            )
        )

    async def _emit_all(self, events: list[Event]) -> None:
        for event in events:
            await self._emit(event)

    async def _guarded(self, what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the rules task never dies of one input
            self.refused += 1
            log.exception("rules_step_failed", what=what, error=str(exc))


def _window_spec(config: WindowRuleConfig, devices: Mapping[str, DeviceRef]) -> WindowRuleSpec:
    return WindowRuleSpec(
        id=config.id,
        devices=tuple(devices[d] for d in config.devices),
        required_state=config.required_state,
        applies=config.applies,
        grace_s=config.grace_s,
        on_violation=tuple(CommandTemplate(c.command, c.args) for c in config.on_violation),
        at_window_end=tuple(CommandTemplate(c.command, c.args) for c in config.at_window_end),
        ledger_kind=config.ledger_kind,
    )


def _patrol_plan(config: PatrolConfig, devices: Mapping[str, DeviceRef]) -> PatrolPlan:
    return PatrolPlan(
        id=config.id,
        checkpoints=tuple(
            DeviceRef(c.id, "patrol_checkpoint", devices[c.device].location)
            for c in config.checkpoints
        ),
        rounds_required=config.rounds_required,
        latest=config.latest,
        tolerance_s=config.tolerance_s,
    )
