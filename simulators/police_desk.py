"""A simulated police receiving desk for the demo: it acknowledges each alarm, after a moment, with
a signed `acknowledge` command, as an officer at the console would.

Owns the desk's receiver key (made in the demo's folder), the `[security]` section that makes the
gateway trust it, and signing and publishing the command. It does not watch the broker (the demo
hands it each alarm it saw) nor verify the gateway's signatures (receiver/ does that).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import auth, keys
from gateway.uplink import mqtt

DESK_KEY_ID = "demo-police"
OFFICER = "值班民警 (demo)"


def make_keys(workdir: Path, gateway_id: str) -> tuple[str, Ed25519PrivateKey]:
    """The gateway's key pair and the desk's, in `workdir`: the `[security]` section that makes
    the gateway sign its events and trust the desk's acknowledgements, and the desk's key."""
    gateway = keys.write_key_pair(workdir, gateway_id)
    desk = keys.write_key_pair(workdir, DESK_KEY_ID)
    section = (
        f'\n[security]\ngateway_key_file = "{gateway.private_key}"\n'
        f'gateway_key_id = "{gateway_id}"\n'
        f'[[security.trusted_keys]]\nid = "{DESK_KEY_ID}"\npublic_key = "{desk.public_b64}"\n'
        'commands = ["acknowledge"]\n'
    )
    return section, keys.load_private_key(desk.private_key)


@dataclass(frozen=True)
class PoliceDesk:
    key: Ed25519PrivateKey
    school_id: str
    gateway_id: str
    host: str
    port: int
    ack_after_s: float = 0.5
    """The officer's moment between seeing the alarm and acknowledging it."""

    async def acknowledge(self, alarm_id: str) -> str:
        """Wait the officer's moment, then publish a signed `acknowledge`; its command id."""
        await asyncio.sleep(self.ack_after_s)  # the simulated person, not a wait for a state
        command = auth.sign_command(
            auth.build_command(
                gateway=self.gateway_id,
                school=self.school_id,
                command="acknowledge",
                args={"alarm_id": alarm_id, "by": OFFICER},
                issued_at=datetime.now(UTC),
            ),
            self.key,
            DESK_KEY_ID,
        )
        params = mqtt.BrokerParams(host=self.host, port=self.port, client_id="demo-police-desk")
        async with mqtt.connect(params) as conn:
            topic = f"schoolgate/v1/{self.school_id}/{self.gateway_id}/commands"
            await conn.publish(topic, json.dumps(command).encode())
        return str(command["id"])
