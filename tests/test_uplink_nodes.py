"""A destination with several broker nodes (issue 15): which node a gateway picks, where its
gateways go when a node is lost, the jittered wait before they come back (on a FakeClock), and
the uplink moving between two real mosquitto "nodes" without losing or reordering anything."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from test_uplink import SITE, params, running

from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink.destination import Failover, Services, Uplink
from gateway.uplink.nodes import NodeRing, node_name, preference
from simulators.broker import MosquittoBroker, free_port
from simulators.listener import listen

NODES = [("10.0.0.1", 1883), ("10.0.0.2", 1883), ("10.0.0.3", 1883)]
FLEET = [f"school-{n // 4}/gate-{n % 4}" for n in range(5_000)]
BOX = DeviceRef("box", "alarm_box", "north gate")


def test_a_fleet_spreads_evenly_over_the_nodes_and_each_gateway_always_picks_the_same() -> None:
    first = Counter(preference(NODES, key)[0] for key in FLEET)
    assert set(first) == set(NODES)
    for node in NODES:
        assert 0.30 < first[node] / len(FLEET) < 0.37, first
    assert preference(NODES, FLEET[7]) == preference(list(reversed(NODES)), FLEET[7])


def test_the_gateways_of_a_lost_node_spread_over_the_others_not_onto_one() -> None:
    lost = NODES[0]
    moved = Counter(preference(NODES, key)[1] for key in FLEET if preference(NODES, key)[0] == lost)
    assert set(moved) == {NODES[1], NODES[2]}
    share = moved[NODES[1]] / sum(moved.values())
    assert 0.42 < share < 0.58, moved
    # The others keep their node: removing one node moves only that node's gateways.
    for key in FLEET[:500]:
        order = preference(NODES, key)
        if order[0] != lost:
            assert preference(NODES[1:], key)[0] == order[0]


def test_node_ring_goes_round_every_node_in_preference_order() -> None:
    ring = NodeRing(NODES, "school-1/gate-1")
    order = ring.order
    seen = [ring.current] + [ring.lost() for _ in range(3)]
    assert seen == [*order, order[0]]
    assert ring.several and not NodeRing(NODES[:1], "k").several
    with pytest.raises(ValueError, match="at least one node"):
        NodeRing([], "k")


def test_node_names_bracket_ipv6() -> None:
    assert node_name(("::1", 1883)) == "[::1]:1883"
    assert node_name(("broker-a.police.cn", 8883)) == "broker-a.police.cn:8883"


def test_a_lost_nodes_gateways_come_back_spread_over_the_window_not_in_one_second() -> None:
    """5,000 gateways lose their node at the same moment: each waits spread_s(5) before its
    first attempt on the next node; no second of the window takes much over a fifth of them."""
    rand = random.Random(15)
    delays = [Backoff(rand=rand.random).spread_s(5.0) for _ in FLEET]
    assert all(0 <= d <= 5.0 for d in delays)
    per_second = Counter(int(d) for d in delays)
    assert max(per_second.values()) < 0.23 * len(FLEET), per_second


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


async def test_an_unreachable_node_is_left_for_the_next_with_the_backoff_on_the_clock(
    tmp_path: Path,
) -> None:
    # Two nodes nobody listens on: each attempt is refused at once, and the uplink moves on.
    nodes = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    ring = NodeRing(nodes, "school-1/gate-1")
    clock = RecordingClock()
    async with Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store:
        uplink = Uplink(
            "police",
            params("police", MosquittoBroker("unused")),
            store.uplink,
            SITE,
            backoff=Backoff(base_s=1.0, cap_s=8.0, rand=lambda: 0.5),
            clock=clock,
            failover=Failover(ring, spread_s=5.0),
        )
        with structlog.testing.capture_logs() as logs:
            async with running(store, uplink):
                for attempt in range(3):
                    async with asyncio.timeout(10):
                        await clock.sleeping(1)
                    assert len(clock.slept) == attempt + 1
                    clock.advance(clock.slept[-1])
        moves = [entry["node"] for entry in logs if entry["event"] == "uplink_next_node"]
        first, second = (node_name(node) for node in ring.order)
        assert moves[:3] == [second, first, second]
        # Never connected, so no spread: the capped exponential back-off, half of each ceiling.
        assert clock.slept[:3] == [0.5, 1.0, 2.0]
        assert not uplink.connected and uplink.node is None
        downs = [entry for entry in logs if entry["event"] == "uplink_down"]
        assert len(downs) == 1 and downs[0]["node"] == first  # once per outage


def _has_id(event_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["id"] == event_id


def _event(kind: str, n: int) -> Event:
    if kind == "alarm":
        return new_event(
            "alarm.panic",
            BOX,
            severity=Severity.CRITICAL,
            occurred_at_ms=1_790_000_000_000 + n,
            alarm_id=f"a{n}",
        )
    return new_event(
        "device.input_changed",
        BOX,
        severity=Severity.INFO,
        occurred_at_ms=1_790_000_000_000 + n,
        data={"n": n},
    )


def two_nodes(
    one: MosquittoBroker, other: MosquittoBroker
) -> tuple[NodeRing, MosquittoBroker, MosquittoBroker]:
    """Two real brokers as the nodes of one destination: the ring, its first and second node."""
    brokers = {node_name((b.host, b.port)): b for b in (one, other)}
    ring = NodeRing([(b.host, b.port) for b in brokers.values()], "school-1/gate-1")
    first, second = (brokers[node_name(node)] for node in ring.order)
    return ring, first, second


def node_uplink(
    store: Storage,
    ring: NodeRing,
    first: MosquittoBroker,
    *,
    clock: FakeClock | None = None,
    return_after_s: float = 0.0,
) -> Uplink:
    """The police uplink over `ring`: quick back-off, a spread of 0.3 s, hourly heartbeats."""
    return Uplink(
        "police",
        params("police", first),
        store.uplink,
        SITE,
        backoff=Backoff(base_s=0.05, cap_s=0.2),
        clock=clock,
        services=Services(heartbeat_s=3600),
        failover=Failover(ring, spread_s=0.3, return_after_s=return_after_s),
    )


async def test_uplink_moves_to_the_other_node_when_its_node_dies_and_nothing_is_lost(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    """Two real mosquitto brokers as the two nodes of one destination. The node in use is
    killed; what was stored while it was down reaches the other node, alarms first, each lane
    in seq order; every event arrives (duplicates only by id); heartbeats name the node."""
    ring, first, second = two_nodes(police_broker, bureau_broker)
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
        listen("first", first.host, first.port) as on_first,
        listen("second", second.host, second.port) as on_second,
    ):
        uplink = node_uplink(store, ring, first)
        async with running(store, uplink):
            beat = await on_first.wait_for(lambda m: m.topic.endswith("/heartbeat"))
            assert beat.json["node"] == node_name((first.host, first.port)) == uplink.node
            kinds = ["alarm", "state"] * 2
            before = [await store.outbox.append(_event(k, n)) for n, k in enumerate(kinds)]
            for stored in before:
                await on_first.wait_event(_has_id(stored.id))
            await first.stop()  # SIGTERM without a clean disconnect of its clients
            # Stored while no node is in use: state first, then alarms pressed after them.
            during = [await store.outbox.append(_event("state", n)) for n in range(10, 15)]
            during += [await store.outbox.append(_event("alarm", n)) for n in range(20, 23)]
            for stored in during:
                await on_second.wait_event(_has_id(stored.id), timeout_s=15)
            beat = await on_second.wait_for(lambda m: m.topic.endswith("/heartbeat"))
            assert beat.json["node"] == node_name((second.host, second.port)) == uplink.node
            async with asyncio.timeout(10):
                # mark_sent follows the PUBACK by a moment; a bounded look at a count
                while await store.log.pending_count("police"):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        got_ids = [e["id"] for e in on_first.events() + on_second.events()]
        assert set(got_ids) == {s.id for s in before + during}  # nothing lost
        late = [e for e in on_second.events() if e["id"] in {s.id for s in during}]
        lanes = ["alarm" if e["type"].startswith("alarm.") else "state" for e in late]
        assert lanes == ["alarm"] * 3 + ["state"] * 5  # alarms first
        for lane in ("alarm", "state"):
            seqs = [e["seq"] for e, kind in zip(late, lanes, strict=True) if kind == lane]
            assert seqs == sorted(seqs)  # each lane in order
        by_id: dict[str, set[int]] = {}
        for event in on_first.events() + on_second.events():
            by_id.setdefault(event["id"], set()).add(event["seq"])
        assert all(len(seqs) == 1 for seqs in by_id.values())  # a repeat is the same event


def test_the_heartbeat_names_its_node_only_when_known() -> None:
    beat = contract.Heartbeat("police", 1, 0, 0, 0, 0, {"police": "up"})
    assert b'"node"' not in contract.heartbeat_payload(SITE, beat, at_ms=0)
    with_node = contract.Heartbeat("police", 1, 0, 0, 0, 0, {"police": "up"}, node="a:1883")
    assert b'"node":"a:1883"' in contract.heartbeat_payload(SITE, with_node, at_ms=0)
