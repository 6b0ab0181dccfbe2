"""SerialLine against simulated access controllers through a virtual serial cable (real ptys)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from drivers import access_codec as wire
from drivers.access_codec import Code, Frame
from drivers.base import DeviceProtocolError, DeviceTimeout, LineError
from drivers.lines import make_line
from drivers.lines.serial import SerialLine
from edge_config.models import SerialLine as SerialLineConfig
from simulators.access_controller import SimBus, SimController, serve_serial
from simulators.vserial import VirtualSerialLink

pytestmark = pytest.mark.timeout(30)
TIMEOUT_MS = 150


@dataclass
class Rig:
    line: SerialLine
    bus: SimBus
    link: VirtualSerialLink
    one: SimController
    two: SimController


def config(port: str, timeout_ms: int = TIMEOUT_MS) -> SerialLineConfig:
    return SerialLineConfig(type="serial", port=port, baudrate=9600, timeout_ms=timeout_ms)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    one, two = SimController(1), SimController(2)
    async with (
        VirtualSerialLink(baudrate=9600) as link,
        serve_serial([one, two], link.device_end, baudrate=9600) as bus,
    ):
        line = SerialLine("doors", config(link.host_end))
        try:
            yield Rig(line, bus, link, one, two)
        finally:
            await line.close()


async def poll(line: SerialLine, address: int, seq: int, **kwargs: int) -> Frame:
    request = wire.encode_frame(Frame(address, seq, Code.POLL, wire.encode_poll(0)))
    return await line.transact(request, wire.AnswerTo(address, seq), unit=address, **kwargs)


def test_make_line_builds_a_serial_line_for_a_serial_config() -> None:
    assert isinstance(make_line("doors", config("/dev/null")), SerialLine)


async def test_opens_lazily_and_answers_units_on_one_bus(rig: Rig) -> None:
    assert not rig.line.connected
    assert await poll(rig.line, 1, 1) == Frame(1, 1, Code.NO_EVENT)
    assert rig.line.connected
    assert await poll(rig.line, 2, 2) == Frame(2, 2, Code.NO_EVENT)
    assert rig.line.stats.requests == 2 and rig.line.stats.opens == 1


async def test_concurrent_transactions_take_turns(rig: Rig) -> None:
    rig.one.present_card(42)
    answers = await asyncio.gather(*(poll(rig.line, 1 + i % 2, 10 + i) for i in range(6)))
    assert [(a.address, a.seq) for a in answers] == [(1 + i % 2, 10 + i) for i in range(6)]
    assert answers[0].code == Code.EVENT
    assert rig.line.stats.failures == 0


async def test_silent_unit_times_out_without_harming_the_other(rig: Rig) -> None:
    rig.one.silent = True
    with capture_logs() as logs:
        for seq in (1, 2):
            with pytest.raises(DeviceTimeout):
                await poll(rig.line, 1, seq)
        assert (await poll(rig.line, 2, 3)).code == Code.NO_EVENT
        rig.one.silent = False
        assert (await poll(rig.line, 1, 4)).code == Code.NO_EVENT
    events = [entry["event"] for entry in logs]
    assert events == ["serial_unit_failing", "serial_unit_recovered"]  # once per state change
    assert rig.line.stats.timeouts == 2


async def test_garbage_alone_is_a_protocol_error_then_the_next_answer_works(rig: Rig) -> None:
    rig.one.corrupt_answers = 1
    with pytest.raises(DeviceProtocolError):
        await poll(rig.line, 1, 1)
    rig.one.garbage_answers = 1  # noise and a cut frame before the answer: still found
    assert (await poll(rig.line, 1, 2)).code == Code.NO_EVENT


async def test_late_answer_is_skipped_by_the_next_transaction(rig: Rig) -> None:
    rig.one.delay_ms = TIMEOUT_MS + 100
    with pytest.raises(DeviceTimeout):
        await poll(rig.line, 1, 1)
    rig.one.delay_ms = 0
    # The answer to seq 1 arrives during or before this transaction; it is not taken for seq 2.
    assert await poll(rig.line, 1, 2, timeout_ms=TIMEOUT_MS + 200) == Frame(1, 2, Code.NO_EVENT)


async def test_request_built_when_the_line_is_granted(rig: Rig) -> None:
    built: list[int] = []

    def request() -> bytes:
        built.append(1)
        return wire.encode_frame(Frame(1, 7, Code.POLL, wire.encode_poll(0)))

    assert (await rig.line.transact(request, wire.AnswerTo(1, 7))).seq == 7
    assert built == [1]


async def test_a_port_that_cannot_be_opened_is_a_line_error_logged_once(
    tmp_path: pytest.TempPathFactory,
) -> None:
    line = SerialLine("nowhere", config(f"{tmp_path}/no-such-tty"))
    with capture_logs() as logs:
        for seq in (1, 2):
            with pytest.raises(LineError, match="cannot open"):
                await poll(line, 1, seq)
    assert [entry["event"] for entry in logs] == ["serial_line_failing"]
    await line.close()


async def test_a_second_owner_of_the_port_is_refused(rig: Rig) -> None:
    await rig.line.connect()
    intruder = SerialLine("intruder", config(rig.link.host_end))
    with pytest.raises(LineError):
        await intruder.connect()
    await intruder.close()


async def test_drop_connection_reopens_and_close_refuses(rig: Rig) -> None:
    await poll(rig.line, 1, 1)
    await rig.line.drop_connection()
    assert not rig.line.connected
    await poll(rig.line, 1, 2)
    assert rig.line.stats.opens == 2
    await rig.line.close()
    with pytest.raises(LineError, match="closed"):
        await poll(rig.line, 1, 3)


async def test_close_during_a_transaction_fails_it_with_line_error(rig: Rig) -> None:
    rig.one.silent = True
    on_the_wire = asyncio.Event()

    def request() -> bytes:
        on_the_wire.set()  # from here on the transaction waits for its answer
        return wire.encode_frame(Frame(1, 1, Code.POLL, wire.encode_poll(0)))

    pending = asyncio.create_task(rig.line.transact(request, wire.AnswerTo(1, 1), timeout_ms=5_000))
    await on_the_wire.wait()
    await rig.line.close()
    with pytest.raises(LineError, match="port lost"):
        await pending


async def test_a_cancel_at_any_moment_ends_the_transaction_and_the_line_still_works(
    rig: Rig,
) -> None:
    """The answer's deadline fails its future, it does not cancel the task: a cancel from
    outside, wherever it lands (sending, waiting, with the answer, during a timeout), ends the
    polling task at once, and the next transaction is not disturbed."""
    rng = random.Random(11)
    seqs = iter(range(1, 256))

    async def polls() -> None:
        while True:
            with contextlib.suppress(DeviceTimeout):
                await poll(rig.line, 1, next(seqs), timeout_ms=40)

    for _ in range(40):
        rig.one.silent = rng.random() < 0.3
        task = asyncio.create_task(polls())
        await asyncio.sleep(rng.uniform(0.0005, 0.06))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:  # clean up before failing, or the task outlives the test
            task.cancel()
            await asyncio.wait({task})
        assert done, "a cancel was swallowed: the polling went on"
        assert task.cancelled()
    rig.one.silent = False
    assert (await poll(rig.line, 1, 255)) == Frame(1, 255, Code.NO_EVENT)


async def test_context_manager_opens_and_closes(rig: Rig) -> None:
    async with SerialLine("ctx", config(rig.link.host_end)) as line:
        assert line.connected
        assert (await poll(line, 1, 1)).code == Code.NO_EVENT
    assert not line.connected
