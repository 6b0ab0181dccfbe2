"""What each op of the local control socket does (`schoolgate alarms`, `status`, `reset`,
`command`, `test start|stop|report`, `watch`, `drill`), once the asker's right is checked and the
request's fields are read.

Owns one handler per op: it takes the `ControlTarget` (the running gateway), the parsed request
and the asking `Peer`, and returns the fields of an `{"ok": true, ...}` answer; a refusal is a
`control.RequestError` with its sentence.

It does not parse lines, check rights or catch errors (gateway.commands.control, .access,
.local_ops), nor say which op runs which handler (gateway.commands.registry).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol

import structlog

from drivers.base import DriverError
from gateway.alarms.latch import Latch, UnknownAlarm
from gateway.alarms.test_mode import TestModeError
from gateway.commands.args import (
    DeviceRequest,
    DrillRequest,
    LedgerCloseRequest,
    NoFields,
    ResetRequest,
    TestStartRequest,
    TestStopRequest,
    WatchRequest,
)
from gateway.commands.control import Peer, RequestError, Stream
from gateway.core import contract
from gateway.rules.ledger import LedgerError

log = structlog.get_logger(__name__)

Answer = dict[str, Any]
DEFAULT_RESET_BY = "gateway console"


class ControlTarget(Protocol):
    """What the control socket's ops read and act on: the running gateway implements this."""

    @property
    def site(self) -> contract.Site: ...

    def open_alarms(self) -> Sequence[Latch]: ...

    async def alarm_delivery(self, alarm_ids: Sequence[str]) -> Mapping[str, Mapping[str, bool]]:
        """alarm id -> destination -> whether that broker has taken (PUBACK) the alarm."""
        ...

    def status_report(self) -> Answer: ...

    async def reset_by_user(self, alarm_id: str, *, by: str, uid: int, user: str) -> None: ...

    def has_device(self, device_id: str) -> bool: ...

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]: ...

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None: ...

    async def test_mode_start(self, *, minutes: int, by: str) -> int:
        """Test mode on (TestModeError when it is on already); its end, wall ms."""
        ...

    async def test_mode_stop(self, *, by: str) -> None: ...

    async def test_receipts(self) -> list[dict[str, Any]]:
        """gateway.store.sql.test_receipts of the store."""
        ...

    def watch(self, device: str | None) -> AsyncGenerator[dict[str, Any], None]: ...

    async def drill(self, *, start: bool, minutes: int, by: str) -> None: ...


async def alarms(target: ControlTarget, request: NoFields, peer: Peer) -> Answer:
    """Each latched alarm, where it is (stored; which brokers have it) and who acknowledged it."""
    tz = target.site.tz
    latches = target.open_alarms()
    delivery = await target.alarm_delivery([latch.alarm_id for latch in latches])
    return {
        "alarms": [
            {
                "alarm_id": latch.alarm_id,
                "device": latch.device_id,
                "button": latch.button,
                "raised_at": contract.iso_ms(latch.raised_at_ms, tz),
                "presses": latch.presses,
                "stored": True,  # a latch exists only once its event is on disk
                "delivered": dict(delivery.get(latch.alarm_id, {})),
                "acknowledged": latch.acknowledged,
                "acknowledged_by": latch.acknowledged_by or None,
                "acknowledged_at": None
                if latch.acknowledged_at_ms is None
                else contract.iso_ms(latch.acknowledged_at_ms, tz),
                "escalated": latch.escalated,
            }
            for latch in latches
        ]
    }


async def status(target: ControlTarget, request: NoFields, peer: Peer) -> Answer:
    return target.status_report()


