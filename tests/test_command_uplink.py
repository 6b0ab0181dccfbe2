"""The command path through a real uplink and a real mosquitto (issue 10): a retained command is
never acted on or answered; an error of ours while handling, encoding or answering a command
becomes a counted refusal and the session goes on; a refused command is answered only on the
results topic, and an accepted one on its MQTT 5 response topic only under the results topic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from command_support import SITE, Target, command, command_uplink, sign_result, wait_until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core import contract
from gateway.uplink import mqtt
from simulators.broker import MosquittoBroker
from simulators.listener import Listener, listen

pytestmark = pytest.mark.timeout(60)

COMMANDS = contract.commands_topic(SITE)
RESULTS = contract.results_topic(SITE)


def is_result(command_id: str | None) -> Any:
    return lambda m: m.topic.startswith(RESULTS) and m.json["command_id"] == command_id


async def online(listener: Listener, since: int = 0) -> None:
    await listener.wait_for(
        lambda m: m.topic.endswith("/status") and m.json["online"] is True, since=since
    )


async def publish(broker: MosquittoBroker, payload: bytes, *, retain: bool = False) -> None:
    params = mqtt.BrokerParams(host=broker.host, port=broker.port, client_id="test-sender")
    async with mqtt.connect(params) as conn:
        await conn.publish(COMMANDS, payload, retain=retain)


async def test_a_retained_command_is_never_acted_on_or_answered(
    tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    retained = command("drill.start", {"minutes": 5})
    await publish(police_broker, json.dumps(retained).encode(), retain=True)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        command_uplink(tmp_path, police_broker) as gate,
    ):
        await wait_until(lambda: gate.commands.ignored_retained == 1)
        # The positive sign that the retained one had its chance: a live one after it is done.
        live = command("drill.stop", {})
        await publish(police_broker, json.dumps(live).encode())
        answer = await police.wait_for(is_result(live["id"]))
        assert answer.json["status"] == "done"
        assert gate.target.calls == [("drill", False)]
        assert [m.json["command_id"] for m in police.messages if m.topic == RESULTS] == [live["id"]]
        # It stays ignored at every new subscription (a restart of the gateway).
        await gate.restart()
        await wait_until(lambda: gate.commands.ignored_retained == 2)
        assert gate.target.calls == [("drill", False)]


async def test_an_error_in_the_target_is_answered_and_the_session_goes_on(
    tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        command_uplink(tmp_path, police_broker, target=Target(fail=True)) as gate,
    ):
        await online(police)
        since = gate.uplink.connected_since_ms
        for name in ("drill.start", "drill.stop"):
            sent = command(name, {})
            await publish(police_broker, json.dumps(sent).encode())
            answer = (await police.wait_for(is_result(sent["id"]))).json
            assert (answer["status"], answer["reason"]) == ("failed", "internal_error")
        assert gate.commands.refusals["internal_error"] == 2
        assert gate.uplink.connected and gate.uplink.connected_since_ms == since  # no reconnect
        assert gate.task is not None and not gate.task.done()


async def test_an_answer_that_cannot_be_signed_becomes_an_internal_error(
    tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    failures = iter([True])

    def flaky_sign(payload: bytes) -> bytes:
        if b'"command.result"' in payload and next(failures, False):
            raise RuntimeError("signer broke")
        return sign_result(payload)

    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        command_uplink(tmp_path, police_broker, sign=flaky_sign) as gate,
    ):
        await online(police)
        first, second = command("drill.start", {}), command("drill.stop", {})
        await publish(police_broker, json.dumps(first).encode())
        answer = (await police.wait_for(is_result(first["id"]))).json
        assert (answer["status"], answer["reason"]) == ("rejected", "internal_error")
        await publish(police_broker, json.dumps(second).encode())
        assert (await police.wait_for(is_result(second["id"]))).json["status"] == "done"
        assert gate.commands.refusals["internal_error"] == 1


def v5_client(broker: MosquittoBroker, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host, broker.port, identifier=name, protocol=aiomqtt.ProtocolVersion.V5
    )


async def send_v5(client: aiomqtt.Client, body: dict[str, Any], response_topic: str) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = body["id"].encode()
    await client.publish(COMMANDS, json.dumps(body).encode(), qos=1, properties=props)


async def next_answer(client: aiomqtt.Client) -> tuple[str, dict[str, Any], bytes | None]:
    async with asyncio.timeout(10):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            correlation = getattr(message.properties, "CorrelationData", None)
            return message.topic.value, json.loads(message.payload), correlation
    raise AssertionError("no answer")


async def test_mqtt5_response_topics_are_only_used_under_the_results_topic(
    tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    events = contract.event_topic(SITE, "alarm")
    mine = f"{RESULTS}/console-1"
    async with (
        command_uplink(tmp_path, police_broker, protocol="5"),
        v5_client(police_broker, "v5-console") as client,
    ):
        await client.subscribe(f"{SITE.base_topic}/#", qos=1)
        async with asyncio.timeout(10):  # the retained `online`: the uplink is subscribed
            async for message in client.messages:
                if message.topic.value.endswith("/status"):
                    break
        cases = [
            # (command, response topic, where the answer must go)
            ({**command("drill.start", {}), "sig": None}, events, RESULTS),  # refused
            (command("drill.start", {}), events, RESULTS),  # accepted, a topic of ours
            (command("drill.stop", {}), "console/replies/1", RESULTS),  # outside our results
            (command("drill.start", {}), f"{RESULTS}/+", RESULTS),  # a wildcard
            (command("drill.stop", {}), mine, mine),
        ]
        for body, response_topic, expected in cases:
            await send_v5(client, body, response_topic)
            while True:  # the command itself comes back on the commands topic: skip it
                topic, answer, correlation = await next_answer(client)
                if topic != COMMANDS:
                    break
            assert (topic, answer["command_id"]) == (expected, body["id"]), response_topic
            assert correlation == body["id"].encode()
