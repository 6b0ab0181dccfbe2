"""The line arbiter's grant order (priority, FIFO, bounded overtaking, cancellation) and the poll
pacer's delays. No line and no clock: waiters are queued behind a held turn, then released."""

from __future__ import annotations

import asyncio

import pytest

from drivers.lines.arbiter import LineArbiter
from drivers.pacing import PollPacer


async def grant_order(arbiter: LineArbiter, waiters: list[tuple[str, int]]) -> list[str]:
    """Queue `waiters` (name, priority) in this order behind a held turn; the order they get it."""
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        async with arbiter.turn(priority):
            order.append(name)

    release = asyncio.Event()

    async def hold() -> None:
        async with arbiter.turn():
            await release.wait()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(hold())
        await asyncio.sleep(0)  # the holder takes the line
        for name, priority in waiters:
            tg.create_task(take(name, priority))
            await asyncio.sleep(0)  # each waiter queues before the next one arrives
        assert arbiter.waiting == len(waiters)
        release.set()
    assert not arbiter.locked()
    return order


async def test_uncontended_turn_is_immediate() -> None:
    arbiter = LineArbiter()
    async with arbiter.turn(5):
        assert arbiter.locked()
    assert not arbiter.locked() and arbiter.grants == 1


async def test_a_free_line_is_taken_without_yielding_to_the_loop() -> None:
    """The common case costs no loop turn: nothing scheduled meanwhile runs in between."""
    arbiter = LineArbiter()
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other")
    async with arbiter.turn():
        assert ran == []
    assert ran == []


@pytest.mark.parametrize(
    ("waiters", "expected"),
    [
        ([("a", 0), ("b", 0), ("c", 0)], "abc"),  # FIFO, like a plain lock
        ([("a", 0), ("b", 10), ("c", 0), ("d", 10)], "bdac"),  # priority, FIFO within it
        ([("a", 0), ("b", 5), ("c", 10)], "cba"),
        ([("a", -1), ("b", 0)], "ba"),
    ],
)
async def test_highest_priority_first_fifo_within(
    waiters: list[tuple[str, int]], expected: str
) -> None:
    assert "".join(await grant_order(LineArbiter(max_overtakes=100), waiters)) == expected


async def test_overtaken_waiter_is_served_after_the_bound() -> None:
    arbiter = LineArbiter(max_overtakes=2)
    order = await grant_order(arbiter, [("low", 0), ("h1", 10), ("h2", 10), ("h3", 10)])
    assert order == ["h1", "h2", "low", "h3"]
    assert arbiter.overtaken_grants == 1


async def test_no_starvation_under_a_steady_stream_of_high_priority_requests() -> None:
    """Two alarm boxes that always want the line again still let the others through."""
    arbiter = LineArbiter(max_overtakes=3)
    order: list[str] = []

    async def alarm_box(name: str) -> None:
        for _ in range(10):
            async with arbiter.turn(10):
                order.append(name)
                await asyncio.sleep(0)  # let the others queue while the line is held

    async def other(name: str) -> None:
        async with arbiter.turn(0):
            order.append(name)

    async with asyncio.TaskGroup() as tg:
        for name in "AB":
            tg.create_task(alarm_box(name))
        await asyncio.sleep(0)
        for name in "xyz":
            tg.create_task(other(name))
    served = "".join(order)
    assert [who for who in served if who in "xyz"] == ["x", "y", "z"]  # FIFO among equals
    # Without the bound x would wait for all 20 alarm turns; with it, each normal request is
    # overtaken at most 3 times after it queued.
    assert served.index("z") < 12
    assert served.endswith("AB" * 3)  # the alarm boxes still got every turn they asked for
    assert arbiter.overtaken_grants == 3


