"""One uplink per destination broker: connect, announce, drain the outbox, reconnect.

Owns the connection loop of one destination (with `Backoff` between attempts), the retained
`online` status and the offline will, and the rule that a row is marked sent only after that
broker's PUBACK. Rows go out in pipelined batches bounded by `max_inflight`. It does not choose
what to send (the outbox orders rows) and knows nothing of other destinations, so a dead police
broker never slows the bureau uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from gateway import contract, mqtt
from gateway.backoff import Backoff
from gateway.drain import Drain
from gateway.outbox import Outbox


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Uplink:
    def __init__(
        self,
        name: str,
        params: mqtt.BrokerParams,
        outbox: Outbox,
        site: contract.Site,
        *,
        backoff: Backoff | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.name = name
        self._params = params
        self._outbox = outbox
        self._site = site
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=10.0)
        self._clock_ms = clock_ms
        self._log = structlog.get_logger(__name__).bind(destination=name)
        self.connected = False
        self.connected_since_ms: int | None = None
        self._sent_before = 0
        self._active: Drain | None = None

    async def run(self) -> None:
        failing_since: float | None = None
        while True:
            try:
                async with mqtt.connect(self._params) as conn:
                    self._on_connected(failing_since)
                    failing_since = None
                    await self._session(conn)
            except mqtt.MqttFailure as exc:
                self.connected = False
                if failing_since is None:
                    failing_since = time.monotonic()
                    # Logged once per outage, not on every retry.
                    self._log.warning("uplink_down", error=str(exc))
            await asyncio.sleep(self._backoff.next_delay_s())

    def _on_connected(self, failing_since: float | None) -> None:
        self.connected = True
        self.connected_since_ms = self._clock_ms()
        self._log.info(
            "uplink_up",
            host=self._params.host,
            port=self._params.port,
            attempts=self._backoff.attempts,
            outage_s=None if failing_since is None else round(time.monotonic() - failing_since, 3),
        )
        self._backoff.reset()

    async def _session(self, conn: mqtt.Connection) -> None:
        status = contract.status_topic(self._site)
        await conn.publish(
            status,
            contract.status_payload(self._site, online=True, at_ms=self._clock_ms()),
            retain=True,
        )
        # Two tasks, the first to end ends the session. Not a TaskGroup: in Python 3.11 a
        # TaskGroup whose child fails leaves its task marked as cancelled (no uncancel), and a
        # real shutdown cancel that meets a failing child comes out as the failure; either way
        # this reconnect loop could not tell a shutdown from a lost connection.
        watch = asyncio.create_task(conn.wait_closed(), name=f"uplink:{self.name}:watch")
        drain = asyncio.create_task(self._drain(conn), name=f"uplink:{self.name}:drain")
        try:
            done, _ = await asyncio.wait({watch, drain}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel_all(watch, drain)
            # Shutting down: say so before the clean disconnect, which suppresses the will.
            offline = contract.status_payload(self._site, online=False, at_ms=self._clock_ms())
            with contextlib.suppress(mqtt.MqttFailure):
                await conn.publish(status, offline, retain=True, timeout_s=1.0)
            raise
        await _cancel_all(watch, drain)
        for task in done:
            error = task.exception()
            if isinstance(error, BaseExceptionGroup):
                failures, rest = error.split(mqtt.MqttFailure)
                if rest is not None:
                    raise rest  # a bug, not the broker: let it be seen
                if failures is not None:
                    raise _first_leaf(failures)
            if error is not None:
                raise error
        raise mqtt.MqttFailure("session ended")

    async def _drain(self, conn: mqtt.Connection) -> None:
        self._active = drain = Drain(
            self.name,
            self._outbox,
            self._site,
            conn,
            window=self._params.max_inflight,
            connected_since_ms=self.connected_since_ms or 0,
        )
        try:
            await drain.run()
        finally:
            self._sent_before += drain.sent
            self._active = None

    @property
    def sent_count(self) -> int:
        """Events this uplink has had acknowledged since start."""
        return self._sent_before + (self._active.sent if self._active is not None else 0)


async def _cancel_all(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    # Their outcomes are read by the caller where they matter; here they only have to end.
    await asyncio.gather(*tasks, return_exceptions=True)


def _first_leaf(group: BaseExceptionGroup[mqtt.MqttFailure]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
