"""A fleet of simulated gateways in one process, speaking the MQTT contract (issue 15).

    python -m simulators fleet --gateways 1000 --port 1883 --keys-dir /tmp/fleet-keys \\
        [--node HOST:PORT ...] [--schools 250] [--alarms-per-min 2] [--events-per-min 60]
        [--heartbeat-s 30] [--trust ID=PUB ...] [--duration S]
        [--connect-rate 100] [--connect-window 100] [--keepalive-s 60] [--connect-timeout-s 60]

Owns `SimGateway` (one gateway: its own MQTT session with the retained status and its will,
heartbeats every `heartbeat_s` with the seq range and count of what it published since the last
one, device events and alarms signed with its own Ed25519 key, `acknowledge` and `replay`
commands verified with `gateway.core.auth` and answered like the real gateway: the first
acknowledgement of an alarm makes an `alarm.acknowledged` event naming who, later ones change
nothing) and `Fleet` (N of them, their keys written to a directory the console reads with
`--gateway-keys`, alarms and events at fleet-wide rates). Payloads come from `gateway.core.contract`
and signatures from `gateway.core.auth`, so a receiver cannot tell a simulated gateway from a real
one on the wire.

Every connection attempt (the first and each reconnect) goes through one `ConnectPacer`
(simulators/fleet_pacing.py): at most `--connect-rate` start per second and at most
`--connect-window` handshakes are open at once, so a slow broker makes the fleet wait. The
keepalive is never shorter than the connect timeout: paho drops a connection attempt that has
heard nothing for one keepalive, whatever the timeout says (what kept 4,896 of 5,000 off a
loaded RabbitMQ cluster); and a longer keepalive lets a slow PINGRESP come late instead of
ending the session. Each gateway records when its first attempt started and when it was first
up (`first_attempt_at`, `first_up_at`, monotonic), for the bench's ramp figures.

A simulated gateway keeps what it has not had a PUBACK for and sends it again after a
reconnect (to the next of its broker nodes, after a jittered back-off), so nothing it produced
is lost across a broker node's death; it keeps the last `history` events for replays. It does
not simulate devices, lines, the store or rules: that is the real gateway's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core import auth, contract, keys
from gateway.core.backoff import Backoff
from gateway.core.events import DeviceRef, Event, Severity, new_event_id
from gateway.uplink import mqtt
from simulators.fleet_pacing import DEFAULT_CONNECT_RATE_PER_S, DEFAULT_CONNECT_WINDOW, ConnectPacer

log = structlog.get_logger(__name__)

_TZ: Final = ZoneInfo("Asia/Shanghai")
_PANIC_BOX: Final = DeviceRef("panic_box_1", "alarm_box", "North gate booth")
_DOOR: Final = DeviceRef("door_1", "access_controller", "Main gate")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def gateway_key_id(school: str, gateway: str) -> str:
    """The key id a simulated gateway signs with (and its `.pub` file's name)."""
    return f"{school}-{gateway}"


@dataclass(slots=True)
class _Latch:
    acknowledged_by: str | None = None


@dataclass(slots=True)
class SimGateway:
    """One simulated gateway. `run()` keeps it connected (to `nodes[start_node]`, then the next
    node on each loss) until cancelled."""

    school: str
    gateway: str
    private_key: Ed25519PrivateKey
    nodes: Sequence[tuple[str, int]]
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    root: str = "schoolgate/v1"
    heartbeat_s: float = 30.0
    start_node: int = 0
    history: int = 2000
    connect_timeout_s: float = 5.0
    """For CONNECT and SUBSCRIBE; a loaded cluster needs longer, and giving up early only
    leaves it a half-made session and brings another attempt."""
    keepalive_s: int = 15
    pacer: ConnectPacer | None = None
    """Shared by a fleet: when each connection attempt may start."""
    first_attempt_at: float | None = None
    first_up_at: float | None = None
    """Monotonic times of its first connection attempt's start and of its first session up."""
    attempts: int = 0
    site: contract.Site = field(init=False)
    seq: int = 0
    node_in_use: tuple[str, int] | None = None
    connects: int = 0
    last_error: str = ""
    """Why the last session ended or could not start (for a test's or bench's failure message)."""
    _unsent: deque[tuple[str, bytes, bool]] = field(default_factory=deque)
    _sent: deque[tuple[int, bytes]] = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it connects, loses its node or has sent everything: what waiters look at (a
    `Fleet` hands every gateway the same event)."""
    _latches: dict[str, _Latch] = field(default_factory=dict)
    _beat_from: int = 0
    _commands: auth.ReplayCache = field(init=False)
    _trust: auth.TrustStore = field(init=False)

    def __post_init__(self) -> None:
        self.site = contract.Site(self.school, self.gateway, _TZ, self.root)
        self._sent = deque(maxlen=self.history)
        self._commands = auth.ReplayCache(since_ms=_now_ms() - 1)
        self._trust = auth.TrustStore(
            {k: auth.TrustedKey(v, frozenset({auth.ANY_COMMAND})) for k, v in self.trusted.items()}
        )

    @property
    def key_id(self) -> str:
        return gateway_key_id(self.school, self.gateway)

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def _sign(self, payload: bytes) -> bytes:
        return auth.sign_payload(payload, self.private_key, self.key_id)

    def _queue(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._unsent.append((topic, payload, retain))
        self._wake.set()

    # --- what the gateway produces -----------------------------------------------------------

    def emit(self, event_type: str, device: DeviceRef, **kwargs: Any) -> Event:
        """Stamp the next seq on an event, sign it and queue it for the broker."""
        self.seq += 1
        event = Event(
            id=kwargs.pop("event_id", None) or new_event_id(),
            type=event_type,
            severity=kwargs.pop("severity", Severity.INFO),
            device=device,
            occurred_at_ms=_now_ms(),
            seq=self.seq,
            **kwargs,
        )
        body = contract.encode_event_body(self.site, event)
        self._sent.append((self.seq, body))
        payload = contract.finish_event_payload(body, historical=False, attempt=1)
        self._queue(contract.event_topic(self.site, event.category), self._sign(payload))
        return event

    def press(self) -> Event:
        """A panic button pressed: a new latched alarm (its id is its first event's id)."""
        alarm_id = new_event_id()
        self._latches[alarm_id] = _Latch()
        return self.emit(
            "alarm.panic",
            _PANIC_BOX,
            severity=Severity.CRITICAL,
            alarm_id=alarm_id,
            data={"presses": 1},
            event_id=alarm_id,
        )

    def device_event(self) -> Event:
        return self.emit("access.door_opened", _DOOR, data={"reader": "main"})

    def _heartbeat(self) -> None:
        beat = contract.Heartbeat(
            destination="police",
            boot=1,
            from_seq=self._beat_from,
            last_seq=self.seq,
            routed=self.seq - self._beat_from,
            pending=len(self._unsent),
            paths={"police": "up"},
        )
        self._beat_from = self.seq
        body = contract.heartbeat_payload(self.site, beat, at_ms=_now_ms())
        self._queue(contract.heartbeat_topic(self.site), self._sign(body))

    # --- commands ---------------------------------------------------------------------------

    def _answer(self, raw: bytes) -> None:
        now = _now_ms()
        try:
            command = auth.verify_command(
                raw, trust=self._trust, now_ms=now, site=self.site, replay=self._commands
            )
        except auth.CommandRejected as exc:
            outcome = contract.CommandResult(None, None, "rejected", exc.reason, exc.detail)
        else:
            outcome = self._dispatch(command)
        body = contract.result_payload(self.site, outcome, at_ms=now)
        self._queue(contract.results_topic(self.site), self._sign(body))

    def _dispatch(self, command: auth.Command) -> contract.CommandResult:
        args = command.args
        if command.command == "acknowledge":
            alarm_id, by = args.get("alarm_id"), args.get("by")
            latch = self._latches.get(alarm_id) if isinstance(alarm_id, str) else None
            if latch is None or not isinstance(by, str):
                return contract.CommandResult(
                    command.id, command.command, "rejected", "unknown_alarm", str(alarm_id)
                )
            if latch.acknowledged_by is None:  # the first acknowledgement wins
                latch.acknowledged_by = by
                self.emit(
                    "alarm.acknowledged",
                    _PANIC_BOX,
                    alarm_id=alarm_id,
                    data={"by": by, "issuer": command.issuer, "command_id": command.id},
                )
            return contract.CommandResult(command.id, command.command, "done")
        if command.command == "replay":
            first, last = args.get("from_seq"), args.get("to_seq")
            if not isinstance(first, int) or not isinstance(last, int):
                return contract.CommandResult(
                    command.id, command.command, "rejected", "bad_args", "from_seq/to_seq"
                )
            seqs = self._replay(first, last)
            result = {"destination": "police", "from_seq": first, "to_seq": last, "seqs": seqs}
            return contract.CommandResult(command.id, command.command, "done", result=result)
        return contract.CommandResult(
            command.id, command.command, "rejected", "unsupported", "not simulated"
        )

    def _replay(self, first: int, last: int) -> list[int]:
        seqs = []
        for seq, body in self._sent:
            if first <= seq <= last:
                payload = contract.finish_event_payload(body, historical=True, attempt=2)
                category = contract.decode_event(payload)["type"].split(".", 1)[0]
                self._queue(contract.event_topic(self.site, category), self._sign(payload))
                seqs.append(seq)
        return seqs

    # --- the session ------------------------------------------------------------------------

    def _params(self, host: str, port: int) -> mqtt.BrokerParams:
        offline = contract.status_payload(self.site, online=False)
        return mqtt.BrokerParams(
            host=host,
            port=port,
            client_id=f"sim-{self.school}-{self.gateway}",
            will_topic=contract.status_topic(self.site),
            will_payload=self._sign(offline),
            keepalive_s=self.keepalive_s,
            connect_timeout_s=self.connect_timeout_s,
        )

    async def run(self) -> None:
        backoff = Backoff(base_s=0.5, cap_s=10.0)
        index = self.start_node
        while True:
            host, port = self.nodes[index % len(self.nodes)]
            try:
                async with contextlib.AsyncExitStack() as session:
                    async with self._pacing():
                        self.attempts += 1
                        if self.first_attempt_at is None:
                            self.first_attempt_at = time.monotonic()
                        conn = await session.enter_async_context(
                            mqtt.connect(self._params(host, port))
                        )
                        await conn.subscribe(contract.commands_topic(self.site), qos=1)
                        online = contract.status_payload(self.site, online=True, at_ms=_now_ms())
                        await conn.publish(
                            contract.status_topic(self.site), self._sign(online), retain=True
                        )
                    self.node_in_use = (host, port)
                    if self.first_up_at is None:
                        self.first_up_at = time.monotonic()
                    self.changed.set()
                    self.connects += 1
                    backoff.reset()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._send(conn), name=f"sim:{self.key_id}:send")
                        group.create_task(self._beat(), name=f"sim:{self.key_id}:beat")
                        async for message in conn.messages():
                            self._answer(message.payload)
            except* mqtt.MqttFailure as failures:
                self.last_error = f"{host}:{port}: {failures.exceptions[0]}"
            self.node_in_use = None
            self.changed.set()
            index += 1  # fail over to the next node
            await asyncio.sleep(backoff.next_delay_s())

    def _pacing(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext() if self.pacer is None else self.pacer.attempt()

    async def _send(self, conn: mqtt.Connection) -> None:
        while True:
            while self._unsent:
                topic, payload, retain = self._unsent[0]
                await conn.publish(topic, payload, qos=1, retain=retain)
                self._unsent.popleft()  # only once the broker has it (PUBACK)
            self.changed.set()
            self._wake.clear()
            await self._wake.wait()

    async def _beat(self) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat_s))
        while True:
            self._heartbeat()
            await asyncio.sleep(self.heartbeat_s)


