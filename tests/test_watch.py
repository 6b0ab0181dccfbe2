"""The live monitor's parts: the hub that fans the daemon's reads and stored events out to
watchers (changes only, a first view of the last reads, a device filter, a bounded queue that
counts what it dropped), and the control socket's streaming answer (a watcher that closes its
end ends the daemon's side: its generator is closed, nothing is left running)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.commands import control
from gateway.commands.watch import WatchHub
from gateway.core import contract
from gateway.core.events import DeviceRef, Severity, new_event

TZ = ZoneInfo("Asia/Shanghai")
NOW_MS = 1_795_000_000_000


def hub(queue_size: int = 100) -> WatchHub:
    return WatchHub(
        {("io", 1): "box", ("io", 2): "meter"}, TZ, lambda: NOW_MS, queue_size=queue_size
    )


async def take(items: AsyncGenerator[dict[str, Any], None], count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        return [await anext(items) for _ in range(count)]


async def test_changes_only_with_what_changed_and_a_first_view() -> None:
    watch = hub()
    tap = watch.line_tap("io")
    tap(1, "discrete_input", 0, [False, False, True])  # before anyone watches: the first view
    items = watch.subscribe("box")
    [first] = await take(items, 1)
    assert first["values"] == [0, 0, 1] and first["changed"] == []
    tap(1, "discrete_input", 0, [False, False, True])  # the same again: nothing
    tap(2, "input_register", 0, [230])  # another device: filtered out
    tap(9, "coil", 0, [True])  # a unit no device is at (a scan): not ours
    tap(1, "discrete_input", 0, [True, False, True])
    [pressed] = await take(items, 1)
    assert pressed == {
        "kind": "read",
        "device": "box",
        "table": "discrete_input",
        "address": 0,
        "values": [1, 0, 1],
        "changed": [0],
        "at": contract.iso_ms(NOW_MS, TZ),
    }
    assert watch.watchers == 1
    await items.aclose()
    assert watch.watchers == 0


async def test_events_and_every_device_without_a_filter() -> None:
    watch = hub()
    watch.line_tap("io")(1, "coil", 0, [False])
    items = watch.subscribe(None)
    await take(items, 1)  # the first view; from here on it is subscribed
    watch.line_tap("io")(2, "input_register", 4, [230, 231])
    door = DeviceRef("doors", "access_controller", "")
    watch.event(
        new_event(
            "access.card", door, severity=Severity.INFO, occurred_at_ms=NOW_MS, data={"card": "7"}
        )
    )
    read, event = await take(items, 2)
    assert (read["device"], read["changed"]) == ("meter", [0, 1])
    assert event == {
        "kind": "event",
        "device": "doors",
        "type": "access.card",
        "data": {"card": "7"},
        "at": contract.iso_ms(NOW_MS, TZ),
    }
    await items.aclose()


async def test_a_slow_watcher_loses_the_overflow_and_is_told_how_much() -> None:
    watch = hub(queue_size=2)
    tap = watch.line_tap("io")
    tap(1, "holding_register", 0, [100])
    items = watch.subscribe("box")
    [first] = await take(items, 1)  # the first view; from here on it is subscribed
    assert first["values"] == [100]
    for value in range(5):  # the watcher reads nothing meanwhile
        tap(1, "holding_register", 0, [value])
    assert [item["values"] for item in await take(items, 2)] == [[0], [1]]
    tap(1, "holding_register", 0, [9])
    [after] = await take(items, 1)
    assert after["values"] == [9] and after["dropped"] == 3
    await items.aclose()


async def test_a_stream_ends_when_the_watcher_closes_its_end(tmp_path: Path) -> None:
    closed = asyncio.Event()
    more = asyncio.Event()

    async def items() -> AsyncGenerator[dict[str, Any], None]:
        try:
            yield {"n": 1}
            await more.wait()
            yield {"n": 2}
            await asyncio.Event().wait()  # nothing more, ever: only a close ends this
        finally:
            closed.set()

    async def handler(request: dict[str, Any], peer: control.Peer) -> control.Stream:
        return control.Stream({"watching": "*"}, items())

    sock = tmp_path / "c.sock"
    async with control.serve(sock, handler):
        stream = control.stream(sock, {"op": "watch"})
        assert await anext(stream) == {"ok": True, "watching": "*"}
        assert await anext(stream) == {"n": 1}
        more.set()
        assert await anext(stream) == {"n": 2}
        await stream.aclose()  # the client goes away
        async with asyncio.timeout(5):
            await closed.wait()  # the daemon's side noticed and closed the items


async def test_a_refused_stream_is_a_control_error(tmp_path: Path) -> None:
    async def handler(request: dict[str, Any], peer: control.Peer) -> dict[str, Any]:
        raise control.RequestError("no device 'gate'")

    sock = tmp_path / "c.sock"
    async with control.serve(sock, handler):
        stream = control.stream(sock, {"op": "watch", "device": "gate"})
        with pytest.raises(control.ControlError, match="no device 'gate'"):
            await anext(stream)
        await stream.aclose()
