"""The `async with` shape of everything the daemon opens and must close: lines, the store, a
turn on a shared line.

Owns only that shape: entering opens (`open()`), leaving closes (`close()`), whether the block
ended normally, by an exception or by a cancel; an exception is never swallowed. It does not
know what is opened, and does not retry or log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class AsyncResource(ABC):
    """`async with resource:` calls `open()` on the way in and `close()` on the way out."""

    __slots__ = ()  # so a subclass with __slots__ stays without a __dict__

    @abstractmethod
    async def open(self) -> None:
        """Make the resource usable; an exception here means the block does not run."""

    @abstractmethod
    async def close(self) -> None:
        """Give the resource back; runs however the block ended."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
