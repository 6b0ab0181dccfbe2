"""Waiting for one answer on a line, bounded by a timer on the answer's future.

Owns the deadline of one request and what its expiry means: `DeviceTimeout` when nothing came
back, `DeviceProtocolError` when bytes came back but no answer. Shared by the line owners
(`drivers.lines.serial`, `drivers.lines.modbus_transport`); it does not send, read or frame.

Why a timer rather than `asyncio.wait_for` / `asyncio.timeout()`: no Timeout object, no
cancelling and uncancelling of the task, no extra loop iterations per request, and a cancel from
outside stays a plain cancel of `await future` (Python 3.11's wait_for can drop a cancel that
meets the result, see `gateway.core.cancel`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.base import DeviceProtocolError, DeviceTimeout

T = TypeVar("T")


async def answer_within(
    future: asyncio.Future[T], timeout_s: float, *, line: str, rx_seen: Callable[[], bool]
) -> T:
    """The result of `future`, failed by a timer after `timeout_s`; `rx_seen()` tells, at the
    deadline, whether any byte came back (garbage) or none (silence)."""
    loop = asyncio.get_running_loop()
    deadline = loop.call_at(loop.time() + timeout_s, _no_answer_in_time, future)
    try:
        return await future
    except asyncio.CancelledError:
        if future.done() and not future.cancelled():
            future.exception()  # an answer, timeout or loss the cancel overtook: seen
        raise
    except TimeoutError:
        if rx_seen():
            raise DeviceProtocolError(
                f"line {line}: no valid answer within {timeout_s * 1000:.0f} ms"
            ) from None
        raise DeviceTimeout(f"line {line}: no answer within {timeout_s * 1000:.0f} ms") from None
    finally:
        deadline.cancel()


def _no_answer_in_time(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
