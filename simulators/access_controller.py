"""A simulated access controller: the door controller behind the gate's card readers, a slave on
a serial bus speaking `drivers.access_codec` (docs/simulators/access_controller.md).

Owns the controllers' state (doors, lockdown, clock offset, the event buffer that resends its head
until it is acknowledged), their fault knobs, and serving several addresses on one serial device
with pyserial-asyncio-fast. It does not know the gateway, and does not own a pty pair
(`simulators.vserial` does): give it `VirtualSerialLink.device_end` or a real port.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from serial_asyncio_fast import create_serial_connection

from drivers import access_codec as wire
from drivers.access_codec import (
    Code,
    ControllerEvent,
    DenyReason,
    ErrorCode,
    EventCode,
    Frame,
    FrameParser,
)

BUFFER_SIZE = 10_000
"""Events kept unacknowledged; beyond this the oldest are overwritten, like a real log."""
REMEMBERED = 4
"""Answers kept for repeated requests: a command retry may follow polls of the same master."""
NOISE = b"\x55\xaa" + bytes([wire.STX, 0x01, 0x07])
"""What `garbage_answers` puts before an answer: noise, then the start of a frame cut short."""


class SimController:
    """One controller at `address`; tests drive its doors and readers and set its faults."""

    def __init__(
        self, address: int = 1, *, doors: Iterable[int] = (1, 2), clock_offset_ms: int = 0
    ) -> None:
        if not wire.MIN_ADDRESS <= address <= wire.MAX_ADDRESS:
            raise ValueError(f"address {address} outside 1..254")
        self.address = address
        self.doors = tuple(doors)
        self.clock_offset_ms = clock_offset_ms
        self.lockdown = False
        self.held_open_s = 30
        self.unlocks: dict[int, int] = dict.fromkeys(self.doors, 0)
        self.clock_sets: list[int] = []
        # Fault knobs, read for every request addressed to this controller:
        self.silent = False
        self.delay_ms = 0
        self.drop_answers = 0
        """The next N answers are lost on the wire (the request was carried out)."""
        self.corrupt_answers = 0
        self.garbage_answers = 0
        self.unsupported: set[int] = set()
        """Request codes answered with error unknown_command (an older firmware)."""
        self.lose_acks = 0
        """The next N acknowledgements are missed (a firmware bug): the event is sent again."""
        self._buffer: deque[ControllerEvent] = deque(maxlen=BUFFER_SIZE)
        self._event_seq = 0
        self._opened_at: dict[int, float] = {}
        self._held_reported: set[int] = set()
        self._recent: deque[tuple[tuple[int, int, bytes], Frame]] = deque(maxlen=REMEMBERED)
        """((seq, code, payload), answer) of the last requests: a repeat gets the same answer."""
        self._drained: list[asyncio.Future[None]] = []
        self.sent_events: list[int] = []
        """Event seqs in the order they were put on the wire (resends included)."""

    # -- test API ----------------------------------------------------------------------------

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    def present_card(self, card: int, reader: int = 1, *, granted: bool = True) -> ControllerEvent:
        """A card at `reader`; in lockdown every card is refused whatever `granted` says."""
        reason = DenyReason.NONE
        if self.lockdown:
            granted, reason = False, DenyReason.LOCKDOWN
        elif not granted:
            reason = DenyReason.UNKNOWN_CARD
        return self._record(
            EventCode.CARD, reader=reader, card=card, granted=granted, reason=reason
        )

    def open_door(self, door: int) -> ControllerEvent:
        """The door opens after a valid card, an exit button or an unlock; its held-open timer
        starts."""
        self._opened_at.setdefault(self._door(door), time.monotonic())
        return self._record(EventCode.DOOR_OPENED, door=door)

    def close_door(self, door: int) -> ControllerEvent:
        self._opened_at.pop(self._door(door), None)
        self._held_reported.discard(door)
        return self._record(EventCode.DOOR_CLOSED, door=door)

    def force_door(self, door: int) -> ControllerEvent:
        """The door sensor opens while the lock is closed: forced open."""
        self._opened_at.setdefault(self._door(door), time.monotonic())
        return self._record(EventCode.DOOR_FORCED, door=door)

    def hold_door(self, door: int) -> ControllerEvent:
        """The door is (or stays) open and its held-open timer runs out now."""
        opened = self._opened_at.setdefault(self._door(door), time.monotonic())
        self._held_reported.add(door)
        held_s = max(self.held_open_s, round(time.monotonic() - opened))
        return self._record(EventCode.DOOR_HELD, door=door, held_s=held_s)

    def exit_button(self, door: int) -> ControllerEvent:
        return self._record(EventCode.EXIT_BUTTON, door=self._door(door))

    def tamper(self, active: bool = True) -> ControllerEvent:
        return self._record(EventCode.TAMPER, active=active)

    async def wait_drained(self, timeout_s: float = 5.0) -> None:
        """Return once every event has been acknowledged; TimeoutError after `timeout_s`."""
        if not self._buffer:
            return
        drained = asyncio.get_running_loop().create_future()
        self._drained.append(drained)
        try:
            await asyncio.wait_for(drained, timeout_s)
        finally:
            self._drained.remove(drained)

    @property
    def pending_events(self) -> list[ControllerEvent]:
        """The buffer: events not acknowledged yet, oldest first."""
        self._check_held_open()
        return list(self._buffer)

    # -- the slave side ----------------------------------------------------------------------

    def handle(self, request: Frame) -> Frame:
        """The answer to one request addressed to this controller."""
        key = (request.seq, request.code, request.payload)
        for seen, answer in self._recent:
            if seen == key:
                return answer  # the master repeats a request whose answer it lost: do it once
        try:
            code, payload = self._carry_out(request)
        except wire.FrameError:
            code, payload = Code.ERROR, wire.encode_error(ErrorCode.BAD_PAYLOAD)
        answer = Frame(self.address, request.seq, code, payload)
        self._recent.append((key, answer))
        if code == Code.EVENT:
            self.sent_events.append(wire.decode_event(payload).seq)
        return answer

    def _carry_out(self, request: Frame) -> tuple[Code, bytes]:
        handlers: dict[int, Callable[[Frame], tuple[Code, bytes]]] = {
            Code.POLL: self._poll,
            Code.UNLOCK: self._unlock,
            Code.LOCKDOWN: self._lockdown,
            Code.RELEASE_LOCKDOWN: self._lockdown,
            Code.READ_CLOCK: self._read_clock,
            Code.SET_CLOCK: self._set_clock,
            Code.CONFIGURE: self._configure,
        }
        handler = None if request.code in self.unsupported else handlers.get(request.code)
        if handler is None:
            return Code.ERROR, wire.encode_error(ErrorCode.UNKNOWN_COMMAND)
        return handler(request)

    def _poll(self, request: Frame) -> tuple[Code, bytes]:
        ack = wire.decode_poll(request.payload)
        if self._buffer and self._buffer[0].seq == ack:
            if self.lose_acks > 0:
                self.lose_acks -= 1
            else:
                self._buffer.popleft()
                if not self._buffer:
                    for waiter in self._drained:
                        if not waiter.done():
                            waiter.set_result(None)
        self._check_held_open()
        if not self._buffer:
            return Code.NO_EVENT, b""
        return Code.EVENT, wire.encode_event(self._buffer[0])

    def _unlock(self, request: Frame) -> tuple[Code, bytes]:
        door, _open_s = wire.decode_unlock(request.payload)
        if door not in self.doors:
            return Code.ERROR, wire.encode_error(ErrorCode.NO_SUCH_DOOR)
        if self.lockdown:
            return Code.ERROR, wire.encode_error(ErrorCode.LOCKED_DOWN)
        self.unlocks[door] += 1
        return Code.OK, b""

    def _lockdown(self, request: Frame) -> tuple[Code, bytes]:
        if request.payload:
            return Code.ERROR, wire.encode_error(ErrorCode.BAD_PAYLOAD)
        self.lockdown = request.code == Code.LOCKDOWN
        return Code.OK, b""

    def _read_clock(self, request: Frame) -> tuple[Code, bytes]:
        if request.payload:
            return Code.ERROR, wire.encode_error(ErrorCode.BAD_PAYLOAD)
        return Code.CLOCK, wire.encode_time(self.now_ms())

    def _set_clock(self, request: Frame) -> tuple[Code, bytes]:
        time_ms = wire.decode_time(request.payload)
        self.clock_offset_ms = time_ms - time.time_ns() // 1_000_000
        self.clock_sets.append(time_ms)
        return Code.OK, b""

    def _configure(self, request: Frame) -> tuple[Code, bytes]:
        held_open_s = wire.decode_configure(request.payload)
        if held_open_s == 0:
            return Code.ERROR, wire.encode_error(ErrorCode.BAD_PAYLOAD)
        self.held_open_s = held_open_s
        return Code.OK, b""

    def _record(self, code: EventCode, **fields: Any) -> ControllerEvent:
        self._event_seq = wire.next_seq(self._event_seq, top=0xFFFF)
        event = replace(ControllerEvent(self._event_seq, code, self.now_ms()), **fields)
        self._buffer.append(event)
        return event

    def _check_held_open(self) -> None:
        # Checked when polled rather than on a timer: the event is only seen at a poll anyway.
        now = time.monotonic()
        for door, opened in self._opened_at.items():
            if door not in self._held_reported and now - opened >= self.held_open_s:
                self._held_reported.add(door)
                self._record(EventCode.DOOR_HELD, door=door, held_s=round(now - opened))

    def _door(self, door: int) -> int:
        if door not in self.doors:
            raise ValueError(f"controller {self.address} has no door {door} (doors {self.doors})")
        return door


class _Port(asyncio.Protocol):
    def __init__(self, bus: SimBus) -> None:
        self._bus = bus
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._bus._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class SimBus:
    """The controllers sharing one serial device, as the master sees them on its RS-485 bus."""

    def __init__(self, controllers: Iterable[SimController], port_path: str, baudrate: int) -> None:
        self.controllers = {c.address: c for c in controllers}
        self.port_path = port_path
        self.baudrate = baudrate
        self.parser = FrameParser()
        """Counts what reached the controllers' side broken (corrupted requests, noise)."""
        self._transport: asyncio.Transport | None = None
        self._port: _Port | None = None
        self._answers: set[asyncio.TimerHandle] = set()

    async def open(self) -> None:
        """Connect to the bus (again, after `disconnect`)."""
        if self._transport is not None:
            return
        port = _Port(self)
        self._transport, _ = await create_serial_connection(
            asyncio.get_running_loop(), lambda: port, self.port_path, baudrate=self.baudrate
        )
        self._port = port
        self.parser.reset()

    async def disconnect(self) -> None:
        """Unplug the controllers from the bus: pending answers are lost, nothing answers."""
        for handle in self._answers:
            handle.cancel()
        self._answers.clear()
        transport, port = self._transport, self._port
        self._transport = self._port = None
        if transport is not None and port is not None:
            transport.abort()
            await port.lost

    def send_garbage(self, data: bytes) -> None:
        """Put noise on the bus now."""
        if self._transport is not None:
            self._transport.write(data)

    def _on_data(self, data: bytes) -> None:
        for request in self.parser.feed(data):
            controller = self.controllers.get(request.address)
            if request.is_answer or controller is None or controller.silent:
                continue  # nobody at that address, or it is dead: RS-485 stays quiet
            answer = _with_faults(controller, controller.handle(request))
            if answer is None:
                continue
            if controller.delay_ms > 0:
                self._send_later(controller.delay_ms / 1000, answer)
            else:
                self._send(answer)

    def _send_later(self, delay_s: float, data: bytes) -> None:
        def send() -> None:
            self._answers.discard(handle)
            self._send(data)

        handle = asyncio.get_running_loop().call_later(delay_s, send)
        self._answers.add(handle)

    def _send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)


def _with_faults(controller: SimController, answer: Frame) -> bytes | None:
    """The bytes that reach the wire for `answer`, after the controller's fault knobs."""
    if controller.drop_answers > 0:
        controller.drop_answers -= 1
        return None
    body = wire.frame_body(answer)
    if controller.corrupt_answers > 0:
        controller.corrupt_answers -= 1
        body = body[:-1] + bytes([body[-1] ^ 0x01])  # a bit flipped on the wire: a CRC error
    data = bytes([wire.STX]) + wire.stuff(body) + bytes([wire.ETX])
    if controller.garbage_answers > 0:
        controller.garbage_answers -= 1
        data = NOISE + data
    return data


@asynccontextmanager
async def serve_serial(
    controllers: SimController | Iterable[SimController], port_path: str, *, baudrate: int = 9600
) -> AsyncIterator[SimBus]:
    """Serve controllers as slaves of one serial bus (several addresses on one RS-485 line)."""
    if isinstance(controllers, SimController):
        controllers = [controllers]
    bus = SimBus(controllers, port_path, baudrate)
    if len(bus.controllers) == 0:
        raise ValueError("serve at least one controller")
    await bus.open()
    try:
        yield bus
    finally:
        await bus.disconnect()