@dataclass(slots=True)
class FleetOptions:
    nodes: Sequence[tuple[str, int]]
    gateways: int
    keys_dir: Path
    schools: int | None = None
    """Gateways are spread over this many schools (default: one gateway per school)."""
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    alarms_per_min: float = 0.0
    events_per_min: float = 0.0
    heartbeat_s: float = 30.0
    root: str = "schoolgate/v1"
    connect_timeout_s: float = 30.0
    keepalive_s: int = 60
    """Never below `connect_timeout_s` (checked): see the module docstring."""
    connect_rate_per_s: float = DEFAULT_CONNECT_RATE_PER_S
    connect_window: int = DEFAULT_CONNECT_WINDOW


class Fleet:
    """N simulated gateways; `async with Fleet(options) as fleet:` connects them all."""

    def __init__(self, options: FleetOptions) -> None:
        if options.gateways < 1:
            raise ValueError("gateways must be at least 1")
        if options.keepalive_s < options.connect_timeout_s:
            raise ValueError(
                f"keepalive ({options.keepalive_s} s) must be at least the connect timeout "
                f"({options.connect_timeout_s:g} s): paho drops an attempt that has heard "
                "nothing for one keepalive"
            )
        self.options = options
        self.pacer = ConnectPacer(options.connect_rate_per_s, options.connect_window)
        schools = options.schools or options.gateways
        options.keys_dir.mkdir(parents=True, exist_ok=True)
        self.gateways: list[SimGateway] = []
        self._changed = asyncio.Event()
        """Shared by every gateway: one wake-up per change, whatever the fleet's size."""
        for i in range(options.gateways):
            school, gateway = f"school-{i % schools + 1}", f"gate-{i // schools + 1}"
            key = self._key(school, gateway)
            self.gateways.append(
                SimGateway(
                    school,
                    gateway,
                    key,
                    options.nodes,
                    trusted=options.trusted,
                    root=options.root,
                    heartbeat_s=options.heartbeat_s,
                    start_node=i,  # spread over the nodes
                    connect_timeout_s=options.connect_timeout_s,
                    keepalive_s=options.keepalive_s,
                    pacer=self.pacer,
                    changed=self._changed,
                )
            )
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _key(self, school: str, gateway: str) -> Ed25519PrivateKey:
        key_id = gateway_key_id(school, gateway)
        private = self.options.keys_dir / f"{key_id}.key"
        if not private.exists():
            keys.write_key_pair(self.options.keys_dir, key_id)
        return keys.load_private_key(private)

    def connected(self) -> int:
        return sum(1 for g in self.gateways if g.node_in_use is not None)

    async def wait_until(self, test: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Until `test()` holds; it is tried again whenever a gateway's state changes."""
        # One event for the fleet, not one waiter per gateway: with thousands of gateways a
        # waiter each, re-made on every change, took most of the simulator's CPU while they
        # connected and slowed every handshake it was serving.
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()  # before the test: a change during it wakes the wait
                if test():
                    return
                await self._changed.wait()

    async def wait_connected(self, count: int | None = None, timeout_s: float = 60.0) -> None:
        want = len(self.gateways) if count is None else count
        await self.wait_until(lambda: self.connected() >= want, timeout_s)

    async def wait_sent(self, timeout_s: float = 60.0) -> None:
        """Until the brokers have acknowledged everything every gateway produced."""
        await self.wait_until(lambda: not any(g.unsent for g in self.gateways), timeout_s)

    async def _traffic(self, per_min: float, act: str) -> None:
        while True:
            await asyncio.sleep(random.expovariate(per_min / 60.0))
            gateway = random.choice(self.gateways)
            gateway.press() if act == "press" else gateway.device_event()

    async def __aenter__(self) -> Fleet:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for gateway in self.gateways:
            self._tasks.append(self._group.create_task(gateway.run(), name=f"sim:{gateway.key_id}"))
        for per_min, act in (
            (self.options.alarms_per_min, "press"),
            (self.options.events_per_min, "event"),
        ):
            if per_min > 0:
                self._tasks.append(
                    self._group.create_task(self._traffic(per_min, act), name=f"fleet:{act}")
                )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        group, self._group = self._group, None
        if group is not None:
            await group.__aexit__(None, None, None)
