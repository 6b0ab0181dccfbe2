"""What each MQTT command does, once it is verified and its arguments are read.

Owns one handler per command (`acknowledge`, `unlock`, `replay`, ...): it takes the `Call` (the
verified command, where it came from, what it acts on) and its parsed arguments, asks the
`CommandTarget` to act, and returns the `result` of a `done` answer. A handler raises what the
answer names: `UnknownDevice`, `UnknownAlarm` (from the latches), `DriverError` (from a driver).

It does not verify, count, log or answer commands (gateway.commands.handlers), nor say which
command runs which handler (gateway.commands.registry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.base import DriverError
from gateway.commands.args import (
    AlarmArgs,
    BollardArgs,
    DrillStartArgs,
    DrillStopArgs,
    LedgerCloseArgs,
    LockdownArgs,
    ReplayArgs,
    TimeArgs,
    UnlockArgs,
)
from gateway.core import auth

Replay = Callable[[int, int], Awaitable[list[int]]]
"""`(from_seq, to_seq)`: re-send that range to the destination the command came from. What it
raises (a lost connection) is not the command's doing: it leaves `Commands.handle` unchanged."""

Result = dict[str, Any]


class UnknownDevice(Exception):
    """No device of the kind the command moves has that id."""


class ReplayFailed(Exception):
    """Carries an error of the `Replay` callable past the boundary (its `__cause__`)."""


class CommandTarget(Protocol):
    """What commands act on: the running gateway implements this."""

    async def acknowledge(
        self, alarm_id: str, *, by: str, issuer: str, command_id: str
    ) -> None: ...

    async def reset(self, alarm_id: str, *, by: str) -> None: ...

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]: ...

    def devices_of_kind(self, kind: str) -> list[str]: ...

    async def drill(self, *, start: bool, minutes: int, by: str) -> None: ...

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One verified command on its way to the target."""

    target: CommandTarget
    command: auth.Command
    destination: str
    replay: Replay

    def device(self, device_id: str, kind: str) -> str:
        if device_id not in self.target.devices_of_kind(kind):
            raise UnknownDevice(f"no {kind} named {device_id!r}")
        return device_id

    async def each_controller(
        self, device_id: str, verb: str, call_args: Mapping[str, object]
    ) -> Result:
        """`verb` on one access controller (`device_id`), or on every one when it is ""."""
        if device_id:
            devices = [self.device(device_id, "access_controller")]
        else:
            devices = self.target.devices_of_kind("access_controller")
        results: dict[str, object] = {}
        errors: list[str] = []
        # One controller that does not answer must not keep the others unlocked or locked.
        for device in devices:
            try:
                results[device] = await self.target.device_command(device, verb, call_args)
            except DriverError as exc:
                errors.append(f"{device}: {exc}")
        if errors:
            raise DriverError("; ".join(errors))
        return {"devices": results}


async def acknowledge(call: Call, args: AlarmArgs) -> Result:
    command = call.command
    await call.target.acknowledge(
        args.alarm_id, by=args.by, issuer=command.issuer, command_id=command.id
    )
    return {"alarm_id": args.alarm_id}


async def reset(call: Call, args: AlarmArgs) -> Result:
    await call.target.reset(args.alarm_id, by=args.by)
    return {"alarm_id": args.alarm_id}


async def bollard_raise(call: Call, args: BollardArgs) -> Result:
    return await call.target.device_command(call.device(args.device, "bollard"), "raise", {})


async def bollard_lower(call: Call, args: BollardArgs) -> Result:
    return await call.target.device_command(call.device(args.device, "bollard"), "lower", {})


async def unlock(call: Call, args: UnlockArgs) -> Result:
    device = call.device(args.device, "access_controller")
    door_args: dict[str, object] = {"door": args.door, "open_s": args.open_s}
    return await call.target.device_command(device, "unlock", door_args)


async def lockdown(call: Call, args: LockdownArgs) -> Result:
    return await call.each_controller(args.device, "lockdown", {})


async def lockdown_release(call: Call, args: LockdownArgs) -> Result:
    return await call.each_controller(args.device, "release_lockdown", {})


async def drill_start(call: Call, args: DrillStartArgs) -> Result:
    by = args.by or call.command.issuer
    await call.target.drill(start=True, minutes=args.minutes, by=by)
    return {"drill": True, "minutes": args.minutes}


async def drill_stop(call: Call, args: DrillStopArgs) -> Result:
    await call.target.drill(start=False, minutes=0, by=args.by or call.command.issuer)
    return {"drill": False}


async def time_set(call: Call, args: TimeArgs) -> Result:
    time_ms = args.time_ms
    clock_args: dict[str, object] = {} if time_ms is None else {"time_ms": time_ms}
    return await call.each_controller("", "set_clock", clock_args)


async def ledger_close(call: Call, args: LedgerCloseArgs) -> Result:
    by = args.by or call.command.issuer
    await call.target.ledger_close(args.entry, by=by, note=args.note)
    return {"entry": args.entry, "closed_by": by}


async def replay(call: Call, args: ReplayArgs) -> Result:
    try:
        seqs = await call.replay(args.from_seq, args.to_seq)
    except Exception as exc:
        raise ReplayFailed from exc
    return {
        "destination": call.destination,
        "from_seq": args.from_seq,
        "to_seq": args.to_seq,
        "seqs": seqs,
    }
