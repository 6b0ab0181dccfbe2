"""What every line owner (the Modbus line, the serial line) does the same way around its requests.

Owns the line's lifecycle (`connect` / `open`, `close`, `drop_connection`: each taken under the
owner's turn, except `close`, which must not wait behind a request) and the accounting of one
request (`_attempt`: hold the turn, count the request, note its failure or its answer in the
line's `LineHealth`). It does not know how a line is opened, what goes on the wire or who is
granted the line next: the owners say that through `_turn`, `_ensure_open` and `_shut`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import ParamSpec, TypeVar

import structlog

from drivers.base import DriverError, LineError
from drivers.lines.health import LineHealth
from gateway.core.lifecycle import AsyncResource

P = ParamSpec("P")
T = TypeVar("T")
Turn = AbstractAsyncContextManager[object]
"""Holding the line: an arbiter's turn, or a plain lock."""


class LineOwner(AsyncResource):
    """The single owner of one physical line; `async with line:` connects it and closes it."""

    def __init__(
        self, name: str, kind: str, log: structlog.typing.FilteringBoundLogger | None
    ) -> None:
        self.name = name
        self._log: structlog.typing.FilteringBoundLogger = (
            log if log is not None else structlog.get_logger()
        ).bind(line=name)
        self._closed = False
        self._health = LineHealth(self._log, kind)

    @abstractmethod
    def _turn(self) -> Turn:
        """The line for one step of the lifecycle (a request may ask for it with a priority)."""

    @abstractmethod
    async def _ensure_open(self) -> object:
        """Open the line if it is not; raises LineError if it cannot. Caller holds the turn."""

    @abstractmethod
    async def _shut(self) -> None:
        """Let go of the port or connection; the next request opens it afresh."""

    async def connect(self) -> None:
        """Open the line now; raises LineError if the port or connection cannot be opened."""
        async with self._turn():
            self._closed = False
            try:
                await self._ensure_open()
            except LineError as exc:
                self._health.note_failure(None, exc)
                raise

    async def close(self) -> None:
        """Close the line. Requests raise LineError until `connect()` is called again."""
        # No turn: closing must not wait behind a request; that request then fails with LineError.
        self._closed = True
        await self._shut()

    open = connect
    """`async with line:` connects it and closes it on the way out (`AsyncResource`)."""

    async def drop_connection(self) -> None:
        """Let go of the port or connection; the next request opens it afresh."""
        async with self._turn():
            await self._shut()

    async def _attempt(
        self,
        unit: int | None,
        turn: Turn,
        work: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`work(*args, **kwargs)` as one request to `unit` (None: the line itself) under `turn`:
        counted, a DriverError noted as a failure and an answer as one (the unit is well)."""
        async with turn:
            self._health.requests += 1
            try:
                result = await work(*args, **kwargs)
            except DriverError as exc:
                self._health.failed(unit, exc)
                raise
            self._health.answered(unit)
            return result
