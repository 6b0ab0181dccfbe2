"""After a restart of the real daemon, the page still shows who acknowledged an alarm and when,
and that (and by whom) its siren was silenced; the siren stays off (issue 14).

The gateway is `tests_support.GatewayProcess` with `[guard]`, `[security]` (the police desk
trusted for `acknowledge`) and a short acknowledgement timeout, so the alarm escalates and the
siren sounds before the guard silences it. No browser: the page's own event stream is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.core import keys
from guard_support import GUARD, PIN, daemon_guard_config, page_state, police_acknowledge
from simulators.broker import MosquittoBroker, free_port
from simulators.dido import DiDoModule
from simulators.listener import listen
from tests_support import GatewayProcess

pytestmark = pytest.mark.timeout(60)

SIREN = 1  # the box's siren_coil in tests_support.TEMPLATE


def _alarm(state: dict[str, Any], alarm_id: str) -> dict[str, Any]:
    (alarm,) = [a for a in state["alarms"] if a["alarm_id"] == alarm_id]
    return dict(alarm)


async def test_the_acknowledgement_and_a_silenced_siren_survive_a_restart(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    keys.write_key_pair(tmp_path, "gate-east")
    receiver = keys.write_key_pair(tmp_path, "police-console")
    receiver_key = keys.load_private_key(receiver.private_key)
    page_port = free_port()
    base = f"http://127.0.0.1:{page_port}"
    short_timeout = "\n[alarms]\nack_timeout_s = 0.5\n"
    gateway = GatewayProcess(
        tmp_path,
        police_broker,
        bureau_broker,
        modbus_tcp_port=port,
        extra=daemon_guard_config(tmp_path, page_port, receiver.public_b64, short_timeout),
    )
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        await gateway.wait_ready()
        await module.pulse(0, 150)
        alarm = await police.wait_for(lambda m: m.topic.endswith("/events/alarm"))
        alarm_id = alarm.json["alarm_id"]
        await module.wait_coil(SIREN, True, timeout_s=5)  # not acknowledged in time: escalated

        body = {"action": "silence_siren", "target": "box", "pin": PIN}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/api/action", json=body) as answer,
        ):
            assert (answer.status, await answer.json()) == (200, {"ok": True, "by": GUARD})
        await module.wait_coil(SIREN, False, timeout_s=2)
        await police_acknowledge(police_broker, police, receiver_key, alarm_id, by="张警官")
        before = _alarm(await page_state(base), alarm_id)
        assert (before["stage"], before["acknowledged_by"]) == ("acknowledged", "张警官")
        assert before["acknowledged_at"] is not None
        assert before["siren_silenced_by"] == GUARD and before["siren_silenced_at"] is not None

        await gateway.stop()
        since = len(police.messages)
        gateway.start()
        await police.wait_for(
            lambda m: m.topic.endswith("/status") and m.json["online"] is True,
            since=since,
            timeout_s=15,
        )
        await gateway.wait_ready()
        after = _alarm(await page_state(base), alarm_id)
        shown = ("stage", "acknowledged_by", "acknowledged_at", "siren_silenced_by",
                 "siren_silenced_at", "escalated_at")  # fmt: skip
        assert {k: after[k] for k in shown} == {k: before[k] for k in shown}
        # The restored latches have driven the box's outputs: five more polls, siren still off.
        await module.wait_input_reads(module.input_reads + 5, timeout_s=5)
        assert module.coil(SIREN) is False
