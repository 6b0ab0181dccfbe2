"""The whole command path under a barrage (issue 10): hypothesis sends random bytes, random JSON
(lone surrogates, huge and negative numbers, deep nesting) and valid signed commands with one
field mutated (re-signed or not), retained or not, with and without an MQTT 5 response topic,
through a real mosquitto to the real uplink and command handler, on MQTT 3.1.1 and 5.

Each message is answered exactly once (a signed, valid answer on the results topic or, for an
accepted command, its response topic under it) or, when retained, ignored and counted; the uplink
task never ends and never reconnects but when the test restarts it; nothing is published on an
event topic; and a valid signed command after the barrage is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from command_support import (
    CONSOLE_KEY,
    GATEWAY_KEY,
    SITE,
    CommandUplink,
    command,
    command_uplink,
    wait_until,
)
from hypothesis import HealthCheck, settings
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core import auth, contract
from simulators.broker import MosquittoBroker
from simulators.listener import Listener, listen

pytestmark = pytest.mark.timeout(40)

settings.register_profile(
    "command-fuzz",
    max_examples=35,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

COMMANDS = contract.commands_topic(SITE)
VERSIONS = {"3.1.1": aiomqtt.ProtocolVersion.V311, "5": aiomqtt.ProtocolVersion.V5}
RESULTS = contract.results_topic(SITE)
SURROGATES = ["\ud800", "\udfff", "a\udbffb", "\udc00\ud800"]

VALID_ARGS: dict[str, dict[str, Any]] = {
    "acknowledge": {"alarm_id": "a-1", "by": "Officer Li"},
    "reset": {"alarm_id": "a-1", "by": "Officer Li"},
    "bollard.raise": {"device": "bollard-1"},
    "bollard.lower": {"device": "bollard-1"},
    "unlock": {"device": "doors", "door": 1, "open_s": 5},
    "lockdown": {},
    "lockdown.release": {"device": "doors"},
    "drill.start": {"minutes": 5, "by": "Officer Li"},
    "drill.stop": {},
    "time.set": {"time": "2026-11-24T08:00:00+08:00"},
    "replay": {"from_seq": 1, "to_seq": 10},
}
FIELDS = ["schema", "id", "gateway", "school", "command", "args", "issued_at", "issuer", "sig"]

texts = (
    st.text(max_size=40)
    | st.sampled_from(SURROGATES)
    | st.text(max_size=5).map(lambda t: t + SURROGATES[0])
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**300])
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Mutant:
    """A valid command of `name` with `path` (a field, or `args.<key>`) set to `value`, removed
    (`value` is `DELETE`), then signed again or not."""

    name: str
    path: str
    value: object
    resign: bool


DELETE = object()


def mutants() -> st.SearchStrategy[Mutant]:
    def for_name(name: str) -> st.SearchStrategy[Mutant]:
        paths = FIELDS + [f"args.{k}" for k in VALID_ARGS[name]] + ["args.extra"]
        return st.builds(
            Mutant,
            st.just(name),
            st.sampled_from(paths),
            json_values | st.just(DELETE),
            st.booleans(),
        )

    return st.sampled_from(sorted(VALID_ARGS)).flatmap(for_name)


def deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


def json_bytes(value: object, ascii_escapes: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_escapes)
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate is invalid UTF-8


payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(json_bytes, json_values, st.booleans()),
    st.builds(deep, st.integers(min_value=1, max_value=20_000), st.sampled_from(["[", '{"a":'])),
    mutants(),
)
response_topics = st.sampled_from(
    [
        None,
        RESULTS,
        f"{RESULTS}/console-1",
        contract.event_topic(SITE, "alarm"),
        contract.status_topic(SITE),
        "console/replies/1",
        f"{RESULTS}x",
    ]
)


@dataclass(frozen=True)
class Message:
    payload: bytes | Mutant
    retain: bool
    response_topic: str | None


messages = st.builds(Message, payloads, st.sampled_from([False] * 5 + [True]), response_topics)


def render(payload: bytes | Mutant) -> bytes:
    """The bytes to send; a mutant is made now, so its `issued_at` is fresh and its id new."""
    if isinstance(payload, bytes):
        return payload
    body = command(payload.name, VALID_ARGS[payload.name])
    target, _, key = payload.path.partition(".")
    container = body["args"] if key else body
    name = key or target
    if payload.value is DELETE:
        container.pop(name, None)
    elif isinstance(container, dict):
        container[name] = payload.value
    if payload.resign and isinstance(body.get("args"), dict):
        with contextlib.suppress(ValueError):  # no canonical form (a lone surrogate): as is
            body = auth.sign_command({**body, "id": str(uuid.uuid4())}, CONSOLE_KEY, "console")
    return json_bytes(body, ascii_escapes=True)


@dataclass
class Harness:
    broker: MosquittoBroker
    gate: CommandUplink
    police: Listener
    sender: aiomqtt.Client
    v5: bool
    answered: int = 0
    restarts: int = 0

    def results(self) -> list[Any]:
        return [m for m in self.police.messages if m.topic.startswith(RESULTS)]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds; fails at once if the uplink task ended meanwhile."""

        def settled_or_dead() -> bool:
            return condition() or self.gate.task is None or self.gate.task.done()

        await wait_until(settled_or_dead)
        assert self.gate.task is not None and not self.gate.task.done(), self.gate.task

    async def send(self, message: Message) -> None:
        raw = render(message.payload)
        retain = message.retain and raw != b""  # an empty retained message deletes, not sends
        properties = None
        if self.v5 and message.response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = message.response_topic
            properties.CorrelationData = b"fuzz"
        if retain:
            # Answers still on their way would be cancelled with the connection: wait for them.
            await self.until(lambda: len(self.results()) >= self.answered)
            ignored = self.gate.commands.ignored_retained
            await self.gate.stop()
            await self.sender.publish(COMMANDS, raw, qos=1, retain=True, properties=properties)
            self.gate.start()
            self.restarts += 1
            await self.until(lambda: self.gate.commands.ignored_retained == ignored + 1)
            return
        await self.sender.publish(COMMANDS, raw, qos=1, properties=properties)
        self.answered += 1

    async def settle(self) -> None:
        """Every live message answered once, each answer signed and in the contract."""
        await self.until(lambda: len(self.results()) >= self.answered)
        assert len(self.results()) == self.answered
        for received in self.results():
            body = auth.verify_payload(received.payload, {"gate-1": GATEWAY_KEY.public_key()})
            assert body["status"] in {"done", "rejected", "failed"}
            if body["status"] == "rejected":
                assert received.topic == RESULTS
            assert contract.is_results_topic(SITE, received.topic)
        assert not [m for m in self.police.messages if "/events/" in m.topic]
        assert self.gate.task is not None and not self.gate.task.done()


