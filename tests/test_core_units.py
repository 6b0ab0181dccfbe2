"""Pure pieces of the core: event ids, lanes, routing, backoff, payload encoding, codecs."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from drivers.codecs import counter_delta, rising_edges, span
from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.events import _UUID7, DeviceRef, Lane, Severity, lane_of, new_event
from gateway.store.routing import Router

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))


def test_event_ids_are_uuid7_unique_and_time_ordered_within_one_millisecond() -> None:
    make = _UUID7()
    ids = [make(1_700_000_000_000) for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_event_ids_keep_order_when_the_clock_steps_back() -> None:
    make = _UUID7()
    first = make(1_700_000_000_500)
    second = make(1_700_000_000_000)
    assert second > first


@pytest.mark.parametrize(
    ("event_type", "lane"),
    [
        ("alarm.panic", Lane.ALARM),
        ("alarm.panic_repeated", Lane.ALARM),
        ("alarm.reset", Lane.STATE),
        ("device.offline", Lane.STATE),
        ("telemetry.temperature", Lane.TELEMETRY),
        ("heartbeat.gateway", Lane.TELEMETRY),
        ("report.points", Lane.TELEMETRY),
        # The daily inspection report is a record the bureau checks the school by: never the
        # first thing evicted under disk pressure (the telemetry lane's fate).
        ("report.daily", Lane.STATE),
    ],
)
def test_lanes(event_type: str, lane: Lane) -> None:
    assert lane_of(event_type) is lane


def test_routing_patterns() -> None:
    router = Router({"police": ["alarm.*", "device.offline"], "bureau": ["*"], "none": []})
    assert router.destinations_for("alarm.panic") == ["police", "bureau"]
    assert router.destinations_for("device.offline") == ["police", "bureau"]
    assert router.destinations_for("device.online") == ["bureau"]
    assert router.destinations_for("alarmist.x") == ["bureau"]


def test_backoff_is_capped_full_jitter_and_resets() -> None:
    top = Backoff(base_s=0.5, cap_s=4.0, rand=lambda: 1.0)
    assert [top.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    top.reset()
    assert top.next_delay_s() == 0.5
    assert Backoff(base_s=0.5, cap_s=4.0, rand=lambda: 0.0).next_delay_s() == 0.0
    with pytest.raises(ValueError):
        Backoff(base_s=2.0, cap_s=1.0)


def test_event_payload_carries_the_contract_fields() -> None:
    event = new_event(
        "alarm.panic",
        DeviceRef("box", "alarm_box", "north gate"),
        severity=Severity.CRITICAL,
        occurred_at_ms=1_764_000_000_123,
        data={"button": 0},
        alarm_id="a1",
    )
    with pytest.raises(ValueError, match="seq"):
        contract.encode_event_body(SITE, event)
    body = contract.encode_event_body(SITE, replace(event, seq=7))
    payload = json.loads(contract.finish_event_payload(body, historical=True, attempt=3))
    assert payload == {
        "schema": 1,
        "id": event.id,
        "seq": 7,
        "school": "school-1",
        "gateway": "gate-1",
        "device": {"id": "box", "kind": "alarm_box", "location": "north gate"},
        "type": "alarm.panic",
        "severity": "critical",
        "occurred_at": "2025-11-25T00:00:00.123+08:00",
        "drill": False,
        "test": False,
        "data": {"button": 0},
        "alarm_id": "a1",
        "historical": True,
        "attempt": 3,
    }
    assert contract.decode_event(json.dumps(payload).encode())["seq"] == 7
    with pytest.raises(ValueError):
        contract.decode_event(b'{"schema": 99}')


def test_topics_are_versioned_under_the_root() -> None:
    assert contract.event_topic(SITE, "alarm") == "schoolgate/v1/school-1/gate-1/events/alarm"
    assert contract.status_topic(SITE) == "schoolgate/v1/school-1/gate-1/status"
    status = json.loads(contract.status_payload(SITE, online=False))
    assert status["online"] is False and status["gateway"] == "gate-1"


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [([0], (0, 1)), ([3, 0, 7], (0, 8)), ([5, 6], (5, 2))],
)
def test_span(addresses: list[int], expected: tuple[int, int]) -> None:
    assert span(addresses) == expected


def test_span_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        span([])


@pytest.mark.parametrize(
    ("previous", "current", "delta"),
    [(0, 0, 0), (0, 3, 3), (65535, 0, 1), (65530, 4, 10)],
)
def test_counter_delta_wraps(previous: int, current: int, delta: int) -> None:
    assert counter_delta(previous, current) == delta


def test_rising_edges() -> None:
    assert rising_edges([False, True, True, False], [True, True, False, True]) == [0, 3]
