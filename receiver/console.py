"""The receiving console: subscribes to gateways on one broker, verifies what they publish, and
keeps the alarm board, the seq-gap check and the silence check current; sends signed
`acknowledge` and `replay` commands and reports their results.

Owns the MQTT session of a console (through `gateway.uplink.mqtt`, with `Backoff` between attempts),
payload verification (`auth.verify_payload`, refusals counted and reported), the mapping from
topics to the pure state in `receiver.state`, and the queue of outgoing commands (signed when
they are sent, so a command held while the broker is away is still fresh). Everything it
learns goes out as records through `sink`: events as received (without `sig`) and notices with
a `"console"` key. It does not draw the terminal (`receiver.view`), parse the command line or
touch the TTY (`receiver.cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core import auth
from gateway.core.backoff import Backoff
from gateway.uplink import mqtt
from receiver.compliance import ComplianceBoard
from receiver.probe import PROBE_TIMEOUT_S, ShareUnsupported, check_share
from receiver.state import (
    AlarmBoard,
    Deduper,
    Gap,
    GapTracker,
    GatewayRef,
    Notice,
    SilenceTracker,
    TestModes,
)

Sink = Callable[[dict[str, Any]], None]
"""Receives every verified, first-seen event and every notice, in order."""

_RECENT_NOTICES: Final = 8


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Signer:
    """The console's own key, for the commands it sends."""

    private_key: Ed25519PrivateKey
    key_id: str


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    broker: mqtt.BrokerParams
    gateway_keys: Mapping[str, Ed25519PublicKey]
    root: str = "schoolgate/v1"
    gateways: tuple[str, ...] = ("+/+",)
    """`school/gateway` topic filters (each part an id or `+`)."""
    allow_unsigned: bool = False
    """Accept payloads with neither `sig` nor `signer` (gateways without [security])."""
    signer: Signer | None = None
    operator: str = "console"
    silent_after_s: float = 90.0
    share_group: str | None = None
    share_probe_timeout_s: float = PROBE_TIMEOUT_S
    school_pattern: str | None = None
    """Only schools whose id matches this shell pattern (`haidian-*`: a district); the others'
    messages are ignored, so a district's console keeps only its district in memory."""
    max_events: int | None = None
    """Stop after this many events (scripted use)."""
    tick_s: float = 1.0


@dataclass(slots=True)
class _Outgoing:
    ref: GatewayRef
    command: str
    args: dict[str, Any]
    command_id: str


