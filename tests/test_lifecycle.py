"""gateway.core.lifecycle.AsyncResource: `async with` opens, and closes however the block ends."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.lifecycle import AsyncResource


class Recorder(AsyncResource):
    def __init__(self, *, fail_open: bool = False) -> None:
        self.calls: list[str] = []
        self._fail_open = fail_open

    async def open(self) -> None:
        self.calls.append("open")
        if self._fail_open:
            raise OSError("cannot open")

    async def close(self) -> None:
        self.calls.append("close")


async def test_the_block_gets_the_resource_opened_and_it_is_closed_after() -> None:
    resource = Recorder()
    async with resource as entered:
        assert entered is resource
        resource.calls.append("body")
    assert resource.calls == ["open", "body", "close"]


async def test_an_exception_in_the_block_closes_and_is_not_swallowed() -> None:
    resource = Recorder()
    with pytest.raises(ValueError, match="inside"):
        async with resource:
            raise ValueError("inside")
    assert resource.calls == ["open", "close"]


async def test_a_cancel_in_the_block_closes() -> None:
    resource = Recorder()
    entered = asyncio.Event()

    async def hold() -> None:
        async with resource:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resource.calls == ["open", "close"]


async def test_a_failed_open_runs_no_block_and_no_close() -> None:
    resource = Recorder(fail_open=True)
    with pytest.raises(OSError, match="cannot open"):
        async with resource:
            resource.calls.append("body")
    assert resource.calls == ["open"]
