"""TLS and mutual TLS to a real mosquitto (test CA made here): the gateway gets in with its
certificate and is refused without it or with the wrong CA; `server_name` overrides the name
checked; bad TLS configuration stops the start-up; no password ever reaches the logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from edge_config import ConfigError
from edge_config.loader import parse_config
from gateway.app import broker_params
from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Uplink
from simulators.broker import MosquittoBroker, TlsFiles
from simulators.certs import Pki, make_pki
from simulators.listener import listen

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
PASSWORD = "pw-must-never-be-logged-7f3a"


def panic() -> Event:
    box = DeviceRef("box", "alarm_box", "north gate")
    now_ms = time.time_ns() // 1_000_000
    return new_event("alarm.panic", box, severity=Severity.CRITICAL, occurred_at_ms=now_ms)


@contextlib.asynccontextmanager
async def running(store: Storage, uplink: Uplink) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(uplink.run(), name=f"test-uplink:{uplink.name}")
        try:
            yield
        finally:
            task.cancel()


def server_files(pki: Pki) -> TlsFiles:
    return TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key)


def mutual(pki: Pki, *, ca: Path | None = None, server_name: str | None = None) -> mqtt.TlsParams:
    return mqtt.TlsParams(
        ca_file=ca or pki.ca_cert,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        server_name=server_name,
    )


def tls_params(broker: MosquittoBroker, tls: mqtt.TlsParams) -> mqtt.BrokerParams:
    assert broker.tls_port is not None
    return mqtt.BrokerParams(
        host=broker.host,
        port=broker.tls_port,
        client_id="gate-1-police",
        will_topic=contract.status_topic(SITE),
        will_payload=contract.status_payload(SITE, online=False),
        connect_timeout_s=2.0,
        tls=tls,
    )


@contextlib.asynccontextmanager
async def tls_broker(pki: Pki) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker("police", tls=server_files(pki), require_client_cert=True) as b:
        yield b


async def until(predicate_met: Callable[[], bool], what: str) -> None:
    """Wait for a state the uplink reaches by itself (it exposes no event to await)."""
    for _ in range(500):
        if predicate_met():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def delivered_over_tls(tmp_path: Path, broker: MosquittoBroker, tls: mqtt.TlsParams) -> None:
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
        # The subscriber watches the plain listener: what it sees came in over TLS.
        listen("police", broker.host, broker.port) as police,
    ):
        uplink = Uplink("police", tls_params(broker, tls), store.uplink, SITE)
        async with running(store, uplink):
            stored = await store.outbox.append(panic())
            got = await police.wait_event(lambda e: e["id"] == stored.id)
            assert uplink.connected
        assert got["seq"] == stored.seq


async def refused(tmp_path: Path, broker: MosquittoBroker, tls: mqtt.TlsParams) -> list[str]:
    """Run an uplink that cannot get in; return its log events after several attempts."""
    backoff = Backoff(base_s=0.02, cap_s=0.05)
    async with Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store:
        uplink = Uplink("police", tls_params(broker, tls), store.uplink, SITE, backoff=backoff)
        await store.outbox.append(panic())
        with capture_logs() as logs:
            async with running(store, uplink):
                await until(lambda: backoff.attempts >= 3, "three refused attempts")
                assert not uplink.connected
        assert await store.log.pending_count("police") == 1
    return [entry["event"] for entry in logs]


async def test_gateway_with_its_certificate_gets_in_and_the_event_arrives(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with tls_broker(pki) as broker:
        await delivered_over_tls(tmp_path, broker, mutual(pki))


async def test_without_a_client_certificate_the_broker_refuses_and_it_is_logged_once(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    async with tls_broker(pki) as broker:
        events = await refused(tmp_path, broker, mqtt.TlsParams(ca_file=pki.ca_cert))
    assert events.count("uplink_down") == 1 and "uplink_up" not in events


async def test_a_broker_signed_by_another_ca_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other")
    async with tls_broker(pki) as broker:
        events = await refused(tmp_path, broker, mutual(pki, ca=other.ca_cert))
    assert events.count("uplink_down") == 1


async def test_server_name_is_checked_instead_of_the_host(tmp_path: Path) -> None:
    # The broker's certificate names only broker.police.test, but we dial 127.0.0.1.
    pki = make_pki(tmp_path / "pki", server_names=("broker.police.test",), server_ips=())
    async with tls_broker(pki) as broker:
        await refused(tmp_path, broker, mutual(pki))
        await delivered_over_tls(tmp_path, broker, mutual(pki, server_name="broker.police.test"))


async def test_a_refused_login_logs_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # paho's own debug log included
    backoff = Backoff(base_s=0.02, cap_s=0.05)
    async with (
        MosquittoBroker("police", allow_anonymous=False) as broker,
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
    ):
        secret = mqtt.BrokerParams(
            host=broker.host,
            port=broker.port,
            client_id="gate-1-police",
            username="gate-1",
            password=PASSWORD,
        )
        uplink = Uplink("police", secret, store.uplink, SITE, backoff=backoff)
        with capture_logs() as logs:
            async with running(store, uplink):
                await until(lambda: backoff.attempts >= 2, "two refused logins")
    assert [e for e in logs if e["event"] == "uplink_down"]
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(secret)


# --- configuration ------------------------------------------------------------------------------

CONFIG = """
[site]
school_id = "school-1"
gateway_id = "gate-1"

