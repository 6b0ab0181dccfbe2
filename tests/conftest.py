"""Shared fixtures: private mosquitto brokers on loopback, and a guard that fails any test that
leaks threads (pymodbus's test suite does the same).

Every test is marked `unit` or `e2e` here, from what it uses, so the two sets can be run apart
(`./run test -m unit` for the quick loop): `e2e` when it uses a real broker, a gateway process or
a device simulator (the fixtures below, or those parts in its module); `unit` otherwise."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import pytest

from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp

E2E_FIXTURES = frozenset({"police_broker", "bureau_broker", "box"})
E2E_MODULES = (
    "simulators.",
    "tests_support",
    "guard_support",
    "driver_support",
    "storefault_child",
    "selenium",
    "pymodbus",
    "serial",
)
"""What a test module uses when it drives real brokers, processes, browsers or lines."""
_SIMULATED_PURE = ("simulators.scenario_model", "simulators.contract_check", "simulators.measure")
"""Simulator modules that are plain data and checks, not a device or a broker."""


def _drives_real_parts(module: ModuleType) -> bool:
    cached = getattr(module, "_e2e", None)
    if cached is not None:
        return bool(cached)
    found = False
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        if isinstance(name, str) and name.startswith(E2E_MODULES):
            found = not name.startswith(_SIMULATED_PURE)
            if found:
                break
    module._e2e = found  # type: ignore[attr-defined]
    return found


def _long_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return 0.0 if marker is None else float(marker.args[0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The long tests first, longest first (`long(seconds)`): xdist, handing out one test at a
    # time (`--maxschedchunk 1` in ./run), starts them side by side on every worker instead of
    # one worker running them one after another while the suite waits for it alone.
    items.sort(key=lambda item: -_long_seconds(item))
    for item in items:
        module = getattr(item, "module", None)
        real = module is not None and _drives_real_parts(module)
        fixtures = E2E_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.e2e if real or fixtures else pytest.mark.unit)


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
