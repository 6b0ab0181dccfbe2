"""The shipped mosquitto ACL (docs/acl/mosquitto.acl) on a real mosquitto with a password file
made by mosquitto_passwd: gateway A's credentials cannot publish as gateway B nor read B's
commands; each check that something did not arrive waits for a later message that did."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.uplink import mqtt
from simulators.broker import MosquittoBroker

ACL = Path(__file__).parent.parent / "docs" / "acl" / "mosquitto.acl"
ROOT = "schoolgate/v1"
PASSWORDS = {"school-1/gate-1": "pw-a", "school-1/gate-2": "pw-b", "police-console": "pw-p"}


@contextlib.asynccontextmanager
async def login(
    broker: MosquittoBroker, username: str, password: str | None = None
) -> AsyncIterator[mqtt.Connection]:
    params = mqtt.BrokerParams(
        broker.host,
        broker.port,
        client_id=f"test-{username.replace('/', '-')}",
        username=username,
        password=PASSWORDS[username] if password is None else password,
    )
    async with mqtt.connect(params) as conn:
        yield conn


async def next_message(conn: mqtt.Connection) -> mqtt.Message:
    async for message in conn.messages():
        return message
    raise AssertionError("unreachable")  # messages() raises when the connection ends


async def next_topic(conn: mqtt.Connection) -> str:
    return (await next_message(conn)).topic


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker("acl", passwords=PASSWORDS, acl_file=ACL) as running:
        yield running


async def test_a_gateway_publishes_only_under_its_own_topics(broker: MosquittoBroker) -> None:
    async with login(broker, "police-console") as police:
        await police.subscribe(f"{ROOT}/#", qos=1)
        for forged in ("events/alarm", "status", "heartbeat"):
            # mosquitto may answer a refused publish by closing the connection: either way
            # nothing goes through.
            with contextlib.suppress(mqtt.MqttFailure):
                async with login(broker, "school-1/gate-1") as a:
                    await a.publish(f"{ROOT}/school-1/gate-2/{forged}", b"forged as B", qos=1)
        async with login(broker, "school-1/gate-1") as a:
            await a.publish(f"{ROOT}/school-1/gate-1/events/alarm", b"its own", qos=1)
        # Had a forged one been let through, it would have reached the police first.
        assert await next_topic(police) == f"{ROOT}/school-1/gate-1/events/alarm"


async def test_a_gateway_reads_only_its_own_commands(broker: MosquittoBroker) -> None:
    async with login(broker, "police-console") as police, login(broker, "school-1/gate-1") as a:
        await a.subscribe(f"{ROOT}/school-1/gate-2/commands", qos=1)
        await a.subscribe(f"{ROOT}/school-1/gate-1/commands", qos=1)
        await police.publish(f"{ROOT}/school-1/gate-2/commands", b"for B", qos=1)
        await police.publish(f"{ROOT}/school-1/gate-1/commands", b"for A", qos=1)
        assert await next_topic(a) == f"{ROOT}/school-1/gate-1/commands"


async def test_a_gateway_cannot_publish_commands_and_a_wrong_password_is_refused(
    broker: MosquittoBroker,
) -> None:
    async with login(broker, "school-1/gate-2") as b, login(broker, "school-1/gate-1") as a:
        await b.subscribe(f"{ROOT}/school-1/gate-2/commands", qos=1)
        await a.publish(f"{ROOT}/school-1/gate-2/commands", b"A commands B", qos=1)
        await b.publish(f"{ROOT}/school-1/gate-2/heartbeat", b"B's own", qos=1)
        async with login(broker, "police-console") as police:
            await police.publish(f"{ROOT}/school-1/gate-2/commands", b"from police", qos=1)
            # A's came first: had it been let through, it would be this one.
            assert (await next_message(b)).payload == b"from police"
    with pytest.raises(mqtt.MqttFailure):
        async with login(broker, "school-1/gate-1", password="pw-b"):
            pass
