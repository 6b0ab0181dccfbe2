"""The guard page without a browser: its config, PINs and lockout, the catalogue, the in-memory
source, and the server's HTTP side (refusals, actions, the live stream, clean shutdown)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.core.clock import FakeClock
from gateway.guard import catalogue
from gateway.guard.memory_source import MemorySource
from gateway.guard.pin import PinGate, PinHash, PinHashError, PinLockedOut, PinRejected, hash_pin
from gateway.guard.server import COALESCE_S, GuardServer, serve
from gateway.guard.view import AlarmView
from guard_support import GUARD, NOW, PIN, gate_source, guard_config, next_event

STATIC = resources.files("gateway.guard") / "static"


# --- the catalogue --------------------------------------------------------------------------
def test_every_key_has_both_languages() -> None:
    for key, texts in catalogue.MESSAGES.items():
        assert set(texts) == set(catalogue.LANGUAGES), key
        assert all(text.strip() for text in texts.values()), key


def test_every_key_the_page_uses_is_in_the_catalogue() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    js = (STATIC / "page.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n="([a-z_]+)"', html)) | set(
        re.findall(r'\bt\("([a-z_]+)"[,)]', js)
    )
    assert used, "the scan found no keys: the patterns are stale"
    assert sorted(used - set(catalogue.MESSAGES)) == []
    prefixes = set(re.findall(r'"([a-z]+_)"\s*\+', js))  # keys made of a prefix and a value
    assert prefixes <= set(catalogue.VALUE_KEYS), prefixes - set(catalogue.VALUE_KEYS)
    for prefix, values in catalogue.VALUE_KEYS.items():
        missing = [prefix + v for v in values if prefix + v not in catalogue.MESSAGES]
        assert missing == [], missing


def test_the_page_loads_nothing_from_outside() -> None:
    for name in ("index.html", "page.js", "page.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


# --- config and PINs --------------------------------------------------------------------------
def test_config_refuses_a_clear_pin_a_name_twice_a_hostname_and_unknown_keys() -> None:
    good = guard_config()
    assert good.host == "127.0.0.1" and good.language == "zh"
    bad_cases: list[dict[str, object]] = [
        {"guards": [{"name": "a", "pin_hash": "1234"}]},
        {"guards": [{"name": "a", "pin_hash": good.guards[0].pin_hash}] * 2},
        {"host": "gatehouse.local"},
        {"password": "1234"},
        {"guards": []},
    ]
    for changes in bad_cases:
        with pytest.raises(ValidationError):
            guard_config(**changes)


def test_a_pin_hash_checks_its_pin_only_and_bad_hashes_are_refused() -> None:
    encoded = hash_pin("13579")
    assert "13579" not in encoded
    assert PinHash.parse(encoded).matches("13579")
    assert not PinHash.parse(encoded).matches("13578")
    for bad in ("", "scrypt$1$2$3", "bcrypt$1$1$1$AA==$AA==", "scrypt$3$8$1$AA==$AA==",
                "scrypt$16384$8$1$!!$AA==", "scrypt$x$8$1$AA==$AA=="):  # fmt: skip
        with pytest.raises(PinHashError):
            PinHash.parse(bad)


def test_wrong_pins_lock_the_gate_for_a_while_then_it_opens_again() -> None:
    clock = FakeClock()
    gate = PinGate(
        [(GUARD, hash_pin(PIN))], max_failures=3, window_s=60, lockout_s=120, clock=clock
    )
    assert gate.check(PIN) == GUARD
    with pytest.raises(PinRejected) as first:
        gate.check("0000")
    assert first.value.attempts_left == 2
    with pytest.raises(PinRejected):
        gate.check("0000")
    with pytest.raises(PinLockedOut):
        gate.check("0000")
    clock.advance(119)
    with pytest.raises(PinLockedOut) as locked:
        gate.check(PIN)  # the right PIN too, while locked
    assert locked.value.retry_after_s == pytest.approx(1)
    clock.advance(1)
    assert gate.check(PIN) == GUARD


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    gate = PinGate(
        [(GUARD, hash_pin(PIN))], max_failures=2, window_s=60, lockout_s=120, clock=clock
    )
    with pytest.raises(PinRejected):
        gate.check("0000")
    clock.advance(60)
    with pytest.raises(PinRejected) as second:
        gate.check("0000")
    assert second.value.attempts_left == 1


# --- the in-memory source ---------------------------------------------------------------------
async def test_changed_returns_once_the_version_moves() -> None:
    source = MemorySource(now=lambda: NOW)
    waiting = asyncio.create_task(source.changed(source.version))
    await asyncio.sleep(0)
    assert not waiting.done()
    source.put_alarm(AlarmView("x", "box", "门", NOW, "stored"))
    assert await waiting == source.version == 1
    assert await source.changed(0) == 1  # already past: at once


# --- the server -------------------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(
    clock: FakeClock,
) -> AsyncIterator[tuple[MemorySource, GuardServer, aiohttp.ClientSession, str]]:
    source = gate_source(test_mode=False)
    server = GuardServer(source, guard_config(heartbeat_s=0.05), clock=clock)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield source, server, session, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def _act(
    session: aiohttp.ClientSession, base: str, body: object, **kwargs: object
) -> tuple[int, dict[str, object]]:
    async with session.post(f"{base}/api/action", json=body, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.json()


async def test_bad_requests_are_refused_and_counted(
    http: tuple[MemorySource, GuardServer, aiohttp.ClientSession, str],
) -> None:
    source, server, session, base = http
    async with session.post(f"{base}/api/action", data="action=reset&pin=2468") as form:
        assert form.status == 403  # not JSON: what a cross-site form could send
    status, _ = await _act(session, base, {"action": "reset", "target": "a-1", "pin": PIN},
                           headers={"Origin": "http://evil.example"})  # fmt: skip
    assert status == 403
    for body in ({"action": "unlock_door", "target": "door-1", "pin": PIN},
                 {"action": "reset", "target": "a-1", "pin": 2468},
                 {"action": "reset", "target": "\ud800", "pin": PIN, "x": 1}, "[]"):  # fmt: skip
        status, answer = await _act(session, base, body)
        assert (status, answer["error"]) == (400, "bad_request"), body
    async with session.post(f"{base}/api/action", data=b"{" * 10_000,
                            headers={"Content-Type": "application/json"}) as big:  # fmt: skip
        assert big.status in (400, 413)
    assert server.refusals >= 6
    assert source.actions == []


async def test_actions_are_recorded_with_who_did_them(
    http: tuple[MemorySource, GuardServer, aiohttp.ClientSession, str],
) -> None:
    source, _, session, base = http
    status, answer = await _act(session, base, {"action": "reset", "target": "a-2", "pin": PIN})
    assert (status, answer["reason"]) == (409, "reason_required")  # not acknowledged yet
    status, answer = await _act(session, base, {"action": "test_press", "target": "door-1",
                                                "pin": PIN})  # fmt: skip
    assert (status, answer["reason"]) == (409, "unknown_box")
    status, answer = await _act(session, base, {"action": "wrong", "target": "a-2", "pin": "1"})
    assert status == 400
    status, answer = await _act(session, base, {"action": "reset", "target": "a-2", "pin": "1111"})
    assert (status, answer["error"]) == (401, "pin_wrong")
    for action, target, reason in (("reset", "a-2", "误按 已电话告知公安"),
                                   ("test_press", "box-east", None),
                                   ("silence_siren", "box-west", None)):  # fmt: skip
        body = {"action": action, "target": target, "pin": PIN}
        if reason:
            body["reason"] = reason
        status, answer = await _act(session, base, body)
        assert (status, answer) == (200, {"ok": True, "by": GUARD})
    assert [(a.action, a.target, a.by, a.reason) for a in source.actions] == [
        ("reset", "a-2", GUARD, "误按 已电话告知公安"),
        ("test_press", "box-east", GUARD, None),
        ("silence_siren", "box-west", GUARD, None),
    ]
    # The test press put the gate in test mode: another is refused until it ends.
    assert source.snapshot().test_mode_until is not None
    status, answer = await _act(session, base, {"action": "test_press", "target": "box-west",
                                                "pin": PIN})  # fmt: skip
    assert (status, answer["reason"]) == (409, "test_mode_on")
    assert len(source.actions) == 3


async def _next_state(lines: aiohttp.StreamReader) -> dict[str, Any]:
    event, data = await next_event(lines)
    while event == "beat":
        event, data = await next_event(lines)
    assert event == "state"
    return dict(json.loads(data))


async def test_the_stream_sends_the_state_each_change_and_beats_when_quiet(
    http: tuple[MemorySource, GuardServer, aiohttp.ClientSession, str], clock: FakeClock
) -> None:
    source, _, session, base = http
    async with session.get(f"{base}/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        event, data = await next_event(response.content)
        first = json.loads(data)
        assert event == "state" and [a["alarm_id"] for a in first["alarms"]] == [
            "a-3",
            "a-2",
            "a-1",
        ]
        assert (await next_event(response.content))[0] == "beat"
        clock.advance(COALESCE_S)  # quiet since the first state: the change goes out at once
        source.update_alarm("a-3", stage="at_police")
        assert (await _next_state(response.content))["alarms"][0]["stage"] == "at_police"


async def test_a_burst_of_changes_is_sent_once_with_the_latest_state(
    http: tuple[MemorySource, GuardServer, aiohttp.ClientSession, str], clock: FakeClock
) -> None:
    source, _, session, base = http
    async with session.get(f"{base}/events") as response:
        first = await _next_state(response.content)
        for stage in ("at_police", "acknowledged", "escalated") * 5:
            source.update_alarm("a-3", stage=stage)
        await asyncio.wait_for(clock.sleeping(), 5)  # the stream holds the burst back
        clock.advance(COALESCE_S)
        burst = await _next_state(response.content)
        assert burst["version"] == source.version == first["version"] + 15
        assert burst["alarms"][0]["stage"] == "escalated"
        # The next change comes within COALESCE_S of that one: it waits too, then goes alone.
        source.update_alarm("a-3", stage="stored")
        await asyncio.wait_for(clock.sleeping(), 5)
        clock.advance(COALESCE_S)
        assert (await _next_state(response.content))["version"] == burst["version"] + 1


async def test_serve_runs_until_cancelled_and_closes_open_streams() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = asyncio.Event()
    config = guard_config(port=port, heartbeat_s=30.0)  # no beat: only the shutdown ends it
    task = asyncio.create_task(serve(gate_source(), config, ready=ready), name="guard-page")
    await ready.wait()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/events") as stream,
    ):
        assert (await next_event(stream.content))[0] == "state"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rest = await stream.content.read()  # the stream ended: EOF, not a hang
        assert rest == b""
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/"):
            pass
