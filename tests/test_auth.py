"""Signed commands and events (gateway.core.auth): every refusal has its reason, nothing crashes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import auth, contract
from gateway.core.events import DeviceRef, Severity, new_event

TZ = ZoneInfo("Asia/Shanghai")
SITE = contract.Site("school-1", "gate-1", TZ)
NOW_MS = 1_795_000_000_000
POLICE = Ed25519PrivateKey.generate()
BUREAU = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
TRUST = auth.TrustStore(
    {
        "police": auth.TrustedKey(POLICE.public_key(), frozenset({"*"})),
        "bureau": auth.TrustedKey(BUREAU.public_key(), frozenset({"acknowledge", "replay"})),
    }
)


def fresh_cache(max_entries: int = 4096) -> auth.ReplayCache:
    """A cache as a gateway started well before NOW_MS would have it."""
    return auth.ReplayCache(since_ms=NOW_MS - 3_600_000, max_entries=max_entries)


def at(offset_ms: int = 0) -> datetime:
    return datetime.fromtimestamp((NOW_MS + offset_ms) / 1000, TZ)


def unsigned(**fields: Any) -> dict[str, Any]:
    body = auth.build_command(
        gateway="gate-1",
        school="school-1",
        command="bollard.raise",
        args={"device": "bollard-1"},
        issued_at=at(),
    )
    body.update(fields)
    return body


def signed(key: Ed25519PrivateKey = POLICE, key_id: str = "police", **fields: Any) -> bytes:
    return encode(auth.sign_command(unsigned(**fields), key, key_id))


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def verify(
    raw: bytes, replay: auth.ReplayCache | None = None, now_ms: int = NOW_MS
) -> auth.Command:
    return auth.verify_command(
        raw,
        trust=TRUST,
        now_ms=now_ms,
        site=SITE,
        replay=fresh_cache() if replay is None else replay,
    )


def tampered_args() -> bytes:
    obj = json.loads(signed())
    obj["args"]["device"] = "bollard-2"
    return encode(obj)


def without_sig() -> bytes:
    obj = json.loads(signed())
    del obj["sig"]
    return encode(obj)


def with_sig(sig: object) -> bytes:
    obj = json.loads(signed())
    obj["sig"] = sig
    return encode(obj)


def resigned_issuer() -> bytes:
    """Signed by the bureau key, then relabelled as police: the signature no longer matches."""
    obj = json.loads(signed(BUREAU, "bureau", command="acknowledge"))
    obj["issuer"] = "police"
    return encode(obj)


def test_signed_command_verifies() -> None:
    command = verify(signed())
    assert command.command == "bollard.raise"
    assert command.args == {"device": "bollard-1"}
    assert command.issuer == "police"
    assert command.issued_at_ms == NOW_MS
    assert (command.gateway, command.school) == ("gate-1", "school-1")


def test_restricted_key_may_issue_its_own_commands() -> None:
    assert verify(signed(BUREAU, "bureau", command="acknowledge")).issuer == "bureau"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(without_sig, "bad_signature", id="unsigned"),
        pytest.param(lambda: signed(STRANGER, "police"), "bad_signature", id="other-key"),
        pytest.param(tampered_args, "bad_signature", id="tampered-args"),
        pytest.param(resigned_issuer, "bad_signature", id="relabelled-issuer"),
        pytest.param(lambda: with_sig("AAAA"), "bad_signature", id="short-sig"),
        pytest.param(lambda: with_sig(7), "bad_signature", id="sig-number"),
        pytest.param(lambda: signed(issued_at=at(-41_000).isoformat()), "stale", id="stale"),
        pytest.param(lambda: signed(issued_at=at(21_000).isoformat()), "future", id="future"),
        pytest.param(lambda: signed(gateway="gate-2"), "wrong_gateway", id="wrong-gateway"),
        pytest.param(lambda: signed(school="school-2"), "wrong_gateway", id="wrong-school"),
        pytest.param(lambda: signed(STRANGER, "nobody"), "unknown_key", id="unknown-key"),
        pytest.param(lambda: signed(BUREAU, "bureau"), "not_allowed", id="not-allowed"),
        pytest.param(lambda: b"not json", "malformed", id="not-json"),
        pytest.param(lambda: b"[1, 2]", "malformed", id="array"),
        pytest.param(lambda: b'{"schema": 1, "schema": 1}', "malformed", id="duplicate-key"),
        pytest.param(lambda: signed(schema=True), "malformed", id="schema-true"),
        pytest.param(lambda: signed(schema=2), "malformed", id="schema-2"),
        pytest.param(lambda: signed(extra=1), "malformed", id="unknown-field"),
        pytest.param(lambda: signed(id="not-a-uuid"), "malformed", id="bad-id"),
        pytest.param(
            lambda: signed(id="0A1B2C3D-0000-4000-8000-000000000000"), "malformed", id="upper-id"
        ),
        pytest.param(lambda: signed(command="self_destruct"), "malformed", id="unknown-command"),
        pytest.param(lambda: signed(args=[1]), "malformed", id="args-not-object"),
        pytest.param(
            lambda: signed(issued_at="2026-11-24T08:00:00.000"), "malformed", id="no-offset"
        ),
        pytest.param(lambda: signed(issued_at=12345), "malformed", id="issued-at-number"),
        pytest.param(
            lambda: signed().replace(b'"args": {', b'"args": {"x": NaN, '), "malformed", id="nan"
        ),
        pytest.param(lambda: b'{"args": "' + b"x" * 20_000 + b'"}', "malformed", id="too-large"),
        pytest.param(lambda: b"[" * 50_000, "malformed", id="deeply-nested"),
        pytest.param(lambda: b"\xff\xfe{}", "malformed", id="not-utf8"),
    ],
)
def test_refused_with_reason(make: Callable[[], bytes], reason: str) -> None:
    replay = fresh_cache()
    with pytest.raises(auth.CommandRejected) as caught:
        verify(make(), replay)
    assert caught.value.reason == reason
    assert len(replay) == 0  # a refused command leaves no trace that could block a real one


def test_window_edges_are_inside() -> None:
    verify(signed(issued_at=at(-40_000).isoformat()))
    verify(signed(issued_at=at(20_000).isoformat()))


def test_window_is_configurable() -> None:
    narrow = auth.FreshnessWindow(past_ms=5_000, future_ms=1_000)
    raw = signed(issued_at=at(-6_000).isoformat())
    with pytest.raises(auth.CommandRejected, match="stale"):
        auth.verify_command(
            raw, trust=TRUST, now_ms=NOW_MS, site=SITE, replay=fresh_cache(), window=narrow
        )


def test_replayed_command_is_refused() -> None:
    replay = fresh_cache()
    raw = signed()
    verify(raw, replay)
    with pytest.raises(auth.CommandRejected) as caught:
        verify(raw, replay, now_ms=NOW_MS + 1_000)
    assert caught.value.reason == "replayed"


def test_forged_copy_does_not_burn_the_real_id() -> None:
    replay = fresh_cache()
    real = signed()
    forged = json.loads(real)
    forged["args"] = {"device": "bollard-2"}
    with pytest.raises(auth.CommandRejected, match="bad_signature"):
        verify(encode(forged), replay)
    verify(real, replay)


def test_replay_cache_forgets_after_the_window() -> None:
    replay = fresh_cache()
    raw = signed()
    verify(raw, replay)
    # At the far edge of the window the command is still fresh, so its id is still remembered.
    with pytest.raises(auth.CommandRejected, match="replayed"):
        verify(raw, replay, now_ms=NOW_MS + 40_000)
    with pytest.raises(auth.CommandRejected, match="stale"):
        verify(raw, replay, now_ms=NOW_MS + 40_001)
    replay.forget_expired(NOW_MS + 40_001)
    assert len(replay) == 0


def test_replay_cache_is_bounded_and_refuses_rather_than_forgets() -> None:
    replay = fresh_cache(max_entries=3)
    for _ in range(3):
        verify(signed(), replay)
    with pytest.raises(auth.CommandRejected) as caught:
        verify(signed(), replay, now_ms=NOW_MS + 1)
    assert caught.value.reason == "rate_limited"
    assert len(replay) == 3
    later = NOW_MS + 41_000
    verify(signed(issued_at=at(41_000).isoformat()), replay, now_ms=later)
    assert len(replay) == 1


def test_commands_issued_before_the_cache_existed_are_refused() -> None:
    # After a restart the previous run's ids are gone: a command issued before the start may
    # already have been carried out, so it is refused and its sender issues a new one.
    replay = auth.ReplayCache(since_ms=NOW_MS)
    with pytest.raises(auth.CommandRejected) as caught:
        verify(signed(issued_at=at(-1).isoformat()), replay)
    assert caught.value.reason == "stale"
    verify(signed(), replay)


def test_replay_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fresh_cache(max_entries=0)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, b"{}"),
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"z": {"y": 1, "x": [3, {"d": 1, "c": 2}]}}, b'{"z":{"x":[3,{"c":2,"d":1}],"y":1}}'),
        ({"name": "北门"}, '{"name":"北门"}'.encode()),
        ({"é": "ß", "e": "x"}, '{"e":"x","é":"ß"}'.encode()),
        ({"emoji": "🚨"}, '{"emoji":"🚨"}'.encode()),
        ({"s": 'a"b\\c\n\t'}, b'{"s":"a\\"b\\\\c\\n\\t"}'),
        ({"ctl": "\x01"}, b'{"ctl":"\\u0001"}'),
        ({"t": True, "f": False, "n": None}, b'{"f":false,"n":null,"t":true}'),
        ({"i": -7, "f": 1.5, "big": 2**63}, b'{"big":9223372036854775808,"f":1.5,"i":-7}'),
    ],
)
def test_canonical_form(obj: dict[str, Any], expected: bytes) -> None:
    assert auth.canonical(obj) == expected
    assert auth.canonical(json.loads(expected)) == expected  # parse and re-encode: a fixed point


@pytest.mark.parametrize("obj", [{"x": float("nan")}, {"x": float("inf")}, {"x": "\ud800"}])
def test_canonical_refuses_what_has_no_single_form(obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        auth.canonical(obj)


def event_payload() -> bytes:
    device = DeviceRef("box-1", "alarm_box", "北门")
    event = new_event(
        "alarm.panic",
        device,
        severity=Severity.CRITICAL,
        occurred_at_ms=NOW_MS,
        data={"button": 1},
        alarm_id="a-1",
    )
    return contract.encode_event_body(SITE, dataclasses.replace(event, seq=7))


def delivered(signed_body: bytes, attempt: int = 1) -> bytes:
    """What a broker gets: the stored (signed) body and the delivery fields."""
    return contract.finish_event_payload(signed_body, historical=False, attempt=attempt)


GATEWAY_KEY = Ed25519PrivateKey.generate()
GATEWAY_KEYS = {"gate-1": GATEWAY_KEY.public_key()}


def test_signed_event_payload_verifies_with_any_delivery_fields() -> None:
    payload = event_payload()
    signed_body = auth.sign_payload(payload, GATEWAY_KEY, "gate-1")
    assert signed_body.startswith(payload[:-1])  # appended, the body is not re-encoded
    for attempt in (1, 2):
        assert auth.verify_payload(delivered(signed_body, attempt), GATEWAY_KEYS) == {
            **json.loads(payload),
            "signer": "gate-1",
            "historical": False,
            "attempt": attempt,
        }


def test_every_flipped_byte_of_a_signed_payload_fails() -> None:
    signed_body = auth.sign_payload(event_payload(), GATEWAY_KEY, "gate-1")
    signed_payload = delivered(signed_body)
    for index in range(len(signed_body) - 1):  # every byte the signature covers, and sig itself
        flipped = bytearray(signed_payload)
        flipped[index] ^= 0x01
        with pytest.raises(auth.PayloadRejected):
            auth.verify_payload(bytes(flipped), GATEWAY_KEYS)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda obj: obj.pop("sig"), "bad_signature"),
        (lambda obj: obj.pop("signer"), "bad_signature"),
        (lambda obj: obj.update(signer="gate-9"), "unknown_key"),
        (lambda obj: obj.update(seq=8), "bad_signature"),
    ],
)
def test_event_payload_refusals(mutate: Callable[[dict[str, Any]], object], reason: str) -> None:
    obj = json.loads(delivered(auth.sign_payload(event_payload(), GATEWAY_KEY, "gate-1")))
    mutate(obj)
    with pytest.raises(auth.PayloadRejected) as caught:
        auth.verify_payload(encode(obj), GATEWAY_KEYS)
    assert caught.value.reason == reason


def test_payload_is_signed_once() -> None:
    once = auth.sign_payload(b'{"a":1}', GATEWAY_KEY, "gate-1")
    with pytest.raises(ValueError, match="already signed"):
        auth.sign_payload(once, GATEWAY_KEY, "gate-1")
    empty = auth.sign_payload(b"{}", GATEWAY_KEY, "g")
    assert auth.verify_payload(empty, {"g": GATEWAY_KEY.public_key()}) == {"signer": "g"}


# --- fuzz: nothing but CommandRejected escapes verify_command -----------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def only_rejections(raw: bytes) -> None:
    with contextlib.suppress(auth.CommandRejected):
        verify(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(raw: bytes) -> None:
    only_rejections(raw)


VALID = signed()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_bytes(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "delete":
            del raw[index]
        else:
            byte = data.draw(st.integers(0, 255))
            if action == "replace":
                raw[index] = byte
            else:
                raw.insert(index, byte)
    only_rejections(bytes(raw))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([*json.loads(VALID), "extra"]),
    json_values,
    st.booleans(),
)
def test_fuzz_mutated_fields(field: str, value: object, resign: bool) -> None:
    obj = json.loads(VALID)
    obj[field] = value
    try:
        if resign:  # a correctly signed but odd command must be refused just as calmly
            obj = auth.sign_command(obj, POLICE, "police")
        raw = json.dumps(obj).encode()
    except ValueError:
        return  # no canonical form (NaN, a lone surrogate): cannot be signed
    only_rejections(raw)
