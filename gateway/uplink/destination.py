"""One uplink per destination broker: connect, announce, drain the outbox, reconnect; with
several nodes, fail over to the next and go back to the first once it is back (`homing`).

Owns the connection loop of one destination (with `Backoff` between attempts), the retained
`online` status and the offline will, and the rule that a row is marked sent only after that
broker's PUBACK. Rows go out in pipelined batches bounded by `max_inflight`. It does not choose
what to send (the outbox orders rows) and knows nothing of other destinations, so a dead police
broker never slows the bureau uplink.

Commands it receives are untrusted bytes (issue 10): one that arrives retained is ignored
(counted); every other is answered, each in a task that turns any error but a lost connection
(`MqttFailure`) into a counted refusal, so no message ends the session. A refused command is
answered on the results topic only; an accepted one on its MQTT 5 response topic when that is
under the results topic (`contract.is_results_topic`), never on a topic the sender picks freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.commands.handlers import INTERNAL_ERROR, Commands
from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.store.records import UplinkStore
from gateway.uplink import mqtt
from gateway.uplink.drain import Drain
from gateway.uplink.homing import Homing
from gateway.uplink.nodes import Node, NodeRing, node_name
from gateway.uplink.paths import PathBoard

SentHook = Callable[[str, list[int]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Services:
    """What an uplink offers besides forwarding events, all optional."""

    commands: Commands | None = None
    """Subscribe to the commands topic and answer every command."""
    paths: PathBoard | None = None
    """Told when this path goes up or down and of every PUBACK."""
    heartbeat_s: float | None = None
    on_sent: SentHook | None = None
    """Told of every batch of events this broker acknowledged."""
    sign: Callable[[bytes], bytes] | None = None
    """Signs the status, heartbeat and result payloads (events are signed when stored)."""


@dataclass(frozen=True, slots=True)
class Failover:
    """A destination with several broker nodes (a cluster): which to try, in what order."""

    nodes: NodeRing
    spread_s: float | None = None
    """After a working connection is lost, the first attempt (on the next node) waits a random
    time below this; None: the back-off's own first delay."""
    return_after_s: float = 0.0
    """Not on the first node: check it about this often and go back when it accepts a
    connection (`homing.Homing`); 0: never."""


