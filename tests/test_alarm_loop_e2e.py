"""End to end, the alarm transmission loop (issue 5): the real gateway process with a [security]
section, real mosquitto brokers, the DI/DO simulator as the guard's box, and the test in the
receiver's seat (signing commands with a receiver key, verifying the gateway's signatures).

Press -> signed alarm at police -> signed acknowledge -> the lamp goes steady and the bureau
hears of it; no acknowledgement -> escalation and the siren; refused commands change nothing;
replay from the local record; heartbeats; MQTT 5 response topic and correlation data; a police
path down is reported to the bureau and lights the fault lamp.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core import auth, keys
from gateway.uplink import mqtt
from simulators.broker import MosquittoBroker
from simulators.contract_check import ContractChecker
from simulators.dido import DiDoModule
from simulators.listener import Listener, Received, listen
from tests_support import GatewayProcess, blinks

pytestmark = pytest.mark.timeout(90)

BASE = "schoolgate/v1/school-7/gate-east"
LAMP, SIREN, FAULT = 0, 1, 2


@dataclass
class Receiver:
    """The test's police console: a trusted key and a connection to publish commands."""

    key: Ed25519PrivateKey
    key_id: str
    gateway_key: Ed25519PublicKey

    def command(self, name: str, args: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        issued_at = overrides.pop("issued_at", datetime.now(UTC))
        obj = auth.build_command(
            gateway=overrides.pop("gateway", "gate-east"),
            school="school-7",
            command=name,
            args=args,
            issued_at=issued_at,
        )
        signer = overrides.pop("signer", self.key)
        return auth.sign_command(obj, signer, overrides.pop("key_id", self.key_id))

    def verify(self, message: Received) -> dict[str, Any]:
        return auth.verify_payload(message.payload, {"gate-east": self.gateway_key})


def security_config(tmp_path: Path, receiver_pub: str) -> str:
    return f"""
[alarms]
ack_timeout_s = {{ack_timeout_s}}

[supervision]
heartbeat_s = 1
report_after_s = 1
fault_device = "box"

[security]
gateway_key_file = "{tmp_path}/gate-east.key"
gateway_key_id = "gate-east"

[[security.trusted_keys]]
id = "police-console"
public_key = "{receiver_pub}"
commands = ["acknowledge", "replay", "drill.start", "drill.stop"]

[[security.trusted_keys]]
id = "bureau-viewer"
public_key = "{receiver_pub}"
commands = ["replay"]
"""


def make_gateway(
    tmp_path: Path,
    police: MosquittoBroker,
    bureau: MosquittoBroker,
    port: int,
    *,
    ack_timeout_s: float = 30,
    police_extra: str = "",
) -> tuple[GatewayProcess, Receiver]:
    gateway_files = keys.write_key_pair(tmp_path, "gate-east")
    receiver_files = keys.write_key_pair(tmp_path, "police-console")
    extra = security_config(tmp_path, receiver_files.public_b64).format(ack_timeout_s=ack_timeout_s)
    gateway = GatewayProcess(
        tmp_path,
        police,
        bureau,
        modbus_tcp_port=port,
        extra=extra,
        box_extra=f"fault_coil = {FAULT}",
        police_extra=police_extra,
    )
    receiver = Receiver(
        keys.load_private_key(receiver_files.private_key),
        "police-console",
        keys.load_public_key(gateway_files.public_b64, tmp_path),
    )
    return gateway, receiver


async def send(broker: MosquittoBroker, payload: bytes | dict[str, Any]) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    params = mqtt.BrokerParams(host=broker.host, port=broker.port, client_id="test-console")
    async with mqtt.connect(params) as conn:
        await conn.publish(f"{BASE}/commands", raw)


def is_result(command_id: str | None) -> Any:
    return lambda m: m.topic == f"{BASE}/results" and m.json["command_id"] == command_id


async def steady(module: DiDoModule, coil: int, *, seconds: float) -> bool:
    """The coil stays on for the whole time (no blinking)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if not module.coil(coil):
            return False
        await asyncio.sleep(0.02)
    return True


async def test_press_acknowledge_lamp_steady_and_the_bureau_is_told(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway, receiver = make_gateway(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 150)
        message = await police.wait_for(lambda m: "/events/alarm" in m.topic)
        alarm = receiver.verify(message)  # signed by the gateway's key
        assert alarm["type"] == "alarm.panic" and alarm["signer"] == "gate-east"
        assert await blinks(module, LAMP, within_s=5), "sent, not acknowledged: blinking"

        command = receiver.command(
            "acknowledge", {"alarm_id": alarm["alarm_id"], "by": "Officer Li"}
        )
        await send(police_broker, command)
        result = receiver.verify(await police.wait_for(is_result(command["id"])))
        assert result["status"] == "done" and result["command"] == "acknowledge"
        await module.wait_coil(LAMP, True, timeout_s=1.0)
        assert await steady(module, LAMP, seconds=1.0), "acknowledged: steady"
        acked = await bureau.wait_event(lambda e: e["type"] == "alarm.acknowledged")
        assert acked["alarm_id"] == alarm["alarm_id"]
        assert acked["data"]["by"] == "Officer Li"
        assert acked["data"]["issuer"] == "police-console"
        assert module.coil(SIREN) is False  # acknowledged in time: no escalation

        # Heartbeats come on both paths, signed, with the boot counter and the last seq.
        beat = await police.wait_for(
            lambda m: m.topic == f"{BASE}/heartbeat" and m.json["last_seq"] >= alarm["seq"]
        )
        heartbeat = receiver.verify(beat)
        assert heartbeat["boot"] >= 1 and heartbeat["paths"] == {"police": "up", "bureau": "up"}


async def test_no_acknowledgement_escalates_with_the_siren(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway, _ = make_gateway(tmp_path, police_broker, bureau_broker, port, ack_timeout_s=1.0)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 150)
        alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")
        escalated = await police.wait_event(lambda e: e["type"] == "alarm.escalated", timeout_s=10)
        assert escalated["alarm_id"] == alarm["alarm_id"] and escalated["severity"] == "critical"
        assert escalated["data"]["siren"] is True
        await module.wait_coil(SIREN, True, timeout_s=2)
        await bureau.wait_event(lambda e: e["type"] == "alarm.escalated")
        assert not police.events("alarm.acknowledged")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "bad_signature"),
        ("wrong_signature", "bad_signature"),
        ("stale", "stale"),
        ("future", "future"),
        ("wrong_key", "unknown_key"),
        ("not_allowed", "not_allowed"),
        ("wrong_gateway", "wrong_gateway"),
        ("replayed", "replayed"),
    ],
)
async def test_refused_commands_are_answered_and_change_nothing(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
    *,
    case: str,
    reason: str,
) -> None:
    module, port = box
    gateway, receiver = make_gateway(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 150)
        alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")
        args = {"alarm_id": alarm["alarm_id"], "by": "Mallory"}
        now = datetime.now(UTC)
        name = "acknowledge"
        cases: dict[str, dict[str, Any]] = {
            "unsigned": {},
            "wrong_signature": {"signer": Ed25519PrivateKey.generate()},
            "stale": {"issued_at": now - timedelta(seconds=120)},
            "future": {"issued_at": now + timedelta(seconds=60)},
            "wrong_key": {"key_id": "nobody"},
            "not_allowed": {"key_id": "bureau-viewer"},
            "wrong_gateway": {"gateway": "gate-west"},
            "replayed": {},
        }
        overrides = cases[case]
        command = receiver.command(name, args, **overrides)
        if case == "unsigned":
            del command["sig"]
        if case == "replayed":
            # The first copy is a real acknowledgement; the replayed copy must be refused.
            await send(police_broker, command)
            first = receiver.verify(await police.wait_for(is_result(command["id"])))
            assert first["status"] == "done"
            since = len(police.messages)
            await send(police_broker, command)
            answer = await police.wait_for(is_result(command["id"]), since=since)
        else:
            await send(police_broker, command)
            answer = await police.wait_for(is_result(command["id"]))
        result = receiver.verify(answer)
        assert result["status"] == "rejected" and result["reason"] == reason
        if case != "replayed":
            # The answer is published after the handler returned: it had its chance to act.
            assert not police.events("alarm.acknowledged")
            assert await blinks(module, LAMP, within_s=3), "still waiting for an acknowledgement"
        else:
            assert len(police.events("alarm.acknowledged")) == 1


async def test_fuzzed_command_payloads_never_crash_the_gateway(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, port = box
    gateway, receiver = make_gateway(tmp_path, police_broker, bureau_broker, port)
    rng = random.Random(5)
    valid = json.dumps(receiver.command("replay", {"from_seq": 1, "to_seq": 2})).encode()
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(30)]
    for _ in range(30):  # mutated valid commands: flipped, cut, grown
        raw = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        payloads.append(bytes(raw[: rng.randrange(1, len(raw) + 1)]))
    payloads += [b"", b"{}", b"[]", b"null", b'{"schema": 1}', b"{" * 5000, b"x" * 70_000]
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        params = mqtt.BrokerParams(host=police_broker.host, port=police_broker.port, client_id="f")
        async with mqtt.connect(params) as conn:
            for garbage in payloads:
                await conn.publish(f"{BASE}/commands", garbage)
        # Still alive and still answering: a real command after the garbage works.
        command = receiver.command("replay", {"from_seq": 1, "to_seq": 5})
        await send(police_broker, command)
        result = receiver.verify(await police.wait_for(is_result(command["id"]), timeout_s=20))
        assert result["status"] == "done"

        def results() -> list[dict[str, Any]]:
            return [m.json for m in police.messages if m.topic == f"{BASE}/results"]

        async with asyncio.timeout(20):  # answers run concurrently: wait for all of them
            while len(results()) < len(payloads) + 1:
                await police.wait_for(
                    lambda m: m.topic == f"{BASE}/results", since=len(police.messages)
                )
        refused = [r for r in results() if r["status"] == "rejected"]
        assert len(refused) == len(payloads)  # every one answered, none acted on
        assert {r["reason"] for r in refused} <= {"malformed", "bad_signature"}


async def test_a_retained_lone_surrogate_command_does_not_stop_the_gateway(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """Issue 10, defect 1: this message, retained, made every start exit 1 within 0.4 s."""
    module, port = box
    gateway, _ = make_gateway(tmp_path, police_broker, bureau_broker, port)
    poison = b'{"id":"\\ud800"}'
    params = mqtt.BrokerParams(host=police_broker.host, port=police_broker.port, client_id="evil")
    async with mqtt.connect(params) as conn:
        await conn.publish(f"{BASE}/commands", poison, retain=True)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        # Live (not retained) it is answered, its id made valid text; retained it was ignored.
        await send(police_broker, poison)
        answer = (await police.wait_for(is_result("\ufffd"))).json
        assert (answer["status"], answer["reason"]) == ("rejected", "malformed")
        await module.pulse(0, 150)
        await police.wait_event(lambda e: e["type"] == "alarm.panic")
        assert gateway.proc is not None and gateway.proc.poll() is None
        assert '"command_ignored"' in gateway.log_text()
        answers = [m for m in police.messages if m.topic == f"{BASE}/results"]
        assert len(answers) == 1  # the retained copy was never answered


async def test_replay_resends_a_range_from_the_local_record_marked_historical(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway, receiver = make_gateway(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 150)
        alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")
        assert alarm["historical"] is False
        since = len(police.messages)
        command = receiver.command("replay", {"from_seq": 1, "to_seq": alarm["seq"]})
        await send(police_broker, command)
        result = receiver.verify(await police.wait_for(is_result(command["id"]), since=since))
        assert result["status"] == "done" and alarm["seq"] in result["result"]["seqs"]
        again = await police.wait_event(
            lambda e: e["id"] == alarm["id"] and e["historical"] is True, since=since
        )
        assert (
            receiver.verify(
                next(m for m in police.messages[since:] if m.json.get("id") == alarm["id"])
            )["seq"]
            == again["seq"]
        )
        # A range that is too wide is refused as bad arguments, nothing sent.
        wide = receiver.command("replay", {"from_seq": 1, "to_seq": 50_000})
        await send(police_broker, wide)
        answer = receiver.verify(await police.wait_for(is_result(wide["id"])))
        assert answer["status"] == "failed" and answer["reason"] == "bad_args"


async def test_mqtt5_answers_on_the_response_topic_with_the_correlation_data(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, port = box
    gateway, receiver = make_gateway(
        tmp_path, police_broker, bureau_broker, port, police_extra='protocol = "5"'
    )
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(police, clean_exit=True),
        aiomqtt.Client(
            police_broker.host,
            police_broker.port,
            identifier="v5-console",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client,
    ):
        # A response topic is honoured only under the gateway's results topic (issue 10).
        reply_to = f"{BASE}/results/console-1"
        await client.subscribe(f"{BASE}/results/#", qos=1)
        command = receiver.command("drill.start", {"minutes": 5})
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_to
        props.CorrelationData = b"corr-42"
        await client.publish(
            f"{BASE}/commands", json.dumps(command).encode(), qos=1, properties=props
        )
        async with asyncio.timeout(15):
            async for message in client.messages:
                assert message.topic.value == reply_to
                assert message.properties is not None
                correlation = getattr(message.properties, "CorrelationData", None)
                assert correlation == b"corr-42"
                assert isinstance(message.payload, bytes)
                result = auth.verify_payload(message.payload, {"gate-east": receiver.gateway_key})
                break
        assert result["command_id"] == command["id"] and result["status"] == "done"
        # The police routes of this config take alarms and devices; the bureau takes all.
        started = await bureau.wait_event(lambda e: e["type"] == "gateway.drill_started")
        assert started["drill"] is True and started["data"]["minutes"] == 5


async def test_police_path_down_is_reported_to_the_bureau_and_lights_the_fault_lamp(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway, _ = make_gateway(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(bureau, clean_exit=True),
    ):
        await bureau.wait_for(lambda m: m.topic == f"{BASE}/heartbeat")
        await police_broker.stop()
        down = await bureau.wait_event(lambda e: e["type"] == "gateway.path_down", timeout_s=15)
        assert down["data"]["destination"] == "police" and down["severity"] == "major"
        await module.wait_coil(FAULT, True, timeout_s=5)
        beat = await bureau.wait_for(
            lambda m: m.topic == f"{BASE}/heartbeat" and m.json["paths"]["police"] == "down"
        )
        assert beat.json["destination"] == "bureau"
        status = await gateway.cli("status")  # what the installer sees
        assert status.returncode == 0, status.stderr
        assert "path police: DOWN" in status.stdout and "fault reported" in status.stdout
        assert "path bureau: up" in status.stdout
        await police_broker.start()
        up = await bureau.wait_event(lambda e: e["type"] == "gateway.path_up", timeout_s=20)
        assert up["data"]["destination"] == "police"
        await module.wait_coil(FAULT, False, timeout_s=5)


async def test_every_message_of_the_alarm_loop_keeps_the_contract(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    # Press -> acknowledge -> replay -> drill, with one refused and one failed command, through
    # both brokers; then every message either broker carried (events, status, heartbeats,
    # results, and the test's own commands) is checked against docs/schemas, and every one the
    # gateway published is verified as signed by it.
    module, port = box
    gateway, receiver = make_gateway(tmp_path, police_broker, bureau_broker, port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 150)
        alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")

        async def answered(
            broker: MosquittoBroker, listener: Listener, command: dict[str, Any]
        ) -> dict[str, Any]:
            await send(broker, command)
            return (await listener.wait_for(is_result(command["id"]))).json

        ack = receiver.command("acknowledge", {"alarm_id": alarm["alarm_id"], "by": "Officer Li"})
        assert (await answered(police_broker, police, ack))["status"] == "done"
        await bureau.wait_event(lambda e: e["type"] == "alarm.acknowledged")
        unknown = receiver.command("acknowledge", {"alarm_id": ack["id"], "by": "Officer Li"})
        assert (await answered(police_broker, police, unknown))["reason"] == "unknown_alarm"
        refused = receiver.command("drill.start", {}, key_id="bureau-viewer")
        assert (await answered(bureau_broker, bureau, refused))["reason"] == "not_allowed"

        replay = receiver.command("replay", {"from_seq": 1, "to_seq": alarm["seq"]})
        since = len(police.messages)
        assert (await answered(police_broker, police, replay))["status"] == "done"
        await police.wait_event(lambda e: e["id"] == alarm["id"] and e["historical"], since=since)

        start = receiver.command("drill.start", {"minutes": 5, "by": "Officer Li"})
        assert (await answered(bureau_broker, bureau, start))["status"] == "done"
        stop = receiver.command("drill.stop", {"by": "Officer Li"})
        assert (await answered(police_broker, police, stop))["status"] == "done"
        await bureau.wait_event(lambda e: e["type"] == "gateway.drill_stopped")
        # A heartbeat on each path after all that, so the record has the later ones too.
        for listener in (police, bureau):
            since = len(listener.messages)
            await listener.wait_for(lambda m: m.topic == f"{BASE}/heartbeat", since=since)

    checker = ContractChecker(root="schoolgate/v1")
    for listener in (police, bureau):
        assert checker.check_all(listener.messages) == [], listener.name
        checked = [checker.check(m.topic, m.payload) for m in listener.messages]
        for message, one in zip(listener.messages, checked, strict=True):
            if one.kind != "command":
                assert receiver.verify(message)["signer"] == "gate-east"
        kinds = {one.kind for one in checked}
        assert kinds == {"event", "status", "heartbeat", "command", "result"}, listener.name
    results = {
        m.json["status"] for m in [*police.messages, *bureau.messages] if "/results" in m.topic
    }
    assert results == {"done", "rejected", "failed"}
    assert {"alarm.panic", "alarm.acknowledged"} <= {e["type"] for e in police.events()}
    assert {"gateway.drill_started", "gateway.drill_stopped"} <= {
        e["type"] for e in bureau.events()
    }
