"""What each op of the local control socket does (`schoolgate alarms`, `status`, `reset`,
`command`, `drill`), once the asker's right is checked and the request's fields are read.

Owns one handler per op: it takes the `ControlTarget` (the running gateway), the parsed request
and the asking `Peer`, and returns the fields of an `{"ok": true, ...}` answer; a refusal is a
`control.RequestError` with its sentence.

It does not parse lines, check rights or catch errors (gateway.commands.control, .access,
.local_ops), nor say which op runs which handler (gateway.commands.registry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from drivers.base import DriverError
from gateway.alarms.latch import Latch, UnknownAlarm
from gateway.commands.args import DeviceRequest, DrillRequest, NoFields, ResetRequest
from gateway.commands.control import Peer, RequestError
from gateway.core import contract

log = structlog.get_logger(__name__)

Answer = dict[str, Any]
DEFAULT_RESET_BY = "gateway console"


class ControlTarget(Protocol):
    """What the control socket's ops read and act on: the running gateway implements this."""

    @property
    def site(self) -> contract.Site: ...

    def open_alarms(self) -> Sequence[Latch]: ...

    def status_report(self) -> Answer: ...

    async def reset_by_user(self, alarm_id: str, *, by: str, uid: int, user: str) -> None: ...

    def has_device(self, device_id: str) -> bool: ...

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]: ...

    async def drill(self, *, start: bool, minutes: int, by: str) -> None: ...


async def alarms(target: ControlTarget, request: NoFields, peer: Peer) -> Answer:
    tz = target.site.tz
    return {
        "alarms": [
            {
                "alarm_id": latch.alarm_id,
                "device": latch.device_id,
                "button": latch.button,
                "raised_at": contract.iso_ms(latch.raised_at_ms, tz),
                "presses": latch.presses,
            }
            for latch in target.open_alarms()
        ]
    }


async def status(target: ControlTarget, request: NoFields, peer: Peer) -> Answer:
    return target.status_report()


async def reset(target: ControlTarget, request: ResetRequest, peer: Peer) -> Answer:
    alarm_id, by = request.alarm_id, request.by or DEFAULT_RESET_BY
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


async def drill(target: ControlTarget, request: DrillRequest, peer: Peer) -> Answer:
    """The school starts (or ends) a drill on the box: the drill's start and stop events go to
    the police too (gateway.alarms.drill), stored before this answers."""
    by = request.by or DEFAULT_RESET_BY
    await target.drill(start=request.start, minutes=request.minutes, by=by)
    log.warning(
        "drill_by_school", start=request.start, minutes=request.minutes, by=by, **peer.fields()
    )
    return {"drill": request.start, "minutes": request.minutes if request.start else 0}
