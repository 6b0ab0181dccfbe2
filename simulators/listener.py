"""A subscriber that records what a broker delivers: the police or bureau side as seen by the
demo, the tests and the benchmarks. Not a receiving console (that comes with the contract work).

Owns one subscription and the list of received messages with their arrival times; lets a caller
await a message that matches a predicate (event-driven, no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from gateway.uplink import mqtt

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    arrived_ns: int
    """time.time_ns() at arrival, comparable with a press time taken in the same process."""

    @property
    def json(self) -> dict[str, Any]:
        obj = json.loads(self.payload)
        if not isinstance(obj, dict):
            raise TypeError("not a JSON object")
        return obj


class Listener:
    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[Received] = []
        self._changed = asyncio.Condition()
        self.on_message: Callable[[Received], None] | None = None

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        found = [m.json for m in self.messages if "/events/" in m.topic]
        return [e for e in found if event_type is None or e.get("type") == event_type]

    async def wait_for(
        self, predicate: Callable[[Received], bool], *, since: int = 0, timeout_s: float = 10.0
    ) -> Received:
        """The first message (from index `since` on) that matches, waiting for it if needed."""

        async def scan() -> Received:
            seen = since
            async with self._changed:
                while True:
                    for message in self.messages[seen:]:
                        if predicate(message):
                            return message
                    seen = len(self.messages)
                    await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout_s)

    async def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        since: int = 0,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        message = await self.wait_for(
            lambda m: "/events/" in m.topic and predicate(m.json), since=since, timeout_s=timeout_s
        )
        return message.json

    async def _record(self, topic: str, payload: bytes) -> None:
        received = Received(topic, payload, time.time_ns())
        async with self._changed:
            self.messages.append(received)
            self._changed.notify_all()
        if self.on_message is not None:
            self.on_message(received)


@contextlib.asynccontextmanager
async def listen(
    name: str, host: str, port: int, topic_filter: str = "schoolgate/#"
) -> AsyncIterator[Listener]:
    """Subscribe (QoS 1) and record until the block ends. Reconnects if the broker restarts."""
    listener = Listener(name)
    subscribed = asyncio.Event()

    async def pump() -> None:
        params = mqtt.BrokerParams(
            host=host, port=port, client_id=f"listener-{name}-{next(_ids)}", clean_session=False
        )
        while True:
            try:
                async with mqtt.connect(params) as conn:
                    await conn.subscribe(topic_filter, qos=1)
                    subscribed.set()
                    async for message in conn.messages():
                        await listener._record(message.topic, message.payload)
            except mqtt.MqttFailure:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None  # closing, not a broker fault
                await asyncio.sleep(0.1)

    task = asyncio.create_task(pump(), name=f"listener:{name}")
    try:
        await asyncio.wait_for(subscribed.wait(), 10.0)
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
