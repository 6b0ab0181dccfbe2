"""Commands from the police and bureau side: verify, act, answer.

Owns what happens to a command message after the uplink receives it: verification
(`gateway.core.auth`: signature by a trusted key allowed that command, freshness, replay), checking
its arguments, dispatching it to the part of the gateway that acts (the `CommandTarget`), and
the outcome every sender gets back (`contract.CommandResult`): done, rejected with the
authentication reason, or failed with why. Every refusal is logged and counted by reason.
Nothing but a verified, well-formed command reaches the target.

It is a boundary (issue 10): `handle` never raises for what a sender put in the message. Numbers
are range-checked when the arguments are read; an unexpected error in verification or in the
target becomes a refusal with reason `internal_error` (logged with its traceback), so one bad
message cannot end the uplink session that received it.

It does not subscribe or publish (the uplink does), and does not know how a device does a thing
(drivers do).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from drivers.base import DriverError
from gateway.alarms.latch import UnknownAlarm
from gateway.core import auth, contract
from gateway.security import Security

log = structlog.get_logger(__name__)

MAX_REPLAY_SPAN = 10_000
MAX_SEQ = 2**63 - 1
"""Event seqs are SQLite integers: 1..2**63-1."""
INTERNAL_ERROR = "internal_error"
"""The reason of a refusal caused by an error of ours, not by the command."""
DEFAULT_DRILL_MINUTES = 60

Replay = Callable[[int, int], Awaitable[list[int]]]
"""`(from_seq, to_seq)`: re-send that range to the destination the command came from. What it
raises (a lost connection) is not the command's doing: it leaves `handle` unchanged."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BadArgs(Exception):
    """The command's arguments are not what it takes."""


class UnknownDevice(Exception):
    pass


class _ReplayFailed(Exception):
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


