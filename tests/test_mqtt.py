"""gateway.uplink.mqtt against a real mosquitto: what the rest of the gateway relies on."""

from __future__ import annotations

import asyncio
import random

from gateway.uplink import mqtt
from simulators.broker import MosquittoBroker


async def test_a_cancel_that_meets_the_puback_is_never_lost(police_broker: MosquittoBroker) -> None:
    """Regression: aiomqtt waits for a PUBACK with asyncio.wait_for when a publish has a
    timeout, and Python 3.11's wait_for returns normally, dropping a cancel that arrives in the
    same loop turn as the PUBACK. The heartbeat loop then went on through a shutdown, which
    hung (found by the alarm-loop contract test: `gateway_stopping`, then SIGKILL after 15 s).
    Cancels are thrown at random moments of a busy publish loop; every one must end it."""
    rng = random.Random(11)
    params = mqtt.BrokerParams(
        host=police_broker.host, port=police_broker.port, client_id="cancel-test"
    )
    async with mqtt.connect(params) as conn:

        async def publish_forever() -> None:
            while True:
                await conn.publish("t/beat", b"{}", timeout_s=10.0)

        for _ in range(150):
            task = asyncio.create_task(publish_forever())
            await asyncio.sleep(rng.uniform(0.0002, 0.003))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            for _ in range(100):  # clean up before failing (each cancel may be lost again)
                if task.done():
                    break
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
            assert done, "a cancel was swallowed: the publish loop went on"
            assert task.cancelled()