async def test_cancelled_waiter_leaves_the_queue() -> None:
    arbiter = LineArbiter()
    order: list[str] = []

    async def take(name: str) -> None:
        async with arbiter.turn():
            order.append(name)

    async with arbiter.turn():
        first = asyncio.create_task(take("first"))
        second = asyncio.create_task(take("second"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        assert arbiter.waiting == 1
    await second
    assert first.cancelled() and order == ["second"] and not arbiter.locked()


async def test_waiter_cancelled_just_after_its_grant_passes_the_line_on() -> None:
    arbiter = LineArbiter()
    order: list[str] = []

    async def take(name: str) -> None:
        async with arbiter.turn():
            order.append(name)

    holder = arbiter.turn()
    await holder.__aenter__()
    first = asyncio.create_task(take("first"))
    second = asyncio.create_task(take("second"))
    await asyncio.sleep(0)
    await holder.__aexit__(None, None, None)  # grants "first", which has not run yet
    first.cancel()
    await second
    assert first.cancelled() and order == ["second"] and not arbiter.locked()


async def test_holder_and_waiters_cancelled_together() -> None:
    """Shutdown cancels every poll task at once: no waiter may be granted a dead turn."""
    arbiter = LineArbiter()
    release = asyncio.Event()

    async def take(priority: int) -> None:
        async with arbiter.turn(priority):
            await release.wait()

    tasks = [asyncio.create_task(take(p)) for p in (0, 10, 0, 10)]
    await asyncio.sleep(0)
    assert arbiter.locked() and arbiter.waiting == 3
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert not arbiter.locked() and arbiter.waiting == 0
    async with arbiter.turn():
        pass


async def test_an_exception_inside_the_turn_releases_the_line() -> None:
    arbiter = LineArbiter()
    with pytest.raises(RuntimeError):
        async with arbiter.turn():
            raise RuntimeError("request failed")
    assert not arbiter.locked()


def test_max_overtakes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_overtakes"):
        LineArbiter(max_overtakes=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_keeps_the_cadence_and_skips_missed_slots() -> None:
    clock = FakeClock()
    pacer = PollPacer(0.05, clock=clock, rand=lambda: 1.0)
    clock.now += 0.01  # the poll took 10 ms
    assert pacer.answered() == pytest.approx(0.04)
    clock.now += 0.04 + 0.2  # a slow poll overran several slots
    assert pacer.answered() == 0.0  # poll again now, do not burst to catch up
    clock.now += 0.01
    assert pacer.answered() == pytest.approx(0.04)


def test_pacer_failures_wait_an_interval_then_back_off_while_offline() -> None:
    clock = FakeClock()
    pacer = PollPacer(0.05, offline_cap_s=0.3, clock=clock, rand=lambda: 1.0)
    assert pacer.failed(back_off=False) == 0.05  # a timeout: leave the line to the others
    assert not pacer.backing_off
    delays = [pacer.failed(back_off=True) for _ in range(5)]
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])  # doubling up to the cap
    assert pacer.backing_off
    clock.now += 0.3
    assert pacer.answered() == pytest.approx(0.05)  # the first answer ends the backoff
    assert not pacer.backing_off
    assert pacer.failed(back_off=True) == pytest.approx(0.05)


def test_pacer_drains_a_burst_at_once_then_keeps_the_cadence_from_its_end() -> None:
    # The access controller's buffered events: each answer with more waiting is followed at
    # once, and the burst does not push the next regular poll several slots away.
    clock = FakeClock()
    pacer = PollPacer(0.05, offline_cap_s=0.3, clock=clock, rand=lambda: 1.0)
    pacer.failed(back_off=True)
    pacer.failed(back_off=True)
    assert pacer.backing_off
    for _ in range(10):
        clock.now += 0.001
        assert pacer.answered_with_more() == 0.0
        assert not pacer.backing_off
    clock.now += 0.01
    assert pacer.answered() == pytest.approx(0.04)


def test_pacer_jitter_never_polls_sooner_than_the_interval() -> None:
    pacer = PollPacer(0.05, clock=FakeClock(), rand=lambda: 0.0)
    assert [pacer.failed(back_off=True) for _ in range(3)] == [0.05, 0.05, 0.05]


def test_pacer_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        PollPacer(0)
