"""Signed commands against the whole simulated gate (real gateway process, real brokers, the
bollard controllers on a 9600-baud RS-485 line, the access controller on its own serial line):
each command that moves something at the gate really moves it, and its answer says so."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core import auth, keys
from gateway.uplink import mqtt
from simulators.bollard import BollardController
from simulators.gate import SimulatedGate, simulated_gate

pytestmark = pytest.mark.timeout(90)


class Console:
    def __init__(self, gate: SimulatedGate, key: Ed25519PrivateKey, gateway_key: Ed25519PublicKey):
        self.gate = gate
        self.key = key
        self.gateway_key = gateway_key
        config = gate.config_path.read_text()
        self.school = config.split('school_id = "', 1)[1].split('"', 1)[0]
        self.gateway = config.split('gateway_id = "', 1)[1].split('"', 1)[0]
        self.base = f"schoolgate/v1/{self.school}/{self.gateway}"

    async def run(self, name: str, args: dict[str, Any], timeout_s: float = 20) -> dict[str, Any]:
        command = auth.sign_command(
            auth.build_command(
                gateway=self.gateway,
                school=self.school,
                command=name,
                args=args,
                issued_at=datetime.now(UTC),
            ),
            self.key,
            "tester",
        )
        police = self.gate.brokers["police"]
        params = mqtt.BrokerParams(host=police.host, port=police.port, client_id="e2e-console")
        async with mqtt.connect(params) as conn:
            await conn.publish(f"{self.base}/commands", json.dumps(command).encode())
        answer = await self.gate.police.wait_for(
            lambda m: m.topic == f"{self.base}/results" and m.json["command_id"] == command["id"],
            timeout_s=timeout_s,
        )
        return auth.verify_payload(answer.payload, {"gate-key": self.gateway_key})


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gateway_files = keys.write_key_pair(folder, "gate-key")
        tester = keys.write_key_pair(folder, "tester")
        extra = f"""
[security]
gateway_key_file = "{gateway_files.private_key}"
gateway_key_id = "gate-key"
[[security.trusted_keys]]
id = "tester"
public_key = "{tester.public_b64}"
commands = ["*"]
"""
        (folder / "gate").mkdir()
        async with simulated_gate(folder / "gate", extra_config=extra) as gate:
            yield Console(
                gate,
                keys.load_private_key(tester.private_key),
                keys.load_public_key(gateway_files.public_b64, folder),
            )


def where(bollard: BollardController) -> str:
    return bollard.position  # read afresh each time (an attribute test would narrow its type)


async def test_device_commands_move_the_gate_and_say_so(console: Console) -> None:
    gate = console.gate
    bollard = gate.bollards[1]
    assert where(bollard) == "up"
    lowered = await console.run("bollard.lower", {"device": "bollard_1"})
    assert lowered["status"] == "done", lowered
    assert where(bollard) == "down"
    raised = await console.run("bollard.raise", {"device": "bollard_1"})
    assert raised["status"] == "done" and where(bollard) == "up"

    unlocked = await console.run("unlock", {"device": "gate_doors", "door": 1, "open_s": 5})
    assert unlocked["status"] == "done" and gate.doors.unlocks[1] == 1

    locked = await console.run("lockdown", {})
    assert locked["status"] == "done" and gate.doors.lockdown is True
    refused = await console.run("unlock", {"device": "gate_doors", "door": 1})
    assert refused["status"] == "failed" and refused["reason"] == "device_error"
    assert gate.doors.unlocks[1] == 1  # locked down: the door stayed shut
    released = await console.run("lockdown.release", {})
    assert released["status"] == "done" and gate.doors.lockdown is False

    before = len(gate.doors.clock_sets)
    clock = await console.run("time.set", {})
    assert clock["status"] == "done" and len(gate.doors.clock_sets) == before + 1

    unknown = await console.run("bollard.raise", {"device": "gate_doors"})
    assert unknown["status"] == "failed" and unknown["reason"] == "unknown_device"
