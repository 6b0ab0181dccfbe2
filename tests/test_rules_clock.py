"""The injected clock: FakeClock wakes sleepers in deadline order, steps the wall alone, and
SystemClock answers with real time."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.clock import Clock, FakeClock, SystemClock


async def test_advance_wakes_due_sleepers_in_deadline_order_and_no_others() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.TaskGroup() as tg:
        for name, seconds in (("c", 30.0), ("a", 10.0), ("b", 20.0), ("late", 100.0)):
            tg.create_task(sleeper(name, seconds))
        await clock.settle()
        assert clock.sleepers == 4
        clock.advance(30.0)
        await clock.settle()
        assert woke == ["a", "b", "c"]
        assert clock.sleepers == 1
        clock.advance(70.0)
    assert woke == ["a", "b", "c", "late"]


async def test_advance_moves_wall_with_monotonic_and_set_wall_steps_only_the_wall() -> None:
    clock = FakeClock(wall_ms=1_000_000, monotonic=5.0)
    clock.advance(2.5)
    assert (clock.wall_ms(), clock.monotonic()) == (1_002_500, 7.5)
    clock.set_wall(1_002_500 - 3_600_000)
    assert (clock.wall_ms(), clock.monotonic()) == (1_002_500 - 3_600_000, 7.5)


async def test_a_wall_step_wakes_nobody() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(10.0))
    await clock.settle()
    clock.set_wall(clock.wall_ms() + 3_600_000)
    await clock.settle()
    assert not task.done()
    clock.advance(10.0)
    await task


async def test_run_for_wakes_a_task_that_sleeps_again_within_the_span() -> None:
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1.0)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await clock.settle()
    await clock.run_for(3.0)
    assert task.done()
    assert ticks == [1001.0, 1002.0, 1003.0]


async def test_a_cancelled_sleeper_is_skipped() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5.0))
    await clock.settle()
    task.cancel()
    await clock.settle()
    assert clock.sleepers == 0
    assert clock.next_deadline() is None
    clock.advance(10.0)
    assert task.cancelled()


async def test_negative_advance_is_refused_and_zero_sleep_returns() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1.0)
    with pytest.raises(ValueError, match="never goes back"):
        await clock.run_for(-1.0)
    await clock.sleep(0)


async def test_system_clock_is_a_clock() -> None:
    clock: Clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= before
    assert clock.wall_ms() > 1_700_000_000_000


async def test_sleeping_returns_once_enough_tasks_sleep_on_the_clock() -> None:
    clock = FakeClock()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(clock.sleep(5.0))
        async with asyncio.timeout(5):
            await clock.sleeping()
        second = tg.create_task(clock.sleep(9.0))
        async with asyncio.timeout(5):
            await clock.sleeping(2)
        assert clock.sleepers == 2
        second.cancel()
        await clock.run_for(5.0)
    assert clock.sleepers == 0