@contextlib.asynccontextmanager
async def harness(tmp_path: Path, protocol: str) -> Any:
    async with (
        MosquittoBroker("police") as broker,
        listen("police", broker.host, broker.port) as police,
        command_uplink(tmp_path, broker, protocol=protocol) as gate,
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier="fuzzer",
            protocol=aiomqtt.ProtocolVersion.V5
            if protocol == "5"
            else aiomqtt.ProtocolVersion.V311,
        ) as sender,
    ):
        await police.wait_for(lambda m: m.topic.endswith("/status") and m.json["online"])
        yield Harness(broker, gate, police, sender, v5=protocol == "5")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_no_command_barrage_stops_the_command_path(tmp_path: Path, protocol: str) -> None:
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        fuzz = loop.run_until_complete(stack.enter_async_context(harness(tmp_path, protocol)))

        @settings(settings.get_profile("command-fuzz"))
        @hypothesis_given(st.lists(messages, min_size=1, max_size=5))
        def barrage(batch: list[Message]) -> None:
            async def run() -> None:
                for message in batch:
                    await fuzz.send(message)
                await fuzz.settle()

            loop.run_until_complete(run())

        barrage()
        # Still working: a valid signed command after the barrage is done.
        final = command("drill.start", {"minutes": 1})
        loop.run_until_complete(fuzz.send(Message(json.dumps(final).encode(), False, None)))
        loop.run_until_complete(fuzz.settle())
        answer = next(m.json for m in fuzz.results() if m.json["command_id"] == final["id"])
        assert answer["status"] == "done"
        counted = fuzz.gate.commands
        assert counted.ignored_retained == fuzz.restarts
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
