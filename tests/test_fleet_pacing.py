"""The fleet simulator's connection pacing (issue 15): attempts start at the configured rate on
the injected clock, a broker that answers slowly makes the next ones wait (the window), bad
settings are refused with a clear message, and a paced fleet on a real mosquitto records when
each gateway was first up."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

import pytest

from gateway.core.clock import FakeClock
from simulators import fleet_cli
from simulators.broker import MosquittoBroker
from simulators.fleet import Fleet, FleetOptions
from simulators.fleet_pacing import ConnectPacer


async def test_attempts_start_at_the_rate_in_the_order_they_asked() -> None:
    clock = FakeClock()
    pacer = ConnectPacer(rate_per_s=100, window=1_000, clock=clock)
    start = clock.monotonic()
    started: list[tuple[int, float]] = []

    async def attempt(n: int) -> None:
        async with pacer.attempt():
            started.append((n, clock.monotonic() - start))

    tasks = [asyncio.create_task(attempt(n)) for n in range(250)]
    await clock.settle()
    assert [n for n, _ in started] == [0]  # the first at once, the others wait their turn
    await clock.run_for(3.0)
    await asyncio.gather(*tasks)
    assert [n for n, _ in started] == list(range(250))
    assert [at for _, at in started] == pytest.approx([n / 100 for n in range(250)])
    per_second = Counter(int(at + 1e-9) for _, at in started)
    assert max(per_second.values()) == 100  # never more than the rate in any second
    assert pacer.started == 250


async def test_a_slow_broker_makes_the_next_attempts_wait_for_the_window() -> None:
    clock = FakeClock()
    pacer = ConnectPacer(rate_per_s=1_000, window=3, clock=clock)
    answered = asyncio.Event()  # the broker's answer to every open handshake
    done: list[int] = []

    async def attempt(n: int) -> None:
        async with pacer.attempt():
            await answered.wait()
            done.append(n)

    tasks = [asyncio.create_task(attempt(n)) for n in range(5)]
    for _ in range(10):  # far past the rate (each step lets the next attempt ask)
        await clock.run_for(0.01)
    # Only the window holds them now.
    assert pacer.in_handshake == 3 and pacer.started == 3 and done == []
    answered.set()
    await asyncio.gather(*tasks)
    assert sorted(done) == list(range(5)) and pacer.in_handshake == 0


@pytest.mark.parametrize(("rate", "window", "message"), [(0, 10, "rate"), (10, 0, "window")])
def test_a_pacer_refuses_a_rate_or_window_it_cannot_keep(
    rate: float, window: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectPacer(rate, window)


async def test_a_keepalive_below_the_connect_timeout_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser()
    fleet_cli.add_parser(parser.add_subparsers())
    argv = ["fleet", "--gateways", "1", "--keys-dir", str(tmp_path), "--keepalive-s", "15"]
    args = parser.parse_args(argv)
    with pytest.raises(SystemExit, match=r"keepalive \(15 s\) must be at least the connect"):
        await fleet_cli.run_cli(args)
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


async def test_a_paced_fleet_connects_every_gateway_and_records_when_each_was_up(
    police_broker: MosquittoBroker, tmp_path: Path
) -> None:
    options = FleetOptions(
        nodes=[(police_broker.host, police_broker.port)],
        gateways=20,
        keys_dir=tmp_path,
        heartbeat_s=3600.0,
        connect_rate_per_s=50.0,
        connect_window=4,
    )
    async with Fleet(options) as fleet:
        await fleet.wait_connected(timeout_s=30)
        assert fleet.pacer.started == 20  # every attempt went through the pacer
        for gateway in fleet.gateways:
            assert gateway.first_attempt_at is not None and gateway.first_up_at is not None
            assert gateway.first_attempt_at <= gateway.first_up_at
            assert gateway.attempts == 1


async def test_waiting_on_a_big_fleet_costs_one_wake_up_per_change_not_one_task_per_gateway(
    tmp_path: Path,
) -> None:
    # Regression: `Fleet.wait_until` made a waiter task per gateway again on every change; at
    # 5,000 gateways the bench process spent most of its CPU on it while the fleet connected,
    # and the brokers' handshakes were answered late. Nothing connects here (no `async with`):
    # the gateways' change events are set by hand.
    fleet = Fleet(FleetOptions(nodes=[("127.0.0.1", 1)], gateways=200, keys_dir=tmp_path))
    tests = 0
    target = fleet.gateways[137]

    def test() -> bool:
        nonlocal tests
        tests += 1
        return target.connects > 0

    before = len(asyncio.all_tasks())
    waiting = asyncio.create_task(fleet.wait_until(test, timeout_s=10))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before + 1  # the waiter itself, nothing per gateway
    assert tests == 1
    fleet.gateways[3].changed.set()  # some other gateway changed: one more test, still waiting
    await asyncio.sleep(0)
    assert tests == 2 and not waiting.done()
    target.connects = 1
    target.changed.set()
    await asyncio.wait_for(waiting, 5)
    assert tests == 3
