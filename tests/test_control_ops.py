"""The control socket's ops come from the command registry: the asker's right, the op's request
model and its handler (gateway.commands.local_ops), against our own `ControlTarget` seam; and the
`schoolgate command` words are read by the same model (gateway.commands.words)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import CommandError
from gateway.alarms.latch import Latch, UnknownAlarm
from gateway.commands import access, words
from gateway.commands.access import ControlAccess
from gateway.commands.args import BadArgs
from gateway.commands.control import Peer, RequestError
from gateway.commands.local_ops import LocalOps
from gateway.commands.registry import LOCAL
from gateway.core import contract

ME = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())


@dataclass
class Target:
    """The gateway as the control socket sees it: one box, one open alarm."""

    resets: list[tuple[str, str, int]] = field(default_factory=list)
    commands: list[tuple[str, str, Mapping[str, object]]] = field(default_factory=list)
    drills: list[tuple[bool, int, str]] = field(default_factory=list)

    @property
    def site(self) -> contract.Site:
        return contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))

    def open_alarms(self) -> Sequence[Latch]:
        return [Latch("a-1", "box", 0, 1_795_000_000_000, 2)]

    def status_report(self) -> dict[str, Any]:
        return {"open_alarms": 1}

    async def reset_by_user(self, alarm_id: str, *, by: str, uid: int, user: str) -> None:
        if alarm_id != "a-1":
            raise UnknownAlarm(alarm_id)
        self.resets.append((alarm_id, by, uid))

    def has_device(self, device_id: str) -> bool:
        return device_id == "box"

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        if name == "explode":
            raise CommandError("no such command")
        self.commands.append((device_id, name, args))
        return {"done": name}

    async def drill(self, *, start: bool, minutes: int, by: str) -> None:
        self.drills.append((start, minutes, by))


def ops(target: Target | None = None) -> LocalOps:
    return LocalOps(target or Target(), ControlAccess(daemon_uid=ME.uid))


async def test_each_op_of_the_registry_answers() -> None:
    target = Target()
    answers = {
        "alarms": await ops(target).handle({"op": "alarms"}, ME),
        "status": await ops(target).handle({"op": "status"}, ME),
        "reset": await ops(target).handle({"op": "reset", "alarm_id": "a-1"}, ME),
        "command": await ops(target).handle(
            {"op": "command", "device": "box", "name": "lamp", "args": {"on": True}}, ME
        ),
        "drill": await ops(target).handle({"op": "drill", "start": True, "minutes": 20}, ME),
    }
    assert set(answers) == set(LOCAL)
    assert answers["alarms"]["alarms"][0]["raised_at"].endswith("+08:00")
    assert answers["status"] == {"open_alarms": 1}
    assert answers["reset"] == {"reset": "a-1"}
    assert target.resets == [("a-1", "gateway console", ME.uid)]
    assert answers["command"] == {"device": "box", "result": {"done": "lamp"}}
    assert answers["drill"] == {"drill": True, "minutes": 20}
    assert target.drills == [(True, 20, "gateway console")]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "fly"}, "unknown op 'fly' (alarms, reset, command, status, drill)"),
        ({"op": "status", "verbose": True}, "unknown field(s) ['verbose']; this op takes none"),
        ({"op": "reset", "alarm_id": 7}, "reset needs a string alarm_id"),
        ({"op": "reset", "alarm_id": "a-1", "by": "x" * 201}, "by is a name"),
        ({"op": "reset", "alarm_id": "a-2"}, "no latched alarm with id a-2"),
        ({"op": "command", "device": "box", "name": 5}, "command needs device, name and an args"),
        ({"op": "command", "device": "gate", "name": "lamp"}, "no device 'gate'"),
        ({"op": "command", "device": "box", "name": "explode"}, "box: no such command"),
        ({"op": "drill"}, "drill needs start: true or false"),
        ({"op": "drill", "start": True, "minutes": 0}, "minutes is a whole number from 1 to 1440"),
    ],
)
async def test_a_bad_request_is_refused_with_its_sentence(
    request_: dict[str, Any], error: str
) -> None:
    with pytest.raises(RequestError) as caught:
        await ops().handle(request_, ME)
    assert str(caught.value).startswith(error)


def test_the_rights_are_the_registry_s() -> None:
    assert {"alarms", "status"} == access.READ_OPS
    assert {"reset"} == access.RESET_OPS
    assert {"command", "drill"} == access.DEVICE_OPS
    assert {op.right for op in LOCAL.values()} == {"read", "reset", "device"}


def test_the_command_words_become_the_op_s_request() -> None:
    request = words.device_request("box", "lamp", ["on=yes", "ms=500", "mode=blink"], by="li")
    assert request == {
        "op": "command",
        "device": "box",
        "name": "lamp",
        "args": {"on": True, "ms": 500, "mode": "blink"},
        "by": "li",
    }


@pytest.mark.parametrize(
    ("items", "by", "error"),
    [
        (["on"], "li", "argument 'on' is not key=value"),
        (["=1"], "li", "argument '=1' is not key=value"),
        ([], "x" * 201, "by is a name"),
    ],
)
def test_command_words_the_op_would_refuse_are_refused_before_sending(
    items: list[str], by: str, error: str
) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("(", r"\(")) as caught:
        words.device_request("box", "lamp", items, by=by)
    assert isinstance(caught.value, BadArgs) == (error == "by is a name")
