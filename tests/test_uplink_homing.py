"""The way back to a gateway's first broker node (issue 15): checked on the injected clock about
every `return_after_s` (spread so a node's gateways do not all come back in one second), never
with 0, wired from the config; and an uplink between two real mosquitto "nodes" that fails over
when its first node dies and goes back to it once it is up again, losing nothing, each lane in
order, duplicates only by id."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest
import structlog
from test_uplink import SITE, running
from test_uplink_nodes import _event, _has_id, node_uplink, two_nodes

from config_cases import Place
from edge_config.loader import load_config
from gateway.app import failover_of
from gateway.core.clock import FakeClock
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.homing import Homing
from gateway.uplink.nodes import Node, node_name
from simulators.broker import MosquittoBroker
from simulators.listener import Listener, listen
from tests_support import until

FIRST: Node = ("10.0.0.1", 1883)
RETURN_S = 300.0


async def test_the_first_node_is_checked_on_the_clock_until_it_accepts() -> None:
    clock = FakeClock()
    answers = iter([False, False, True])
    checked: list[tuple[Node, float]] = []

    async def check(node: Node) -> bool:
        checked.append((node, clock.monotonic()))
        return next(answers)

    start = clock.monotonic()
    homing = Homing(RETURN_S, clock, rand=lambda: 0.0)  # each wait: half of return_after_s
    back = asyncio.create_task(homing.wait_until_back(FIRST, check))
    await clock.sleeping(1)
    await clock.run_for(449.0)
    assert [at - start for _, at in checked] == [150.0, 300.0]
    assert not back.done()  # two refusals: still waiting
    await clock.run_for(1.0)
    await back
    assert back.done() and back.exception() is None
    assert checked == [(FIRST, start + 150.0), (FIRST, start + 300.0), (FIRST, start + 450.0)]


def test_a_nodes_gateways_check_spread_over_half_the_interval_not_in_one_second() -> None:
    rand = random.Random(15)
    waits = [Homing(RETURN_S, FakeClock(), rand.random).next_check_s() for _ in range(5_000)]
    assert all(RETURN_S / 2 <= w <= RETURN_S for w in waits)
    per_second = Counter(int(w) for w in waits)
    assert max(per_second.values()) < 0.02 * len(waits), per_second.most_common(3)


async def test_zero_means_never_go_back() -> None:
    async def check(node: Node) -> bool:
        raise AssertionError("never checked")

    with pytest.raises(ValueError, match="never"):
        await Homing(0.0, FakeClock()).wait_until_back(FIRST, check)


def test_the_config_key_reaches_the_uplink_with_a_default_of_five_minutes(tmp_path: Path) -> None:
    nodes = '["127.0.0.1:1883", "127.0.0.1:1884"]'
    police = "destinations.police"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = load_config(Place(tmp_path / "a").write({police: {"host": "", "nodes": nodes}}))
    assert failover_of(default, "police").return_after_s == RETURN_S
    never = {police: {"host": "", "nodes": nodes, "return_after_s": "0"}}
    assert (
        failover_of(load_config(Place(tmp_path / "b").write(never)), "police").return_after_s == 0
    )


async def _listening_again(listener: Listener, broker: MosquittoBroker) -> None:
    """Until the listener (which reconnects by itself) is subscribed on the restarted broker:
    a marker published there comes back."""
    marker = mqtt.BrokerParams(broker.host, broker.port, client_id="test-marker")
    async with mqtt.connect(marker) as conn:
        for n in range(200):
            since = len(listener.messages)
            await conn.publish("schoolgate/marker", str(n).encode())
            with contextlib.suppress(TimeoutError):
                await listener.wait_for(
                    lambda m: m.topic == "schoolgate/marker", since=since, timeout_s=0.25
                )
                return
    raise AssertionError("the listener did not subscribe again")


async def test_the_uplink_goes_back_to_its_first_node_once_it_is_back_and_nothing_is_lost(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    ring, first, second = two_nodes(police_broker, bureau_broker)
    first_name, second_name = (node_name(node) for node in ring.order)
    clock = FakeClock()  # the back-off, the heartbeats and the checks of the first node
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
        listen("first", first.host, first.port) as on_first,
        listen("second", second.host, second.port) as on_second,
    ):
        uplink = node_uplink(store, ring, first, clock=clock, return_after_s=RETURN_S)
        kinds = ["alarm", "state"]

        async def store_some(start: int, count: int) -> list[str]:
            return [
                (await store.outbox.append(_event(kinds[n % 2], start + n))).id
                for n in range(count)
            ]

        with structlog.testing.capture_logs() as logs:
            async with running(store, uplink):
                await on_first.wait_for(lambda m: m.topic.endswith("/heartbeat"))
                before = await store_some(0, 4)
                for event_id in before:
                    await on_first.wait_event(_has_id(event_id))

                await first.stop()  # the first node dies
                await until(lambda: uplink.node is None)
                await clock.sleeping(1)  # the spread wait before the next node
                await clock.run_for(1.0)
                await on_second.wait_for(lambda m: m.topic.endswith("/heartbeat"))
                assert uplink.node == second_name
                await clock.sleeping(2)  # its heartbeat and the check of the first node
                during = await store_some(100, 6)
                for event_id in during:
                    await on_second.wait_event(_has_id(event_id))

                await clock.run_for(RETURN_S)  # checked while still down: stays
                await until(lambda: any(e["event"] == "first_node_still_down" for e in logs))
                await clock.sleeping(2)  # checked, and waiting for the next check
                assert uplink.node == second_name

                await first.start()  # back, on the same port
                await _listening_again(on_first, first)
                since = len(on_first.messages)
                moving = await store_some(200, 40)  # in flight while it moves
                await clock.run_for(RETURN_S)
                await on_first.wait_for(
                    lambda m: m.topic.endswith("/heartbeat") and m.json.get("node") == first_name,
                    since=since,
                )
                assert uplink.node == first_name  # what `status` shows
                after = await store_some(300, 4)
                for event_id in after:
                    await on_first.wait_event(_has_id(event_id), since=since)
                async with asyncio.timeout(10):
                    # mark_sent follows the PUBACK by a moment; a bounded look at a count
                    while await store.log.pending_count("police"):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
        assert [e["node"] for e in logs if e["event"] == "uplink_back_to_first_node"] == [
            first_name
        ]
        received = on_first.events() + on_second.events()
        assert {e["id"] for e in received} >= set(before + during + moving + after)  # no loss
        by_id: dict[str, set[int]] = {}
        for event in received:
            by_id.setdefault(event["id"], set()).add(event["seq"])
        assert all(len(seqs) == 1 for seqs in by_id.values())  # a repeat is the same event
        back_home = [m.json for m in on_first.messages[since:] if "/events/" in m.topic]
        for lane in ("alarm.", "device."):
            seqs = [e["seq"] for e in back_home if e["type"].startswith(lane)]
            assert seqs == sorted(seqs)  # each lane in order on the first node