def _str_arg(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BadArgs(f"{name} must be a non-empty string")
    return value


def _int_arg(
    args: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None
) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadArgs(f"{name} must be an integer {low}..{high}")
    return value


def _only(args: Mapping[str, Any], *allowed: str) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise BadArgs(f"unknown argument(s) {unknown}; takes {list(allowed) or 'none'}")


class Commands:
    def __init__(
        self,
        site: contract.Site,
        security: Security | None,
        target: CommandTarget,
        *,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._site = site
        self._security = security
        self._target = target
        self._clock_ms = clock_ms
        # One cache for every destination: a command replayed through the other broker is
        # still a replay.
        self._replay = auth.ReplayCache(since_ms=clock_ms() - 1)
        self.accepted = 0
        self.rejected = 0
        self.refusals: Counter[str] = Counter()
        """Every answer that was not `done`, by reason (rejected and failed alike)."""
        self.ignored_retained = 0

    def refused(
        self, reason: str, *, raw: bytes, detail: str, destination: str, error: BaseException
    ) -> contract.CommandResult:
        """Count and log a refusal caused by an error of ours (`error`), and the answer to give.
        Used by the uplink too, for what goes wrong after `handle` (encoding, publishing)."""
        self.rejected += 1
        self.refusals[reason] += 1
        command_id, name = _peek(raw)
        log.error(
            "command_refused",
            destination=destination,
            reason=reason,
            detail=detail,
            command_id=command_id,
            command=name,
            error=repr(error),
            exc_info=error,
        )
        return contract.CommandResult(command_id, name, "rejected", reason, detail)

    def ignore_retained(self, raw: bytes, *, destination: str) -> None:
        """A command that arrived retained (the broker kept it and hands it to every subscriber,
        at every start): never acted on or answered, only counted and logged."""
        self.ignored_retained += 1
        command_id, name = _peek(raw)
        log.warning(
            "command_ignored",
            destination=destination,
            reason="retained",
            command_id=command_id,
            command=name,
            size=len(raw),
        )

    async def handle(
        self, raw: bytes, *, destination: str, replay: Replay
    ) -> contract.CommandResult:
        """The outcome of one command message received from `destination`; raises nothing but
        a cancel and what `replay` raises."""
        if self._security is None:
            self.rejected += 1
            self.refusals["unknown_key"] += 1
            log.warning("command_rejected", destination=destination, reason="unknown_key")
            return contract.CommandResult(
                None, None, "rejected", "unknown_key", "this gateway trusts no keys ([security])"
            )
        try:
            command = auth.verify_command(
                raw,
                trust=self._security.trust,
                now_ms=self._clock_ms(),
                site=self._site,
                replay=self._replay,
                window=self._security.window,
            )
        except auth.CommandRejected as exc:
            self.rejected += 1
            self.refusals[exc.reason] += 1
            command_id, name = _peek(raw)
            log.warning(
                "command_rejected",
                destination=destination,
                reason=exc.reason,
                detail=exc.detail,
                command_id=command_id,
                command=name,
            )
            return contract.CommandResult(command_id, name, "rejected", exc.reason, exc.detail)
        except Exception as exc:  # the boundary: a bug of ours must not end the session
            detail = "the gateway could not check this command"
            return self.refused(
                INTERNAL_ERROR, raw=raw, detail=detail, destination=destination, error=exc
            )
        self.accepted += 1
        log.info(
            "command_accepted",
            destination=destination,
            command=command.command,
            command_id=command.id,
            issuer=command.issuer,
            args=command.args,
        )
        try:
            result = await self._dispatch(command, destination, replay)
        except _ReplayFailed as exc:
            assert exc.__cause__ is not None
            raise exc.__cause__ from None
        except BadArgs as exc:
            return self._failed(command, "bad_args", str(exc))
        except UnknownAlarm as exc:
            return self._failed(command, "unknown_alarm", str(exc) or "no open alarm with that id")
        except UnknownDevice as exc:
            return self._failed(command, "unknown_device", str(exc))
        except DriverError as exc:
            return self._failed(command, "device_error", str(exc))
        except Exception as exc:  # the boundary: a bug of ours must not end the session
            log.error("command_error", command=command.command, command_id=command.id, exc_info=exc)
            return self._failed(command, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        return contract.CommandResult(command.id, command.command, "done", result=result)

    def _failed(self, command: auth.Command, reason: str, detail: str) -> contract.CommandResult:
        self.refusals[reason] += 1
        log.warning(
            "command_failed",
            command=command.command,
            command_id=command.id,
            reason=reason,
            detail=detail,
        )
        return contract.CommandResult(command.id, command.command, "failed", reason, detail)

    async def _dispatch(
        self, command: auth.Command, destination: str, replay: Replay
    ) -> dict[str, Any]:
        args, name = command.args, command.command
        if name == "acknowledge":
            _only(args, "alarm_id", "by")
            alarm_id = _str_arg(args, "alarm_id")
            await self._target.acknowledge(
                alarm_id, by=_str_arg(args, "by"), issuer=command.issuer, command_id=command.id
            )
            return {"alarm_id": alarm_id}
        if name == "reset":
            _only(args, "alarm_id", "by")
            alarm_id = _str_arg(args, "alarm_id")
            await self._target.reset(alarm_id, by=_str_arg(args, "by"))
            return {"alarm_id": alarm_id}
        if name in ("bollard.raise", "bollard.lower"):
            _only(args, "device")
            device = self._device(_str_arg(args, "device"), "bollard")
            return await self._target.device_command(device, name.split(".")[1], {})
        if name == "unlock":
            _only(args, "device", "door", "open_s")
            device = self._device(_str_arg(args, "device"), "access_controller")
            door, open_s = _int_arg(args, "door", 1, 255), _int_arg(args, "open_s", 0, 255, 0)
            door_args: dict[str, object] = {"door": door, "open_s": open_s}
            return await self._target.device_command(device, "unlock", door_args)
        if name in ("lockdown", "lockdown.release"):
            _only(args, "device")
            verb = "lockdown" if name == "lockdown" else "release_lockdown"
            return await self._each_controller(args, verb, {})
        if name in ("drill.start", "drill.stop"):
            start = name == "drill.start"
            _only(args, "minutes", "by") if start else _only(args, "by")
            minutes = _int_arg(args, "minutes", 1, 24 * 60, DEFAULT_DRILL_MINUTES) if start else 0
            by = _str_arg(args, "by") if "by" in args else command.issuer
            await self._target.drill(start=start, minutes=minutes, by=by)
            return {"drill": True, "minutes": minutes} if start else {"drill": False}
        if name == "time.set":
            _only(args, "time")
            clock_args: dict[str, object] = {}
            if "time" in args:
                clock_args["time_ms"] = _epoch_ms(_str_arg(args, "time"))
            return await self._each_controller({}, "set_clock", clock_args)
        if name == "replay":
            _only(args, "from_seq", "to_seq")
            first, last = (
                _int_arg(args, "from_seq", 1, MAX_SEQ),
                _int_arg(args, "to_seq", 1, MAX_SEQ),
            )
            if not first <= last or last - first >= MAX_REPLAY_SPAN:
                raise BadArgs(f"need 1 <= from_seq <= to_seq, at most {MAX_REPLAY_SPAN} apart")
            try:
                seqs = await replay(first, last)
            except Exception as exc:
                raise _ReplayFailed from exc
            return {"destination": destination, "from_seq": first, "to_seq": last, "seqs": seqs}
        raise BadArgs(f"no handler for {name}")  # auth.COMMANDS and this list move together

    def _device(self, device_id: str, kind: str) -> str:
        if device_id not in self._target.devices_of_kind(kind):
            raise UnknownDevice(f"no {kind} named {device_id!r}")
        return device_id

    async def _each_controller(
        self, args: Mapping[str, Any], verb: str, call_args: Mapping[str, object]
    ) -> dict[str, Any]:
        if "device" in args:
            devices = [self._device(_str_arg(args, "device"), "access_controller")]
        else:
            devices = self._target.devices_of_kind("access_controller")
        results: dict[str, object] = {}
        errors: list[str] = []
        # One controller that does not answer must not keep the others unlocked or locked.
        for device in devices:
            try:
                results[device] = await self._target.device_command(device, verb, call_args)
            except DriverError as exc:
                errors.append(f"{device}: {exc}")
        if errors:
            raise DriverError("; ".join(errors))
        return {"devices": results}


def _epoch_ms(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadArgs("time must be ISO 8601 with an offset") from None
    if when.utcoffset() is None:
        raise BadArgs("time must carry a UTC offset")
    return round(when.timestamp() * 1000)


def _peek(raw: bytes) -> tuple[str | None, str | None]:
    """The id and name of a refused command, when they can be read, for the answer."""
    try:
        obj = json.loads(raw[: auth.MAX_COMMAND_BYTES])
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    command_id, name = obj.get("id"), obj.get("command")
    return (
        command_id[:64] if isinstance(command_id, str) else None,
        name[:64] if isinstance(name, str) else None,
    )