[store]
path = "{dir}/outbox.db"

[destinations.police]
host = "127.0.0.1"
port = 8883
client_id = "g1-police"

[destinations.police.tls]
{tls}
"""


def config_text(tmp_path: Path, tls: str) -> str:
    return CONFIG.replace("{tls}", tls).replace("{dir}", str(tmp_path))


def errors_for(tmp_path: Path, tls: str) -> list[str]:
    data = tomllib.loads(config_text(tmp_path, tls))
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "schoolgate.toml")
    return info.value.errors


def test_a_complete_tls_table_reaches_the_broker_params(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = (
        f'ca_file = "{pki.ca_cert}"\ncert_file = "{pki.client_cert}"\n'
        f'key_file = "{pki.client_key}"\nserver_name = "broker.police.test"\nmin_version = "1.3"'
    )
    config = parse_config(tomllib.loads(config_text(tmp_path, tls)), tmp_path / "s.toml")
    assert broker_params(config, "police").tls == mqtt.TlsParams(
        pki.ca_cert, pki.client_cert, pki.client_key, "broker.police.test", "1.3"
    )


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.client_key.chmod(0o644)
    tls = (
        f'ca_file = "{pki.ca_cert}"\ncert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"'
    )
    assert errors_for(tmp_path, tls) == [
        f"destinations.police.tls.key_file: {pki.client_key} is open to group or others "
        "(mode 0644); chmod 600 it"
    ]


def test_missing_ca_file_key_and_unreadable_ca_file_are_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    no_ca = f'cert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"'
    assert errors_for(tmp_path, no_ca) == [
        "destinations.police.tls.ca_file: required key is missing"
    ]
    absent = tmp_path / "nope.pem"
    [error] = errors_for(tmp_path, f'ca_file = "{absent}"')
    assert error.startswith(f"destinations.police.tls.ca_file: cannot read {absent}:")


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    [error] = errors_for(tmp_path, f'ca_file = "{pki.ca_cert}"\ncert_file = "{pki.client_cert}"')
    assert error.startswith("destinations.police.tls:")
    assert "both cert_file and key_file" in error


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = (
        f'ca_file = "{pki.ca_cert}"\ncert_file = "{pki.client_cert}"\nkey_file = "{pki.server_key}"'
    )
    [error] = errors_for(tmp_path, tls)
    assert error.startswith("destinations.police.tls.cert_file:")


def test_check_config_names_the_open_key_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.client_key.chmod(0o640)
    tls = (
        f'ca_file = "{pki.ca_cert}"\ncert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"'
    )
    path = tmp_path / "schoolgate.toml"
    path.write_text(config_text(tmp_path, tls))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "destinations.police.tls.key_file" in result.stderr
    assert "mode 0640" in result.stderr