class Refused(Exception):
    """A payload is not shown: unsigned, badly signed, or not what its topic promises."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PayloadError(Refused):
    """A payload verified but does not have the fields its topic promises."""

    def __init__(self, detail: str) -> None:
        super().__init__("malformed", detail)


def _int_field(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if type(value) is not int or value < 0:
        raise PayloadError(f"{name} must be a non-negative integer")
    return value


def _str_field(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{name} must be a non-empty string")
    return value


class Console:
    def __init__(
        self,
        options: ConsoleOptions,
        sink: Sink,
        *,
        keys: asyncio.Queue[str] | None = None,
        on_tick: Callable[[], None] | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.options = options
        self._sink = sink
        self._keys = keys
        self._on_tick = on_tick
        self._clock_ms = clock_ms
        now = clock_ms()
        self.deduper = Deduper()
        self.board = AlarmBoard()
        self.test_modes = TestModes()
        self.gaps = GapTracker()
        expected = [
            GatewayRef(*g.split("/", 1)) for g in options.gateways if "+" not in g.split("/")
        ]
        self.silence = SilenceTracker(round(options.silent_after_s * 1000), expected, now)
        self.refused: Counter[str] = Counter()
        self.recent: deque[Notice] = deque(maxlen=_RECENT_NOTICES)
        self.events_seen = 0
        self.compliance = ComplianceBoard()
        self.heartbeats_heard = 0
        self.filtered_out = 0
        """Messages of schools outside `school_pattern`, ignored."""
        """Verified heartbeats, every gateway: each one is a gap check (or a baseline for it)."""
        self.connected = False
        self._reported_down = False
        self.subscribed = asyncio.Event()
        """Set once the first session has subscribed: the console is listening."""
        self._pending: dict[str, _Outgoing] = {}
        self._outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._prefix = options.root + "/"

    def now_ms(self) -> int:
        return self._clock_ms()

    # --- what comes in ------------------------------------------------------------------------

    def handle(self, topic: str, raw: bytes) -> None:
        """One message from the broker: verify it and update the state (no I/O)."""
        self._changed.set()
        parts = topic[len(self._prefix) :].split("/") if topic.startswith(self._prefix) else []
        if len(parts) < 3:
            return  # not a topic we subscribed to as a gateway topic (e.g. our own commands)
        ref, kind = GatewayRef(parts[0], parts[1]), parts[2]
        if kind == "commands":
            return
        pattern = self.options.school_pattern
        if pattern is not None and not fnmatch.fnmatchcase(ref.school, pattern):
            self.filtered_out += 1
            return
        try:
            obj = self._open(raw)
            if obj.get("school") != ref.school or obj.get("gateway") != ref.gateway:
                raise PayloadError("school/gateway differ from the topic")
            now = self._clock_ms()
            if kind == "events":
                self._on_event(ref, obj, now)
            elif kind == "heartbeat":
                self._on_heartbeat(ref, obj, now)
            elif kind == "status":
                online = obj.get("online")
                if not isinstance(online, bool):
                    raise PayloadError("online must be true or false")
                self._notices(self.silence.heard(ref, now, online=online))
            elif kind == "results":
                self._on_result(ref, obj, now)
        except Refused as exc:
            self._refuse(topic, exc.reason, exc.detail)

    def _open(self, raw: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise Refused("malformed", "not JSON") from None
        if not isinstance(obj, dict):
            raise Refused("malformed", "not a JSON object")
        if "sig" not in obj and "signer" not in obj:
            if self.options.allow_unsigned:
                return obj
            raise Refused("unsigned", "no sig/signer (--allow-unsigned accepts that)")
        # A payload that carries a signature is always checked, --allow-unsigned or not.
        try:
            return auth.verify_payload(raw, self.options.gateway_keys)
        except auth.PayloadRejected as exc:
            raise Refused(exc.reason, exc.detail) from None

    def _on_event(self, ref: GatewayRef, obj: dict[str, Any], now: int) -> None:
        event_id = _str_field(obj, "id")
        seq = _int_field(obj, "seq")
        _str_field(obj, "type")
        self._notices(self.silence.heard(ref, now))
        if not self.deduper.first_time(event_id):
            return
        self.board.apply(ref, obj, now)
        self.compliance.apply(str(ref), obj)
        test_mode = self.test_modes.apply(ref, obj)
        if test_mode is not None:
            self._notice(test_mode)
        if self.options.share_group is None:
            self._notices(gap.notice("gap_filled") for gap in self.gaps.saw(ref, seq))
        self.events_seen += 1
        self._sink(obj)
        if self.options.max_events is not None and self.events_seen >= self.options.max_events:
            self.stop()

    def _on_heartbeat(self, ref: GatewayRef, obj: dict[str, Any], now: int) -> None:
        if obj.get("type") != "heartbeat":
            raise PayloadError("type must be heartbeat")
        from_seq, last_seq = _int_field(obj, "from_seq"), _int_field(obj, "last_seq")
        routed = _int_field(obj, "routed")
        if from_seq > last_seq or routed > last_seq - from_seq:
            raise PayloadError("heartbeat range does not hold `routed` events")
        self._notices(self.silence.heard(ref, now, online=True))
        self.heartbeats_heard += 1
        if self.options.share_group is not None:
            return  # each console of a share group sees only part of the events (console.md)
        # First the range between the last heartbeat heard and this one (heartbeats missed
        # while this console was away), then this heartbeat's own range.
        for gap in (
            self.gaps.missed(ref, from_seq, last_seq),
            self.gaps.heartbeat(ref, from_seq, last_seq, routed),
        ):
            if gap is not None:
                self._ask_replay(gap)

    def _ask_replay(self, gap: Gap) -> None:
        signer = self.options.signer
        self._notice({**gap.notice("gap"), "replay": "requested" if signer else "no_key"})
        if signer is None:
            return
        for low, high in gap.replay_ranges():
            outgoing = self._queue(gap.ref, "replay", {"from_seq": low, "to_seq": high})
            gap.replay_ids.append(outgoing.command_id)

    def _on_result(self, ref: GatewayRef, obj: dict[str, Any], now: int) -> None:
        self._notices(self.silence.heard(ref, now))
        outgoing = self._pending.pop(str(obj.get("command_id")), None)
        if outgoing is None:
            return  # another console's command, or one that could not be parsed
        self._notice(
            {
                "console": "command_result",
                "school": ref.school,
                "gateway": ref.gateway,
                "command_id": outgoing.command_id,
                "command": outgoing.command,
                "args": outgoing.args,
                "status": obj.get("status"),
                "reason": obj.get("reason"),
                "detail": obj.get("detail", ""),
            }
        )
        if outgoing.command == "replay" and obj.get("status") == "done":
            answer = obj.get("result")
            seqs = answer.get("seqs") if isinstance(answer, dict) else None
            if isinstance(seqs, list) and all(type(s) is int for s in seqs):
                filled = self.gaps.replied(outgoing.command_id, seqs)
                self._notices(gap.notice("gap_filled") for gap in filled)

    def _refuse(self, topic: str, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        self._notice({"console": "refused", "topic": topic, "reason": reason, "detail": detail})

    def _notice(self, notice: Notice) -> None:
        self.recent.append(notice)
        self._changed.set()
        self._sink(notice)

    def _notices(self, notices: Iterable[Notice]) -> None:
        for notice in notices:
            self._notice(notice)

    # --- what goes out ------------------------------------------------------------------------

    def press(self, keys: str) -> None:
        """Keystrokes from the operator: 1-9 acknowledge that alarm, `a` the top
        unacknowledged one, `q` quits."""
        for key in keys:
            if key == "q":
                self.stop()
            elif key == "a" or key.isdigit():
                self._acknowledge_key(key)

    def _acknowledge_key(self, key: str) -> None:
        if key == "a":
            alarm = self.board.top_unacknowledged()
            if alarm is None:
                self._notice({"console": "error", "detail": "no unacknowledged alarm"})
                return
        else:
            ordered = self.board.ordered()
            index = int(key) - 1
            if not 0 <= index < len(ordered):
                self._notice({"console": "error", "detail": f"no alarm number {key}"})
                return
            alarm = ordered[index]
        if self.options.signer is None:
            self._notice({"console": "error", "detail": "no --key: cannot acknowledge"})
            return
        args = {"alarm_id": alarm.alarm_id, "by": self.options.operator}
        self._queue(alarm.ref, "acknowledge", args)

    def _queue(self, ref: GatewayRef, command: str, args: dict[str, Any]) -> _Outgoing:
        # The id is fixed now so a result can be matched; the signature and issued_at are made
        # when it is sent.
        outgoing = _Outgoing(ref, command, args, str(uuid.uuid4()))
        self._pending[outgoing.command_id] = outgoing
        self._outgoing.put_nowait(outgoing)
        self._notice(
            {
                "console": "command_queued",
                "school": ref.school,
                "gateway": ref.gateway,
                "command_id": outgoing.command_id,
                "command": command,
                "args": args,
            }
        )
        return outgoing

    def _signed(self, outgoing: _Outgoing) -> bytes:
        signer = self.options.signer
        assert signer is not None  # only queued when there is a key
        issued_at = datetime.fromtimestamp(self._clock_ms() / 1000).astimezone()
        body = auth.build_command(
            gateway=outgoing.ref.gateway,
            school=outgoing.ref.school,
            command=outgoing.command,
            args=outgoing.args,
            issued_at=issued_at,
            command_id=outgoing.command_id,
        )
        signed = auth.sign_command(body, signer.private_key, signer.key_id)
        return json.dumps(signed, ensure_ascii=False, separators=(",", ":")).encode()

    async def _send_commands(self, conn: mqtt.Connection) -> None:
        while True:
            outgoing = await self._outgoing.get()
            topic = f"{self.options.root}/{outgoing.ref}/commands"
            try:
                await conn.publish(topic, self._signed(outgoing), qos=1)
            except mqtt.MqttFailure:
                self._outgoing.put_nowait(outgoing)  # sent again on the next connection
                raise
            self._notice(
                {"console": "command_sent", "command_id": outgoing.command_id, "topic": topic}
            )

    # --- running ------------------------------------------------------------------------------

    def topic_filters(self) -> list[str]:
        """Events are shared in a share group; heartbeats, status (retained messages are not
        sent to shared subscriptions) and results go to every console."""
        filters = []
        group = self.options.share_group
        for gateways in self.options.gateways:
            base = f"{self.options.root}/{gateways}"
            events = f"{base}/events/#"
            filters.append(events if group is None else f"$share/{group}/{events}")
            filters += [f"{base}/heartbeat", f"{base}/status", f"{base}/results"]
        return filters

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> None:
        """Until `stop()`, `max_events`, `q`, or `duration_s` has passed. ShareUnsupported
        when `share_group` is set and the broker does not deliver through shared
        subscriptions (`receiver.probe`)."""
        try:
            await self._run(duration_s)
        except* ShareUnsupported as failures:
            raise failures.exceptions[0] from None

    async def _run(self, duration_s: float | None) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._mqtt_loop(), name="console:mqtt"),
                group.create_task(self._tick_loop(), name="console:tick"),
            ]
            if self._keys is not None:
                tasks.append(group.create_task(self._key_loop(self._keys), name="console:keys"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration_s):
                    await self._stop.wait()
            for task in tasks:
                task.cancel()
        if self._on_tick is not None:
            self._on_tick()  # the final state, once more

    async def _key_loop(self, keys: asyncio.Queue[str]) -> None:
        while True:
            self.press(await keys.get())

    async def _tick_loop(self) -> None:
        """Silence checks and redraws: at least every `tick_s`, sooner when something changed."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.tick_s):
                    await self._changed.wait()
            self._changed.clear()
            self._notices(self.silence.check(self._clock_ms()))
            if self._on_tick is not None:
                self._on_tick()

    async def _mqtt_loop(self) -> None:
        backoff = Backoff(base_s=0.2, cap_s=10.0)
        while True:
            error = ""
            try:
                async with mqtt.connect(self.options.broker) as conn:
                    for topic_filter in self.topic_filters():
                        await conn.subscribe(topic_filter, qos=1)
                    if self.options.share_group is not None:
                        await check_share(
                            conn,
                            group=self.options.share_group,
                            root=self.options.root,
                            on_message=self.handle,
                            timeout_s=self.options.share_probe_timeout_s,
                        )
                    backoff.reset()
                    self._set_connected(True, "")
                    self.subscribed.set()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._send_commands(conn), name="console:send")
                        async for message in conn.messages():
                            self.handle(message.topic, message.payload)
            except* mqtt.MqttFailure as failures:
                error = str(failures.exceptions[0])
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # closing, not a broker fault
            self._set_connected(False, error)
            await asyncio.sleep(backoff.next_delay_s())

    def _set_connected(self, connected: bool, error: str) -> None:
        # Reported when the state changes, and the first failure once: not on every retry.
        if connected == self.connected and (connected or self._reported_down):
            return
        self.connected = connected
        self._reported_down = not connected
        broker = self.options.broker
        self._notice(
            {
                "console": "broker",
                "state": "connected" if connected else "disconnected",
                "broker": f"{broker.host}:{broker.port}",
                "error": error,
            }
        )
