"""Commands from the police and bureau side: verify, act, answer.

Owns what happens to a command message after the uplink receives it: verification
(`gateway.core.auth`: signature by a trusted key allowed that command, freshness, replay), then
the command as gateway.commands.registry declares it: its arguments read by its model, its
handler (gateway.commands.remote) run against the part of the gateway that acts (the
`CommandTarget`); and the outcome every sender gets back (`contract.CommandResult`): done,
rejected with the authentication reason, or failed with why. Every refusal is logged and
counted by reason. Nothing but a verified, well-formed command reaches the target.

It is a boundary (issue 10): `handle` never raises for what a sender put in the message. Numbers
are range-checked when the arguments are read; an unexpected error in verification or in the
target becomes a refusal with reason `internal_error` (logged with its traceback), so one bad
message cannot end the uplink session that received it.

It does not subscribe or publish (the uplink does), and does not know how a device does a thing
(drivers do).
"""

from __future__ import annotations

import json
from collections import Counter

import structlog

from drivers.base import DriverError
from gateway.alarms.latch import UnknownAlarm
from gateway.commands.args import MAX_REPLAY_SPAN, MAX_SEQ, BadArgs
from gateway.commands.registry import REMOTE
from gateway.commands.remote import Call, CommandTarget, Replay, ReplayFailed, UnknownDevice
from gateway.core import auth, contract
from gateway.core.clock import Clock, SystemClock
from gateway.rules.ledger import LedgerError
from gateway.security import Security

__all__ = [
    "INTERNAL_ERROR",
    "MAX_REPLAY_SPAN",
    "MAX_SEQ",
    "BadArgs",
    "CommandTarget",
    "Commands",
    "Replay",
    "UnknownDevice",
]

log = structlog.get_logger(__name__)

INTERNAL_ERROR = "internal_error"
"""The reason of a refusal caused by an error of ours, not by the command."""


class Commands:
    def __init__(
        self,
        site: contract.Site,
        security: Security | None,
        target: CommandTarget,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._site = site
        self._security = security
        self._target = target
        self._clock = clock or SystemClock()
        # One cache for every destination: a command replayed through the other broker is
        # still a replay.
        self._replay = auth.ReplayCache(since_ms=self._clock.wall_ms() - 1)
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
                now_ms=self._clock.wall_ms(),
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
            call = Call(self._target, command, destination, replay)
            result = await REMOTE[command.command].run(call, command.args)
        except ReplayFailed as exc:
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
        except LedgerError as exc:
            return self._failed(command, "ledger_refused", str(exc))
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