class Uplink:
    def __init__(
        self,
        name: str,
        params: mqtt.BrokerParams,
        store: UplinkStore,
        site: contract.Site,
        *,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        services: Services | None = None,
        failover: Failover | None = None,
    ) -> None:
        self.name = name
        self._failover = failover or Failover(NodeRing([(params.host, params.port)], name))
        self._services = services or Services()
        self._params = params
        self._queue = store.queue
        self._records = store.records
        self._site = site
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=10.0)
        self._clock: Clock = clock or SystemClock()
        """Stamps (wall), the outage's length, the back-off and heartbeat waits (monotonic)."""
        self._log = structlog.get_logger(__name__).bind(destination=name)
        self._homing = Homing(self._failover.return_after_s, self._clock)
        self.connected = False
        self.connected_since_ms: int | None = None
        self.node: str | None = None
        """The broker node in use ('host:port'), None while not connected."""
        self._sent_before = 0
        self._active: Drain | None = None

    async def run(self) -> None:
        failing_since: float | None = None
        nodes = self._failover.nodes
        while True:
            host, port = nodes.current
            was_up = False
            try:
                params = dataclasses.replace(self._params, host=host, port=port)
                async with mqtt.connect(params) as conn:
                    was_up = True
                    self._on_connected(failing_since)
                    failing_since = None
                    await self._session(conn)
                # The session ended without a failure only because the first node is back:
                # there at once (what was in flight is claimed again there, by the same ids).
                self.connected = False
                self.node = None
                self._log.info("uplink_back_to_first_node", node=node_name(nodes.back_to_first()))
                continue
            except mqtt.MqttFailure as exc:
                self.connected = False
                self.node = None
                if self._services.paths is not None:
                    self._services.paths.down(self.name, str(exc))
                if failing_since is None:
                    failing_since = self._clock.monotonic()
                    # Logged once per outage, not on every retry.
                    self._log.warning("uplink_down", node=node_name((host, port)), error=str(exc))
                if nodes.several:
                    # A working node that dropped us is most likely gone: the next one, now.
                    self._log.info("uplink_next_node", node=node_name(nodes.lost()))
            await self._clock.sleep(self._retry_delay_s(lost_working=was_up))

    def _retry_delay_s(self, *, lost_working: bool) -> float:
        spread_s = self._failover.spread_s
        if lost_working and spread_s is not None:
            return self._backoff.spread_s(spread_s)
        return self._backoff.next_delay_s()

    def _on_connected(self, failing_since: float | None) -> None:
        self.connected = True
        self.node = node_name(self._failover.nodes.current)
        if self._services.paths is not None:
            self._services.paths.up(self.name)
        self.connected_since_ms = self._clock.wall_ms()
        self._log.info(
            "uplink_up",
            node=self.node,
            attempts=self._backoff.attempts,
            outage_s=None
            if failing_since is None
            else round(self._clock.monotonic() - failing_since, 3),
        )
        self._backoff.reset()

    async def _session(self, conn: mqtt.Connection) -> None:
        status = contract.status_topic(self._site)
        if self._services.commands is not None:
            # Before `online`: a receiver that sees us online can command us at once.
            await conn.subscribe(contract.commands_topic(self._site), qos=1)
        await conn.publish(
            status,
            self._signed(
                contract.status_payload(self._site, online=True, at_ms=self._clock.wall_ms())
            ),
            retain=True,
        )
        # A few tasks, the first to end ends the session. Not a TaskGroup: in Python 3.11 a
        # TaskGroup whose child fails leaves its task marked as cancelled (no uncancel), and a
        # real shutdown cancel that meets a failing child comes out as the failure; either way
        # this reconnect loop could not tell a shutdown from a lost connection.
        tasks = {
            asyncio.create_task(self._receive(conn), name=f"uplink:{self.name}:receive"),
            asyncio.create_task(self._drain(conn), name=f"uplink:{self.name}:drain"),
        }
        if self._services.heartbeat_s is not None:
            beat = self._heartbeats(conn, self._services.heartbeat_s)
            tasks.add(asyncio.create_task(beat, name=f"uplink:{self.name}:heartbeat"))
        homing = None
        nodes = self._failover.nodes
        if self._failover.return_after_s > 0 and not nodes.on_first:
            back = self._homing.wait_until_back(nodes.first, self._accepts)
            homing = asyncio.create_task(back, name=f"uplink:{self.name}:homing")
            tasks.add(homing)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel_all(*tasks)
            # Shutting down: say so before the clean disconnect, which suppresses the will.
            offline = contract.status_payload(self._site, online=False, at_ms=self._clock.wall_ms())
            with contextlib.suppress(mqtt.MqttFailure):
                await conn.publish(status, self._signed(offline), retain=True, timeout_s=1.0)
            raise
        await _cancel_all(*tasks)
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
        if homing is not None and homing in done:
            return  # the first node is back: `run` moves there
        raise mqtt.MqttFailure("session ended")

    async def _accepts(self, node: Node) -> bool:
        """Does `node` accept a connection? Logs in there with our credentials under a client id
        of its own (on a cluster, our own id would take our live session away), with no will,
        and leaves at once."""
        host, port = node
        check = dataclasses.replace(
            self._params,
            host=host,
            port=port,
            client_id=f"{self._params.client_id}-check",
            will_topic=None,
            clean_session=True,
        )
        try:
            async with mqtt.connect(check):
                return True
        except mqtt.MqttFailure as exc:
            self._log.info("first_node_still_down", node=node_name(node), error=str(exc))
            return False

    def _signed(self, payload: bytes) -> bytes:
        return payload if self._services.sign is None else self._services.sign(payload)

    async def _receive(self, conn: mqtt.Connection) -> None:
        """Answer commands as they come (each in its own task: a bollard's travel must not hold
        an acknowledgement); ends with MqttFailure when the connection drops."""
        commands_topic = contract.commands_topic(self._site)
        async with asyncio.TaskGroup() as tg:
            async for message in conn.messages():
                commands = self._services.commands
                if message.topic != commands_topic or commands is None:
                    continue
                if message.retain:
                    # Kept by the broker, it would be acted on at every start: never acted on.
                    commands.ignore_retained(message.payload, destination=self.name)
                    continue
                tg.create_task(self._answer(conn, message, commands))

    async def _answer(
        self, conn: mqtt.Connection, message: mqtt.Message, commands: Commands
    ) -> None:
        """Handle one command and publish its answer. The boundary: anything but a lost
        connection becomes a counted, logged refusal (`internal_error`)."""
        try:
            replay = functools.partial(self._replay, conn)
            outcome = await commands.handle(message.payload, destination=self.name, replay=replay)
            paths = self._services.paths
            if paths is not None and outcome.status == "done" and outcome.command == "acknowledge":
                paths.acknowledged(self.name)
            payload = self._result(outcome)
        except mqtt.MqttFailure:
            raise
        except Exception as exc:
            outcome = self._refused(commands, message, exc, "the gateway could not answer it")
            try:
                payload = self._result(outcome)
            except Exception as again:  # nothing left to answer with; it is counted and logged
                self._log.error("command_unanswered", error=repr(again), exc_info=again)
                return
        topic = self._reply_topic(message, outcome, v5=conn.v5)
        try:
            await conn.publish(topic, payload, correlation_data=message.correlation_data)
        except mqtt.MqttFailure:
            raise
        except Exception as exc:  # e.g. a topic or property the client refuses
            self._refused(commands, message, exc, "the answer could not be published")

    def _refused(
        self, commands: Commands, message: mqtt.Message, error: Exception, detail: str
    ) -> contract.CommandResult:
        return commands.refused(
            INTERNAL_ERROR, raw=message.payload, detail=detail, destination=self.name, error=error
        )

    def _result(self, outcome: contract.CommandResult) -> bytes:
        return self._signed(
            contract.result_payload(self._site, outcome, at_ms=self._clock.wall_ms())
        )

    def _reply_topic(
        self, message: mqtt.Message, outcome: contract.CommandResult, *, v5: bool
    ) -> str:
        """The results topic, or an accepted command's response topic under it."""
        reply_to = message.response_topic
        if not (v5 and reply_to):
            return contract.results_topic(self._site)
        if outcome.status != "rejected" and contract.is_results_topic(self._site, reply_to):
            return reply_to
        self._log.warning(
            "response_topic_refused",
            response_topic=contract.clean_text(reply_to, 256),
            status=outcome.status,
            command_id=outcome.command_id,
        )
        return contract.results_topic(self._site)

    async def _replay(self, conn: mqtt.Connection, from_seq: int, to_seq: int) -> list[int]:
        """Re-send stored events of a seq range to this broker, marked historical; their
        delivery state is not changed (they are copies from the local record)."""
        rows = await self._records.replay(self.name, from_seq, to_seq)
        for row in rows:
            payload = contract.finish_event_payload(row.body, historical=True, attempt=row.attempt)
            await conn.publish(contract.event_topic(self._site, row.category), payload)
        self._log.info("replayed", from_seq=from_seq, to_seq=to_seq, events=len(rows))
        return [row.seq for row in rows]

    async def _heartbeats(self, conn: mqtt.Connection, every_s: float) -> None:
        previous: int | None = None
        while True:
            last = await self._records.last_sent_seq(self.name)
            # The first heartbeat of a connection is a baseline: an empty range.
            from_seq = last if previous is None else previous
            routed = await self._records.routed_count(self.name, from_seq, last)
            paths = self._services.paths
            beat = contract.Heartbeat(
                destination=self.name,
                boot=self._records.boot_count,
                from_seq=from_seq,
                last_seq=last,
                routed=routed,
                pending=await self._records.pending_count(self.name),
                paths=paths.snapshot() if paths is not None else {self.name: "up"},
                node=self.node,
            )
            payload = contract.heartbeat_payload(self._site, beat, at_ms=self._clock.wall_ms())
            await conn.publish(contract.heartbeat_topic(self._site), self._signed(payload))
            previous = last
            await self._clock.sleep(every_s)

    async def _sent(self, destination: str, seqs: list[int]) -> None:
        if self._services.paths is not None:
            self._services.paths.puback(destination)
        if self._services.on_sent is not None:
            await self._services.on_sent(destination, seqs)

    async def _drain(self, conn: mqtt.Connection) -> None:
        self._active = drain = Drain(
            self.name,
            self._queue,
            self._site,
            conn,
            window=self._params.max_inflight,
            connected_since_ms=self.connected_since_ms or 0,
            on_sent=self._sent,
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
