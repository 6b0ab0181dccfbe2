"""Fuzzing the control socket (hypothesis) against the real gateway's handler behind a real Unix
socket: random bytes, random JSON, lone surrogates, numbers of hundreds of digits, NaN and
infinities, deep nesting, over-long lines and every field of every request replaced by anything.
Each gets an `{"ok": ..., "error": ...}` answer or a closed connection, never an exception out of
the connection's task, and a valid `status` is answered after each of them.

The gateway is served from a thread of its own with its own event loop, so that each hypothesis
example is a plain blocking client (one connection, one request, one answer)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import PanicPress
from edge_config.models import GatewayConfig
from gateway.app import Gateway
from gateway.commands import control
from simulators.dido import DiDoModule, serve_tcp


class ServedGateway:
    """The gateway's store and control socket (and a simulated alarm box with one latched alarm)
    on a thread's event loop; `failures` collects any exception a connection's task raised."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sock = workdir / "control.sock"
        self.alarm_id = ""
        self.failures: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="control-fuzz-gateway")

    def __enter__(self) -> ServedGateway:
        self._thread.start()
        assert self._ready.wait(30), "the gateway did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._loop.set_exception_handler(lambda _, context: self.failures.append(context))
        module = DiDoModule(unit_id=1)
        async with serve_tcp(module) as (_, port):
            gateway = Gateway(self._config(port))
            async with gateway.store, control.serve(self.sock, gateway.handle_control):
                await gateway.latches.panic_pressed(
                    PanicPress("box", 0, presses=1, occurred_at_ms=1)
                )
                self.alarm_id = gateway.latches.open_alarms[0].alarm_id
                self._ready.set()
                await self._stop.wait()
            for line in gateway.lines.values():
                await line.close()

    def _config(self, port: int) -> GatewayConfig:
        return GatewayConfig.model_validate(
            {
                "site": {"school_id": "school-7", "gateway_id": "gate-east"},
                "store": {"path": str(self.workdir / "outbox.db")},
                "control": {"socket_path": str(self.sock)},
                "destinations": {"police": {"host": "127.0.0.1", "port": 1, "client_id": "gw"}},
                "lines": {"io": {"type": "modbus_tcp", "host": "127.0.0.1", "port": port}},
                "devices": {
                    "box": {
                        "kind": "alarm_box",
                        "line": "io",
                        "lamp_coil": 0,
                        "buttons": [{"input": 0, "name": "desk"}],
                    }
                },
            }
        )


@pytest.fixture(scope="module")
def served() -> Iterator[ServedGateway]:
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-control-fuzz-"))
    try:
        with ServedGateway(workdir) as gateway:
            yield gateway
    finally:
        shutil.rmtree(workdir)


def exchange(sock: Path, raw: bytes) -> bytes:
    """Send `raw`, end the sending side, return everything the gateway answers."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(sock))
        try:
            client.sendall(raw)
            client.shutdown(socket.SHUT_WR)
        except BrokenPipeError:  # it answered (an over-long line) and closed while we sent
            pass
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


# Any Unicode code point, surrogates included (json.dumps writes them as \ud800 escapes).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**300), 2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
OPS = ["status", "alarms", "reset", "command", "", "STATUS", "reset\x00"]
FIELDS = ["op", "alarm_id", "by", "device", "name", "args"]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A plausible request of every op, its fields replaced or dropped at random."""
    op = draw(st.sampled_from(OPS))
    request: dict[str, Any] = {
        "op": op,
        "alarm_id": draw(st.sampled_from(["ALARM", "nope", ""])),
        "by": "guard li",
        "device": draw(st.sampled_from(["box", "nobox"])),
        "name": draw(st.sampled_from(["lamp", "siren", "raise", "unlock"])),
        "args": {"on": draw(st.booleans())},
    }
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            request[field] = draw(json_values)
        else:
            request.pop(field, None)
    return json.dumps(request).encode() + b"\n"


deep = st.integers(1, 70_000).map(lambda n: b"[" * n + b"]" * n + b"\n") | st.integers(
    1, 20_000
).map(lambda n: b'{"op": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}\n")
huge_numbers = st.integers(1, 20_000).map(
    lambda n: b'{"op": "reset", "alarm_id": ' + b"9" * n + b"}\n"
)
wire = (
    st.binary(max_size=300)
    | json_values.map(lambda value: json.dumps(value).encode() + b"\n")
    | mutated_requests()
    | deep
    | huge_numbers
    | st.sampled_from([b"x" * (64 * 1024 + 1) + b"\n", b"\n", b"", b'{"op": "\\ud800"}\n'])
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=wire)
def test_any_bytes_get_an_answer_and_the_socket_keeps_serving(
    served: ServedGateway, raw: bytes
) -> None:
    raw = raw.replace(b"ALARM", served.alarm_id.encode())
    failures_before = len(served.failures)
    answer = exchange(served.sock, raw)
    if answer:  # else: the connection was closed (a line that never ended, or nothing at all)
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1
        decoded = json.loads(answer)  # ASCII JSON, whatever was asked
        assert isinstance(decoded, dict) and isinstance(decoded["ok"], bool)
        if not decoded["ok"]:
            assert isinstance(decoded["error"], str) and decoded["error"]
    status = json.loads(exchange(served.sock, b'{"op": "status"}\n'))
    assert status["ok"] is True and "open_alarms" in status
    assert served.failures[failures_before:] == []  # nothing left a connection's task
    assert os.path.exists(served.sock)
