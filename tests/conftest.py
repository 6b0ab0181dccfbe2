"""Shared fixtures: private mosquitto brokers on loopback, and a guard that fails any test that
leaks threads (pymodbus's test suite does the same)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
    ]
    for thread in leaked:
        thread.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture
async def police_broker() -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker("police") as broker:
        yield broker


@pytest.fixture
async def bureau_broker() -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker("bureau") as broker:
        yield broker


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (pymodbus handlers, bridge timers, uplinks).

    Autouse and so set up first: it is torn down last, after the test's servers have closed."""
    yield
    await asyncio.sleep(0)  # let close callbacks that were just scheduled run once
    me = asyncio.current_task()
    leaked = [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@pytest.fixture
async def box() -> AsyncIterator[tuple[DiDoModule, int]]:
    """A simulated alarm box (DI/DO module, unit 1) on Modbus TCP: the module and its port."""
    module = DiDoModule(unit_id=1)
    async with serve_tcp(module) as (_, port):
        yield module, port
