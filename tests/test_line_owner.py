"""drivers.lines.owner.LineOwner: the lifecycle and the request accounting both line owners share.

A small owner over our own seam (`_turn`, `_ensure_open`, `_shut`) with no port behind it; the
real owners are covered end to end by test_modbus_line.py and test_serial_line.py.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from drivers.base import DeviceProtocolError, DeviceTimeout, LineError
from drivers.lines.owner import LineOwner, Turn


class SeenLock:
    """A lock that says when someone has come to take it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.asked = asyncio.Event()

    def locked(self) -> bool:
        return self.lock.locked()

    async def __aenter__(self) -> None:
        self.asked.set()
        await self.lock.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.lock.release()


class Owner(LineOwner):
    def __init__(self) -> None:
        super().__init__("test", "fake", None)
        self.lock = SeenLock()
        self.open_error: LineError | None = None
        self.calls: list[str] = []

    def _turn(self) -> Turn:
        return self.lock

    async def _ensure_open(self) -> None:
        self.calls.append("open")
        if self.open_error is not None:
            raise self.open_error

    async def _shut(self) -> None:
        self.calls.append("shut")

    async def request(self, unit: int, outcome: Exception | None) -> str:
        return await self._attempt(unit, self.lock, self._answer, outcome)

    async def _answer(self, outcome: Exception | None) -> str:
        assert self.lock.locked()  # the work runs under the turn
        if outcome is not None:
            raise outcome
        return "answer"


async def test_async_with_connects_and_closes() -> None:
    owner = Owner()
    async with owner:
        assert owner.calls == ["open"]
    assert owner.calls == ["open", "shut"]
    assert owner._closed


async def test_a_line_that_will_not_open_is_logged_once_and_raises() -> None:
    with capture_logs() as logs:
        owner = Owner()
        owner.open_error = LineError("cannot open line test: no such port")
        for _ in range(2):
            with pytest.raises(LineError, match="no such port"):
                await owner.connect()
    assert [e["event"] for e in logs] == ["fake_line_failing"]


async def test_close_does_not_wait_for_the_turn_but_drop_connection_does() -> None:
    owner = Owner()
    async with owner.lock.lock:
        await owner.close()  # would hang here if it waited for the held turn
        assert owner.calls == ["shut"]
        dropping = asyncio.create_task(owner.drop_connection())
        await owner.lock.asked.wait()  # it has come to the turn, and the turn is ours
        assert not dropping.done() and owner.calls == ["shut"]
    await dropping
    assert owner.calls == ["shut", "shut"]


async def test_a_request_is_counted_and_its_failures_noted_then_cleared() -> None:
    with capture_logs() as logs:
        owner = Owner()
        assert await owner.request(3, None) == "answer"
        with pytest.raises(DeviceTimeout):
            await owner.request(3, DeviceTimeout("unit 3 silent"))
        with pytest.raises(DeviceProtocolError):
            await owner.request(3, DeviceProtocolError("short answer"))
        assert await owner.request(3, None) == "answer"
    assert owner._health.counts == (4, 2, 1)
    assert [e["event"] for e in logs] == ["fake_unit_failing", "fake_unit_recovered"]
    assert not owner.lock.locked()


async def test_an_exception_that_is_not_a_driver_error_is_neither_a_failure_nor_an_answer() -> None:
    owner = Owner()
    with capture_logs() as logs:
        with pytest.raises(DeviceTimeout):
            await owner.request(5, DeviceTimeout("unit 5 silent"))
        with pytest.raises(ValueError, match="a bug"):
            await owner.request(5, ValueError("a bug"))
    assert owner._health.counts == (2, 1, 1)
    assert [e["event"] for e in logs] == ["fake_unit_failing"]  # not recovered by the bug
    assert not owner.lock.locked()  # the turn is given back however the request ended
