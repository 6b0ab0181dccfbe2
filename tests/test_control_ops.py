"""The control socket's ops come from the command registry: the asker's right, the op's request
model and its handler (gateway.commands.local_ops), against our own `ControlTarget` seam; and the
`schoolgate command` words are read by the same model (gateway.commands.words)."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import CommandError
from gateway.alarms.latch import Latch, UnknownAlarm
from gateway.alarms.test_mode import TestModeError
from gateway.commands import access, words
from gateway.commands.access import ControlAccess
from gateway.commands.args import BadArgs
from gateway.commands.control import Peer, RequestError, Stream
from gateway.commands.local_ops import LocalOps
from gateway.commands.registry import LOCAL
from gateway.core import contract
from gateway.rules.ledger import EntryNotFound

ME = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())


@dataclass
class Target:
    """The gateway as the control socket sees it: one box, one open alarm."""

    resets: list[tuple[str, str, int]] = field(default_factory=list)
    commands: list[tuple[str, str, Mapping[str, object]]] = field(default_factory=list)
    closed: list[tuple[str, str, str]] = field(default_factory=list)
    alarm_ids: tuple[str, ...] = ("a-1",)
    test_until_ms: int | None = None
    tests: list[tuple[str, int | str]] = field(default_factory=list)
    drills: list[tuple[bool, int, str]] = field(default_factory=list)

    @property
    def site(self) -> contract.Site:
        return contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))

    def open_alarms(self) -> Sequence[Latch]:
        return [Latch(alarm_id, "box", 0, 1_795_000_000_000, 2) for alarm_id in self.alarm_ids]

    async def alarm_delivery(self, alarm_ids: Sequence[str]) -> Mapping[str, Mapping[str, bool]]:
        return {alarm_id: {"police": True, "bureau": False} for alarm_id in alarm_ids}

    def status_report(self) -> dict[str, Any]:
        return {"open_alarms": 1}

    async def reset_by_user(self, alarm_id: str, *, by: str, uid: int, user: str) -> None:
        if alarm_id not in self.alarm_ids:
            raise UnknownAlarm(alarm_id)
        self.resets.append((alarm_id, by, uid))

    def has_device(self, device_id: str) -> bool:
        return device_id == "box"

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None:
        if entry_id != "20261124-001":
            raise EntryNotFound(f"no ledger entry {entry_id!r}")
        self.closed.append((entry_id, by, note))

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        if name == "explode":
            raise CommandError("no such command")
        self.commands.append((device_id, name, args))
        return {"done": name}

    async def test_mode_start(self, *, minutes: int, by: str) -> int:
        if self.test_until_ms is not None:
            raise TestModeError("test mode is already on")
        self.tests.append((by, minutes))
        self.test_until_ms = 1_795_000_000_000 + minutes * 60_000
        return self.test_until_ms

    async def test_mode_stop(self, *, by: str) -> None:
        if self.test_until_ms is None:
            raise TestModeError("test mode is not on")
        self.tests.append((by, "stop"))
        self.test_until_ms = None

    async def test_receipts(self) -> list[dict[str, Any]]:
        seen = 1_795_000_000_000
        return [
            {
                "seq": 7,
                "type": "alarm.panic",
                "alarm_id": "a-1",
                "device": "box",
                "button": 0,
                "seen_ms": seen,
                "stored_ms": seen + 12,
                "sent_ms": {"bureau": None, "police": seen + 40},
                "acked_ms": seen + 2_500,
                "acked_by": "Officer Li",
            }
        ]

    async def _items(self, device: str | None) -> AsyncGenerator[dict[str, Any], None]:
        yield {"kind": "read", "device": device or "box", "values": [1]}

    def watch(self, device: str | None) -> AsyncGenerator[dict[str, Any], None]:
        return self._items(device)

    async def drill(self, *, start: bool, minutes: int, by: str) -> None:
        self.drills.append((start, minutes, by))


def ops(target: Target | None = None) -> LocalOps:
    return LocalOps(target or Target(), ControlAccess(daemon_uid=ME.uid))


async def answer(target: Target, request: dict[str, Any]) -> dict[str, Any]:
    result = await ops(target).handle(request, ME)
    assert isinstance(result, dict)
    return result


async def test_each_op_of_the_registry_answers() -> None:
    target = Target()
    answers: dict[str, Any] = {
        "alarms": await answer(target, {"op": "alarms"}),
        "status": await answer(target, {"op": "status"}),
        "reset": await answer(target, {"op": "reset", "alarm_id": "a-1"}),
        "command": await answer(
            target, {"op": "command", "device": "box", "name": "lamp", "args": {"on": True}}
        ),
        "ledger_close": await ops(target).handle(
            {"op": "ledger_close", "entry": "20261124-001", "note": "cable replaced"}, ME
        ),
        "test.start": await answer(target, {"op": "test.start", "minutes": 20}),
        "test.report": await answer(target, {"op": "test.report"}),
        "test.stop": await answer(target, {"op": "test.stop", "by": "installer"}),
        "watch": await ops(target).handle({"op": "watch", "device": "box"}, ME),
        "drill": await ops(target).handle({"op": "drill", "start": True, "minutes": 20}, ME),
    }
    assert set(answers) == set(LOCAL)
    alarm = answers["alarms"]["alarms"][0]
    assert alarm["raised_at"].endswith("+08:00")
    assert alarm["delivered"] == {"police": True, "bureau": False}
    assert alarm["acknowledged"] is False and alarm["acknowledged_by"] is None
    assert answers["test.start"] == {"test_mode": True, "until": "2026-11-18T19:26:40.000+08:00"}
    assert target.tests == [(ME.user, 20), ("installer", "stop")]
    press = answers["test.report"]["presses"][0]
    assert press["stored_after_ms"] == 12
    assert press["puback_after_ms"] == {"bureau": None, "police": 40}
    assert press["acknowledged_after_ms"] == 2_500
    assert press["acknowledged_by"] == "Officer Li"
    watch = answers["watch"]
    assert isinstance(watch, Stream)
    assert watch.first == {"watching": "box"}
    assert [item async for item in watch.items] == [
        {"kind": "read", "device": "box", "values": [1]}
    ]
    assert answers["status"] == {"open_alarms": 1}
    assert answers["reset"] == {"reset": "a-1"}
    assert target.resets == [("a-1", "gateway console", ME.uid)]
    assert answers["command"] == {"device": "box", "result": {"done": "lamp"}}
    assert answers["ledger_close"] == {"entry": "20261124-001", "closed_by": ME.user}
    assert target.closed == [("20261124-001", ME.user, "cable replaced")]
    assert answers["drill"] == {"drill": True, "minutes": 20}
    assert target.drills == [(True, 20, "gateway console")]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "fly"}, "unknown op 'fly' (alarms, reset, command, status, ledger_close"),
        ({"op": "ledger_close", "entry": "20261124-001"}, "ledger_close needs a note"),
        ({"op": "ledger_close", "entry": "x", "note": "done"}, "no ledger entry 'x'"),
        ({"op": "status", "verbose": True}, "unknown field(s) ['verbose']; this op takes none"),
        ({"op": "reset", "alarm_id": 7}, "reset needs a string alarm_id"),
        ({"op": "reset", "alarm_id": "a-1", "by": "x" * 201}, "by is a name"),
        ({"op": "reset", "alarm_id": "a-2"}, "no latched alarm with id a-2"),
        ({"op": "test.stop"}, "test mode is not on"),
        ({"op": "test.start", "minutes": 0}, "minutes must be"),
        ({"op": "test.start", "minutes": "5"}, "minutes must be"),
        # every request's `by` is refused alike (test mode's said "non-empty", yet "" is allowed)
        ({"op": "test.start", "by": "x" * 201}, "by is a name"),
        ({"op": "test.stop", "by": "x" * 201}, "by is a name"),
        ({"op": "ledger_close", "entry": "e", "note": "n", "by": 5}, "by is a name"),
        ({"op": "drill", "start": True, "by": "x" * 201}, "by is a name"),
        ({"op": "command", "device": "box", "name": "lamp", "by": 5}, "by is a name"),
        ({"op": "watch", "device": "gate"}, "no device 'gate'"),
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


async def test_reset_takes_a_unique_prefix_and_names_the_candidates_otherwise() -> None:
    target = Target(alarm_ids=("0190aa-1111", "0190ab-2222", "0191cc-3333"))
    assert await answer(target, {"op": "reset", "alarm_id": "0191"}) == {"reset": "0191cc-3333"}
    assert target.resets == [("0191cc-3333", "gateway console", ME.uid)]
    with pytest.raises(RequestError, match="'0190a' is ambiguous: it matches 0190aa-1111, 0190ab"):
        await ops(target).handle({"op": "reset", "alarm_id": "0190a"}, ME)
    with pytest.raises(RequestError, match="no latched alarm with id 0192"):
        await ops(target).handle({"op": "reset", "alarm_id": "0192"}, ME)
    assert len(target.resets) == 1  # neither refusal reset anything


async def test_test_start_while_on_is_refused_with_what_to_do() -> None:
    target = Target(test_until_ms=1)
    with pytest.raises(RequestError, match="already on"):
        await ops(target).handle({"op": "test.start"}, ME)


def test_the_rights_are_the_registry_s() -> None:
    assert {"alarms", "status", "test.report", "watch"} == access.READ_OPS
    assert {"reset", "ledger_close", "test.start", "test.stop"} == access.RESET_OPS
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
