"""The one declaration of every command the gateway takes: name, arguments, handler, who may.

Owns `REMOTE` (the signed MQTT commands: name -> argument model, handler, the key role that
signs it) and `LOCAL` (the control socket's ops: name -> request model, handler, the right the
asker needs). Everything else is derived from here: the MQTT command path
(gateway.commands.handlers) and the control socket's dispatch (gateway.commands.local_ops) look a
name up here, the control rights (gateway.commands.access) read it, and
docs/schemas/command.schema.json is generated from it (gateway.commands.schema).

The command names themselves are `gateway.core.auth.COMMANDS`: pure data in the shared
vocabulary, because the config (which commands a trusted key may send) and the receivers (who
build commands) need them without the gateway's handlers. This registry gives each of those
names its meaning, and refuses to load when a name has none or a meaning has no name.

It does not verify, act or answer: it only says what runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from gateway.commands import local, remote
from gateway.commands.args import (
    AlarmArgs,
    Args,
    BollardArgs,
    DeviceRequest,
    DrillRequest,
    DrillStartArgs,
    DrillStopArgs,
    LedgerCloseArgs,
    LedgerCloseRequest,
    LockdownArgs,
    NoFields,
    ReplayArgs,
    ResetRequest,
    TestStartRequest,
    TestStopRequest,
    TimeArgs,
    UnlockArgs,
    WatchRequest,
    parse_args,
)
from gateway.commands.control import Peer, Stream
from gateway.core import auth

KeyRole = Literal["receiver"]
"""Who signs a command: a receiver's key (docs/security.md, "Keys and their roles"), trusted in
`[security] trusted_keys` for that command by name (or "*"). A gateway's key signs events only."""
Right = Literal["read", "reset", "device"]
"""What a control-socket op needs (gateway.commands.access): read is open to whoever can open the
socket, reset needs `[control] reset_group`, device needs `[control] device_group`. Test mode
needs `reset`: whoever may reset the gate's alarms (the guards) may run its walk test, which is
the role the guard page's "test press" acts with."""

A = TypeVar("A", bound=Args)


@dataclass(frozen=True, slots=True)
class RemoteCommand(Generic[A]):
    """A signed command a receiver sends over MQTT."""

    name: str
    args: type[A]
    handler: Callable[[remote.Call, A], Awaitable[remote.Result]]
    signed_by: frozenset[KeyRole]
    summary: str

    async def run(self, call: remote.Call, raw: Mapping[str, Any]) -> remote.Result:
        """Read `raw` as this command's arguments (BadArgs) and run the handler."""
        return await self.handler(call, parse_args(self.args, raw))


@dataclass(frozen=True, slots=True)
class LocalOp(Generic[A]):
    """An op of the local control socket (the `schoolgate` command line on the gateway box)."""

    name: str
    request: type[A]
    handler: Callable[[local.ControlTarget, A, Peer], Awaitable[local.Answer | Stream]]
    right: Right
    summary: str

    async def run(
        self, target: local.ControlTarget, raw: Mapping[str, Any], peer: Peer
    ) -> local.Answer | Stream:
        """Read `raw` (the request without its op) as this op's fields (BadArgs) and run it."""
        return await self.handler(target, parse_args(self.request, raw), peer)


RECEIVER: frozenset[KeyRole] = frozenset({"receiver"})

_REMOTE: tuple[RemoteCommand[Any], ...] = (
    RemoteCommand(
        "acknowledge", AlarmArgs, remote.acknowledge, RECEIVER, "the police have the alarm"
    ),
    RemoteCommand("reset", AlarmArgs, remote.reset, RECEIVER, "reset a latched alarm"),
    RemoteCommand("bollard.raise", BollardArgs, remote.bollard_raise, RECEIVER, "raise a bollard"),
    RemoteCommand("bollard.lower", BollardArgs, remote.bollard_lower, RECEIVER, "lower a bollard"),
    RemoteCommand("unlock", UnlockArgs, remote.unlock, RECEIVER, "unlock one door for a while"),
    RemoteCommand(
        "lockdown", LockdownArgs, remote.lockdown, RECEIVER, "lock every door (or one controller's)"
    ),
    RemoteCommand(
        "lockdown.release", LockdownArgs, remote.lockdown_release, RECEIVER, "end a lockdown"
    ),
    RemoteCommand(
        "drill.start", DrillStartArgs, remote.drill_start, RECEIVER, "alarms are drills for a while"
    ),
    RemoteCommand("drill.stop", DrillStopArgs, remote.drill_stop, RECEIVER, "end the drill"),
    RemoteCommand(
        "time.set", TimeArgs, remote.time_set, RECEIVER, "set the access controllers' clocks"
    ),
    RemoteCommand(
        "ledger.close",
        LedgerCloseArgs,
        remote.ledger_close,
        RECEIVER,
        "close a fault-ledger entry (the bureau signs off a repair)",
    ),
    RemoteCommand(
        "replay", ReplayArgs, remote.replay, RECEIVER, "send a range of seqs again to the asker"
    ),
)

_LOCAL: tuple[LocalOp[Any], ...] = (
    LocalOp("alarms", NoFields, local.alarms, "read", "the latched panic alarms"),
    LocalOp("reset", ResetRequest, local.reset, "reset", "reset a latched alarm"),
    LocalOp("command", DeviceRequest, local.command, "device", "a device command"),
    LocalOp("status", NoFields, local.status, "read", "paths, devices, alarms, commands"),
    LocalOp(
        "ledger_close", LedgerCloseRequest, local.ledger_close, "reset", "close a ledger entry"
    ),
    LocalOp("test.start", TestStartRequest, local.test_start, "reset", "test mode for N minutes"),
    LocalOp("test.stop", TestStopRequest, local.test_stop, "reset", "end test mode"),
    LocalOp("test.report", NoFields, local.test_report, "read", "the last walk test's receipts"),
    LocalOp("watch", WatchRequest, local.watch, "read", "inputs, registers, events as read"),
    LocalOp("drill", DrillRequest, local.drill, "device", "start or end a drill (police told)"),
)


class RegistryError(Exception):
    """The declaration above does not match the command names of gateway.core.auth."""


def _by_name(entries: tuple[Any, ...]) -> Mapping[str, Any]:
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise RegistryError(f"a name is declared twice: {names}")
    return MappingProxyType({entry.name: entry for entry in entries})


REMOTE: Mapping[str, RemoteCommand[Any]] = _by_name(_REMOTE)
LOCAL: Mapping[str, LocalOp[Any]] = _by_name(_LOCAL)

if set(REMOTE) != auth.COMMANDS:
    raise RegistryError(
        f"gateway.core.auth.COMMANDS and the registry differ: {sorted(set(REMOTE) ^ auth.COMMANDS)}"
    )


def ops_needing(right: Right) -> frozenset[str]:
    """The control-socket ops that need `right`."""
    return frozenset(name for name, op in LOCAL.items() if op.right == right)
