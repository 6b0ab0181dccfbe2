"""The fleet simulator against a real mosquitto and the real console (issue 15): persistent
console sessions, several consoles acknowledging one alarm, heartbeats whose seq ranges the
console's gap check accepts, the `--share` probe, and `--gateway-keys`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import keys
from receiver import cli as console_cli
from receiver.console import Console, ConsoleOptions, Signer
from receiver.keyring import KeyRingError, load_gateway_keys
from simulators.broker import MosquittoBroker
from simulators.fleet import Fleet, FleetOptions
from tests_support import ConsoleRecords

DESK_A = Ed25519PrivateKey.generate()
DESK_B = Ed25519PrivateKey.generate()
TRUSTED = {"desk-a": DESK_A.public_key(), "desk-b": DESK_B.public_key()}


def cli_options(*argv: str) -> ConsoleOptions:
    parser = argparse.ArgumentParser()
    console_cli.add_parser(parser.add_subparsers())
    options = console_cli.options_from_args(parser.parse_args(["console", *argv]))
    return options


def fleet_options(broker: MosquittoBroker, keys_dir: Path, **overrides: Any) -> FleetOptions:
    fields: dict[str, Any] = {
        "nodes": [(broker.host, broker.port)],
        "gateways": 1,
        "keys_dir": keys_dir,
        "trusted": TRUSTED,
        "heartbeat_s": 3600.0,
    }
    return FleetOptions(**(fields | overrides))


def id_is(event_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record.get("id") == event_id


@contextlib.asynccontextmanager
async def running(console: Console) -> AsyncIterator[Console]:
    task = asyncio.create_task(console.run(), name="test:console")
    try:
        await asyncio.wait_for(console.subscribed.wait(), 10.0)
        yield console
    finally:
        console.stop()
        await asyncio.wait_for(task, 10.0)


def private_key_file(tmp_path: Path, name: str, key: Ed25519PrivateKey) -> Path:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    path = tmp_path / f"{name}.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("version", ["3.1.1", "5"])
async def test_an_alarm_published_while_the_console_was_away_arrives_from_the_brokers_queue(
    police_broker: MosquittoBroker, tmp_path: Path, version: str
) -> None:
    """3.1.1: clean session off (RabbitMQ 3.10); 5: clean start off and a session expiry, without
    which an MQTT 5 broker drops the session when the console disconnects."""
    keys_dir = tmp_path / "keys"
    argv = ("--port", str(police_broker.port), "--gateway-keys", str(keys_dir), "--mqtt", version)
    async with Fleet(fleet_options(police_broker, keys_dir)) as fleet:
        await fleet.wait_connected()
        options = cli_options(*argv, "--client-id", "police-desk-1")
        assert options.broker.clean_session is False
        assert (options.broker.protocol, options.broker.session_expiry_s) == (version, 86_400)
        async with running(Console(options, ConsoleRecords())):
            pass  # subscribed once: the broker now keeps a session for police-desk-1
        alarm = fleet.gateways[0].press()
        await fleet.wait_sent(10.0)  # the broker has it; no console is connected
        records = ConsoleRecords()
        async with running(Console(options, records)):
            got = await records.wait_for(lambda r: r.get("id") == alarm.id)
    # From the broker's queue: as first sent, not a replay (the console has no key to ask one).
    assert got["historical"] is False
    assert got["attempt"] == 1
    assert records.notices("command_queued") == []


def test_the_console_id_comes_from_its_key_id_and_keeps_a_persistent_session(
    tmp_path: Path,
) -> None:
    key = private_key_file(tmp_path, "desk-a", DESK_A)
    pub = keys.public_b64(DESK_A.public_key())
    with_key = cli_options("--gateway-key", f"gw={pub}", "--key", str(key), "--key-id", "desk-a")
    assert with_key.broker.client_id == "schoolgate-console-desk-a"
    assert with_key.broker.clean_session is False
    anonymous = cli_options("--gateway-key", f"gw={pub}")
    assert anonymous.broker.clean_session is True  # a random id: nothing to come back to
    chosen = cli_options("--gateway-key", f"gw={pub}", "--client-id", "desk-9", "--clean-session")
    assert (chosen.broker.client_id, chosen.broker.clean_session) == ("desk-9", True)


async def test_two_consoles_acknowledge_one_alarm_and_both_show_who_won(
    police_broker: MosquittoBroker, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "keys"
    async with Fleet(fleet_options(police_broker, keys_dir, gateways=2)) as fleet:
        await fleet.wait_connected()
        gateway_keys = load_gateway_keys(keys_dir)
        consoles, sinks = [], []
        for key_id, key, operator in (("desk-a", DESK_A, "Li"), ("desk-b", DESK_B, "Wang")):
            broker = cli_options(
                "--port", str(police_broker.port), "--allow-unsigned", "--client-id", key_id
            ).broker
            sink = ConsoleRecords()
            options = ConsoleOptions(
                broker=broker,
                gateway_keys=gateway_keys,
                signer=Signer(key, key_id),
                operator=operator,
                tick_s=0.05,
            )
            consoles.append(Console(options, sink))
            sinks.append(sink)
        async with running(consoles[0]), running(consoles[1]):
            alarm = fleet.gateways[1].press()
            for sink in sinks:
                await sink.wait_for(lambda r: r.get("id") == alarm.id)
            for console in consoles:
                console.press("a")  # both operators take the same alarm
            for sink in sinks:
                await sink.wait_for(lambda r: r.get("console") == "command_result")
                await sink.wait_for(lambda r: r.get("type") == "alarm.acknowledged")
            winners = set()
            for console, sink in zip(consoles, sinks, strict=True):
                assert [r["status"] for r in sink.notices("command_result")] == ["done"]
                assert len(sink.events("alarm.acknowledged")) == 1  # one acknowledgement won
                shown = console.board.get(console.board.ordered()[0].ref, alarm.id)
                assert shown is not None
                winners.add(shown.acknowledged_by)
    assert len(winners) == 1 and winners <= {"Li", "Wang"}  # every console shows the same one


async def test_fleet_heartbeats_cover_their_events_so_the_console_finds_no_gap(
    police_broker: MosquittoBroker, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "keys"
    options = fleet_options(police_broker, keys_dir, gateways=3, schools=2, heartbeat_s=0.2)
    async with Fleet(options) as fleet:
        await fleet.wait_connected()
        records = ConsoleRecords()
        console_options = cli_options(
            "--port", str(police_broker.port), "--gateway-keys", str(keys_dir)
        )
        console = Console(console_options, records)
        async with running(console):
            sent = [g.device_event() for g in fleet.gateways for _ in range(3)]
            sent += [g.press() for g in fleet.gateways]
            for event in sent:
                await records.wait_for(id_is(event.id))
            # Two heartbeats from each gateway after its events: each range was checked.
            target = console.heartbeats_heard + 2 * len(fleet.gateways)
            async with asyncio.timeout(10.0):
                # Heartbeats make no record to wait on; the count is the condition.
                while console.heartbeats_heard < target:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
    assert console.gaps.found == 0
    assert console.refused == {}
    assert {(ref.school, ref.gateway) for ref in console.silence.gateways} == {
        ("school-1", "gate-1"),
        ("school-2", "gate-1"),
        ("school-1", "gate-2"),
    }
    assert len(console.board.ordered()) == 3  # one open alarm per gateway


async def test_share_probe_passes_on_mosquitto_and_the_group_shares_events(
    police_broker: MosquittoBroker, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "keys"
    async with Fleet(fleet_options(police_broker, keys_dir)) as fleet:
        await fleet.wait_connected()
        argv = ("--port", str(police_broker.port), "--gateway-keys", str(keys_dir))
        every = ConsoleRecords()
        sinks: list[list[dict[str, Any]]] = [[], []]

        def sink_of(mine: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
            def sink(record: dict[str, Any]) -> None:
                mine.append(record)
                every(record)

            return sink

        consoles = [
            Console(cli_options(*argv, "--share", "ops", "--client-id", f"ops-{i}"), sink_of(mine))
            for i, mine in enumerate(sinks)
        ]
        async with running(consoles[0]), running(consoles[1]):
            events = [fleet.gateways[0].device_event() for _ in range(20)]
            ids = {e.id for e in events}
            for event in events:
                await every.wait_for(id_is(event.id))
    seen = [{r.get("id") for r in mine} & ids for mine in sinks]
    assert seen[0] | seen[1] == ids
    assert not seen[0] & seen[1]  # each event went to one console of the group


def test_gateway_keys_from_a_directory_or_a_file(tmp_path: Path) -> None:
    one = keys.write_key_pair(tmp_path, "school-1-gate-1")
    two = keys.write_key_pair(tmp_path, "school-2-gate-1")
    found = load_gateway_keys(tmp_path)  # the private .key files beside them are not read
    assert {k: keys.public_b64(v) for k, v in found.items()} == {
        "school-1-gate-1": one.public_b64,
        "school-2-gate-1": two.public_b64,
    }
    listing = tmp_path / "keys.txt"
    listing.write_text(
        f"# city keys\nschool-1-gate-1 {one.public_b64}\n\nschool-2-gate-1={two.public_b64}\n"
    )
    assert set(load_gateway_keys(listing)) == {"school-1-gate-1", "school-2-gate-1"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("gate-1 not-a-key\n", "line 1"),
        ("Gate_1 AAAA\n", "line 1"),
        ("# nothing\n", "no keys"),
    ],
)
def test_a_bad_key_file_is_refused_with_where(tmp_path: Path, content: str, message: str) -> None:
    listing = tmp_path / "keys.txt"
    listing.write_text(content)
    with pytest.raises(KeyRingError, match=message):
        load_gateway_keys(listing)


def test_a_bad_key_directory_is_refused_before_anything_connects(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(console_cli.UsageError, match=r"no \*\.pub"):
        cli_options("--gateway-keys", str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gate-1.pub").write_text("not a key\n")
    with pytest.raises(console_cli.UsageError, match=r"gate-1\.pub"):
        cli_options("--gateway-keys", str(tmp_path / "bad"))
    with pytest.raises(console_cli.UsageError, match="no such file"):
        cli_options("--gateway-keys", str(tmp_path / "missing"))
