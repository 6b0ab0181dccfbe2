"""The installer's everyday commands against the real gateway process, a simulated alarm box and
real mosquitto brokers (issue 13): the walk test (`schoolgate test start`, a press marked
`test`, `test report` hop by hop, `test stop`), `status` per device and not ready while the
alarm box is offline, `alarms` with delivery, `reset` by a unique prefix, and `schoolgate watch`
showing a press as the daemon reads it, ending cleanly on Ctrl-C and on a closed pipe."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp
from simulators.listener import listen
from tests_support import GatewayProcess

pytestmark = pytest.mark.timeout(120)


async def until_output(
    run: Callable[[], Awaitable[Any]], wanted: str, timeout_s: float = 15.0
) -> str:
    """Run a CLI command until its stdout matches the pattern `wanted` (a state the daemon
    reaches soon)."""
    async with asyncio.timeout(timeout_s):
        while True:
            done = await run()
            assert done.returncode == 0, done.stderr
            if re.search(wanted, done.stdout):
                return str(done.stdout)
            await asyncio.sleep(0.2)


async def test_walk_test_status_alarms_and_reset_by_prefix(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=1)
    async with serve_tcp(module) as (_, port):
        gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
        async with (
            listen("police", police_broker.host, police_broker.port) as police,
            listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
            gateway.running(police, clean_exit=True),
        ):
            await gateway.wait_ready()
            status = await until_output(lambda: gateway.cli("status"), "ready: yes")
            assert re.search(
                r"device box \(alarm_box\): online since \S+\+08:00, last answer", status
            )

            started = await gateway.cli("test", "start", "--minutes", "5", "--by", "installer")
            assert started.returncode == 0, started.stderr
            assert "test mode on until" in started.stdout
            told = await police.wait_event(lambda e: e["type"] == "gateway.test_started")
            assert told["test"] is True and told["data"]["by"] == "installer"
            assert "TEST MODE until " in (await gateway.cli("status")).stdout

            await module.pulse(0, 150)
            alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")
            assert alarm["test"] is True and alarm["drill"] is False
            assert (await bureau.wait_event(lambda e: e["type"] == "alarm.panic"))["test"] is True

            report = await until_output(
                lambda: gateway.cli("test", "report"),
                r"bureau PUBACK +\+\d+ ms\n +police PUBACK +\+\d+ ms",
            )
            assert f"press 1: box button 0  alarm {alarm['id']}" in report
            assert re.search(r"stored +\+\d+ ms", report)
            assert re.search(r"acknowledged +not yet", report)  # nobody acknowledged here
            receipts = json.loads((await gateway.cli("test", "report", "--json")).stdout)
            assert receipts[0]["puback_after_ms"]["police"] >= receipts[0]["stored_after_ms"]

            listed = await until_output(lambda: gateway.cli("alarms"), "at bureau")
            assert "stored, at police, at bureau; NOT acknowledged" in listed

            unknown = await gateway.cli("reset", "ffff")
            assert unknown.returncode == 1 and "no latched alarm with id ffff" in unknown.stderr
            done = await gateway.cli("reset", alarm["id"][:8], "--by", "installer")
            assert done.returncode == 0, done.stderr
            assert f"alarm {alarm['id']} reset by installer" in done.stdout
            reset = await police.wait_event(lambda e: e["type"] == "alarm.reset")
            assert reset["alarm_id"] == alarm["id"] and reset["test"] is True

            stopped = await gateway.cli("test", "stop")
            assert stopped.returncode == 0 and "test mode off" in stopped.stdout
            ended = await police.wait_event(lambda e: e["type"] == "gateway.test_stopped")
            assert ended["test"] is True
            again = await gateway.cli("test", "stop")
            assert again.returncode == 1 and "test mode is not on" in again.stderr

    # The box's server is gone: the gateway says it is not ready, and which box, since when.
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        status = await until_output(lambda: gateway.cli("status"), r"ready: NO")
        assert "ready: NO (alarm box offline: box)" in status
        assert re.search(r"device box \(alarm_box\): not polled yet, never answered", status)


@asynccontextmanager
async def watching(
    gateway: GatewayProcess, *words: str, stdout: int = asyncio.subprocess.PIPE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`schoolgate watch WORDS` as a process of its own, killed if the test leaves it running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "watch",
        *words,
        "-c",
        str(gateway.config),
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def next_item(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(15):
        line = await proc.stdout.readline()
    assert line, "watch ended early"
    item: dict[str, Any] = json.loads(line)
    return item


async def test_watch_shows_a_press_as_read_and_ends_cleanly(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        await gateway.wait_ready()
        unknown = await gateway.cli("watch", "nobox")
        assert unknown.returncode == 1 and "no device 'nobox'" in unknown.stderr

        async with watching(gateway, "box", "--json") as proc:
            first = await next_item(proc)  # the last read of each table, at once
            assert first["device"] == "box" and first["kind"] == "read"
            module.press(0)
            events: list[str] = []  # a device's stored events are streamed too, alarms included

            async def next_read() -> dict[str, Any]:
                while (item := await next_item(proc))["kind"] != "read":
                    events.append(item["type"])
                return item

            while not (
                (item := await next_read())["table"] == "discrete_input" and item["values"][0] == 1
            ):
                pass
            assert 0 in item["changed"] and item["at"].endswith("+08:00")
            module.release(0)
            while not (
                (item := await next_read())["table"] == "discrete_input" and item["values"][0] == 0
            ):
                pass
            while "alarm.panic" not in events:  # the latches store it, not the driver
                item = await next_item(proc)
                events.append(item.get("type", ""))
            assert 0 in item["changed"]  # the release, as read
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.stderr is not None
            err = await proc.stderr.read()
            assert await proc.wait() == 130
            assert b"Traceback" not in err

        # Rich output, then the reader goes away (as `schoolgate watch | head -1` does).
        read_end, write_end = os.pipe()
        async with watching(gateway, stdout=write_end) as proc:
            os.close(write_end)
            try:
                header = await asyncio.wait_for(asyncio.to_thread(os.read, read_end, 4096), 15)
                assert b"watching * (Ctrl-C to stop)" in header
            finally:
                os.close(read_end)
            await module.pulse(0, 150)  # something to write into the closed pipe
            assert proc.stderr is not None
            async with asyncio.timeout(15):
                err = await proc.stderr.read()
                code = await proc.wait()
        assert code == 1 and b"Traceback" not in err, err
