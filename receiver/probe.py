"""Proof that a shared subscription delivers, before a receiver relies on one.

Owns the probe of `--share GROUP`: on each connection the console subscribes to
`$share/GROUP/<root>/_probe/<nonce>`, publishes one message to `<root>/_probe/<nonce>` and must
receive it within a bound. mosquitto 2 passes; RabbitMQ's MQTT plugin before 3.13 accepts the
`$share/...` subscription and then delivers nothing to it, so a console there would look
connected and show nothing, for ever: `ShareUnsupported` instead, which the command line turns
into a clear message and exit status 2. Messages that arrive during the probe are handed on
(`on_message`), never dropped. It does not choose the group or the filters (`receiver.console`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

from gateway.uplink import mqtt

PROBE_TIMEOUT_S: Final = 5.0


class ShareUnsupported(Exception):
    """The broker took a `$share/...` subscription but did not deliver through it."""


def probe_topic(root: str) -> str:
    return f"{root}/_probe/{os.urandom(8).hex()}"


async def check_share(
    conn: mqtt.Connection,
    *,
    group: str,
    root: str,
    on_message: Callable[[str, bytes], None],
    timeout_s: float = PROBE_TIMEOUT_S,
) -> None:
    """Return once a probe published to the group came back; ShareUnsupported if it did not
    within `timeout_s`. MqttFailure if the connection drops meanwhile."""
    topic = probe_topic(root)
    await conn.subscribe(f"$share/{group}/{topic}", qos=1)
    await conn.publish(topic, b"schoolgate share probe", qos=1)
    try:
        async with asyncio.timeout(timeout_s):
            async for message in conn.messages():
                if message.topic == topic:
                    return
                on_message(message.topic, message.payload)
    except TimeoutError:
        raise ShareUnsupported(
            f"the broker accepted the shared subscription $share/{group}/... but delivered "
            f"nothing through it within {timeout_s:g} s: it does not support shared "
            "subscriptions (RabbitMQ before 3.13 does this). Run without --share, one console "
            "per subscription, or use a broker with shared subscriptions (mosquitto 2)"
        ) from None