def resolve_alarm_id(latches: Sequence[Latch], given: str) -> str:
    """The open alarm whose id is `given` or starts with it (a unique prefix will do, as git's
    short hashes); RequestError naming the candidates when none or several match."""
    ids = [latch.alarm_id for latch in latches]
    if given in ids:
        return given
    matches = [alarm_id for alarm_id in ids if given and alarm_id.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RequestError(f"no latched alarm with id {given} (`schoolgate alarms` lists them)")
    raise RequestError(
        f"alarm id prefix {given!r} is ambiguous: it matches {', '.join(sorted(matches))}; "
        "give more characters"
    )


async def reset(target: ControlTarget, request: ResetRequest, peer: Peer) -> Answer:
    alarm_id = resolve_alarm_id(target.open_alarms(), request.alarm_id)
    by = request.by or DEFAULT_RESET_BY
    try:
        await target.reset_by_user(alarm_id, by=by, uid=peer.uid, user=peer.user)
    except UnknownAlarm:
        raise RequestError(f"no latched alarm with id {alarm_id}") from None
    return {"reset": alarm_id}


async def command(target: ControlTarget, request: DeviceRequest, peer: Peer) -> Answer:
    device_id, name, args = request.device, request.name, request.args
    if not target.has_device(device_id):
        raise RequestError(f"no device {device_id!r}")
    try:
        result = await target.device_command(device_id, name, args)
    except DriverError as exc:
        raise RequestError(f"{device_id}: {exc}") from None
    log.info(
        "device_command",
        device=device_id,
        command=name,
        args=args,
        by=request.by or "",
        **peer.fields(),
    )
    return {"device": device_id, "result": result}


async def ledger_close(target: ControlTarget, request: LedgerCloseRequest, peer: Peer) -> Answer:
    by = request.by or peer.user
    try:
        await target.ledger_close(request.entry, by=by, note=request.note)
    except LedgerError as exc:
        raise RequestError(str(exc)) from None
    log.info("ledger_closed_by_hand", entry=request.entry, by=by, **peer.fields())
    return {"entry": request.entry, "closed_by": by}


def _asker(by: str | None, peer: Peer) -> str:
    return by or peer.user


async def test_start(target: ControlTarget, request: TestStartRequest, peer: Peer) -> Answer:
    by = _asker(request.by, peer)
    try:
        until_ms = await target.test_mode_start(minutes=request.minutes, by=by)
    except TestModeError as exc:
        raise RequestError(str(exc)) from None
    log.warning("test_mode_asked", minutes=request.minutes, by=by, **peer.fields())
    return {"test_mode": True, "until": contract.iso_ms(until_ms, target.site.tz)}


async def test_stop(target: ControlTarget, request: TestStopRequest, peer: Peer) -> Answer:
    try:
        await target.test_mode_stop(by=_asker(request.by, peer))
    except TestModeError as exc:
        raise RequestError(str(exc)) from None
    return {"test_mode": False}


async def test_report(target: ControlTarget, request: NoFields, peer: Peer) -> Answer:
    """Each press of the last walk test, timed hop by hop (times in site time)."""
    tz = target.site.tz

    def at(ms: object) -> str | None:
        return contract.iso_ms(ms, tz) if isinstance(ms, int) else None

    presses = []
    for receipt in await target.test_receipts():
        seen = receipt["seen_ms"]
        presses.append(
            {
                **{k: receipt[k] for k in ("seq", "type", "alarm_id", "device", "button")},
                "seen": at(seen),
                "stored_after_ms": receipt["stored_ms"] - seen,
                "puback_after_ms": {
                    name: None if sent is None else sent - seen
                    for name, sent in receipt["sent_ms"].items()
                },
                "acknowledged_after_ms": None
                if receipt["acked_ms"] is None
                else receipt["acked_ms"] - seen,
                "acknowledged_by": receipt["acked_by"],
            }
        )
    return {"presses": presses}


async def watch(target: ControlTarget, request: WatchRequest, peer: Peer) -> Stream:
    device = request.device or None
    if device is not None and not target.has_device(device):
        raise RequestError(f"no device {device!r}")
    return Stream({"watching": device or "*"}, target.watch(device))


async def drill(target: ControlTarget, request: DrillRequest, peer: Peer) -> Answer:
    """The school starts (or ends) a drill on the box: the drill's start and stop events go to
    the police too (gateway.alarms.drill), stored before this answers."""
    by = request.by or DEFAULT_RESET_BY
    await target.drill(start=request.start, minutes=request.minutes, by=by)
    log.warning(
        "drill_by_school", start=request.start, minutes=request.minutes, by=by, **peer.fields()
    )
    return {"drill": request.start, "minutes": request.minutes if request.start else 0}
