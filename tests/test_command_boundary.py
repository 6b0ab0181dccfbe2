"""The command handler's boundary (issue 10, defect 1): no command, however malformed, makes
the handler or the answer's encoding raise. Lone surrogates in echoed fields, sequence numbers
past SQLite's integers, and a target that fails in a way nobody expected all end in an answer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from command_support import SECURITY, SITE, Target, command, encode, now_ms

from gateway.commands import handlers as commands
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.store.routing import Router
from gateway.store.storage import Storage


async def no_replay(first: int, last: int) -> list[int]:
    raise AssertionError("replay must not be reached")


def answer_of(outcome: contract.CommandResult) -> dict[str, Any]:
    """The encoded answer, parsed back: it must be valid UTF-8 JSON."""
    payload = contract.result_payload(SITE, outcome, at_ms=1_795_000_000_000)
    body = json.loads(payload.decode("utf-8"))
    assert isinstance(body, dict)
    return body


async def handle(raw: bytes, target: Target | None = None) -> contract.CommandResult:
    # A gateway that started 5 s before `raw` was signed: each call makes a new one, and a
    # command issued before its gateway started is refused as stale (gateway.core.auth).
    clock = FakeClock(wall_ms=now_ms() - 5_000)
    handler = commands.Commands(SITE, SECURITY, target or Target(), clock=clock)
    return await handler.handle(raw, destination="police", replay=no_replay)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"id":"\\ud800"}', id="id-lone-surrogate"),
        pytest.param(b'{"command":"\\udfff"}', id="command-lone-surrogate"),
        pytest.param(b'{"id":"\\ud800","command":"\\ud800x"}', id="both"),
    ],
)
async def test_a_lone_surrogate_in_an_echoed_field_is_answered(raw: bytes) -> None:
    outcome = await handle(raw)
    assert (outcome.status, outcome.reason) == ("rejected", "malformed")
    body = answer_of(outcome)
    assert "\ufffd" in (body["command_id"] or "") + (body["command"] or "")


async def test_a_lone_surrogate_in_school_is_refused_as_wrong_gateway_and_answered() -> None:
    obj = command("drill.start", {})
    obj["school"] = "school-\ud800" * 500
    outcome = await handle(encode(obj))
    assert (outcome.status, outcome.reason) == ("rejected", "wrong_gateway")
    body = answer_of(outcome)
    assert "\ufffd" in body["detail"]
    assert len(body["detail"]) <= contract.MAX_DETAIL_CHARS


@pytest.mark.parametrize(
    ("from_seq", "to_seq"),
    [(2**63, 2**63), (2**63 - 1, 2**63), (2**64, 2**64 + 1), (-(2**63) - 1, 1), (0, 0)],
)
async def test_replay_with_seqs_out_of_range_fails_with_bad_args(
    tmp_path: Path, from_seq: int, to_seq: int
) -> None:
    async with Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store:

        async def replay(first: int, last: int) -> list[int]:
            return [row.seq for row in await store.log.replay("police", first, last)]

        handler = commands.Commands(SITE, SECURITY, Target())
        raw = encode(command("replay", {"from_seq": from_seq, "to_seq": to_seq}))
        outcome = await handler.handle(raw, destination="police", replay=replay)
    assert (outcome.status, outcome.reason) == ("failed", "bad_args")
    answer_of(outcome)


async def test_the_highest_seq_is_still_a_valid_replay(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store:

        async def replay(first: int, last: int) -> list[int]:
            return [row.seq for row in await store.log.replay("police", first, last)]

        handler = commands.Commands(SITE, SECURITY, Target())
        raw = encode(command("replay", {"from_seq": 2**63 - 1, "to_seq": 2**63 - 1}))
        outcome = await handler.handle(raw, destination="police", replay=replay)
    assert outcome.status == "done" and outcome.result is not None
    assert outcome.result["seqs"] == []


async def test_an_unexpected_error_in_the_target_is_a_counted_internal_error() -> None:
    handler = commands.Commands(SITE, SECURITY, Target(fail=True))
    raw = encode(command("drill.start", {"minutes": 5}))
    outcome = await handler.handle(raw, destination="police", replay=no_replay)
    assert (outcome.status, outcome.reason) == ("failed", "internal_error")
    assert handler.refusals["internal_error"] == 1
    body = answer_of(outcome)
    assert body["command"] == "drill.start" and "\ufffd" in body["detail"]


async def test_refusals_are_counted_by_reason() -> None:
    handler = commands.Commands(SITE, SECURITY, Target())
    for raw in (b"", b"[]", encode(command("unlock", {"device": "nope", "door": 1}))):
        await handler.handle(raw, destination="police", replay=no_replay)
    assert handler.rejected == 2
    assert dict(handler.refusals) == {"malformed": 2, "unknown_device": 1}


@pytest.mark.parametrize(
    "value",
    [
        "\ud800",
        "a\udfffb" * 10_000,
        math.nan,
        math.inf,
        {"deep": [[[[{"x": "\ud800"}]]]]},
        {1: "int key", "\ud800": "surrogate key"},
        object(),
        b"bytes",
    ],
    ids=["surrogate", "long", "nan", "inf", "nested", "keys", "object", "bytes"],
)
def test_a_result_of_any_value_encodes_to_valid_json(value: object) -> None:
    outcome = contract.CommandResult(
        "\ud800", "replay", "done", result={"value": value, "more": [value]}
    )
    body = answer_of(outcome)
    assert body["command_id"] == "\ufffd"


def test_an_event_body_with_unencodable_data_still_encodes() -> None:
    status = contract.status_payload(
        contract.Site("s\ud800", "g", SITE.tz), online=True, at_ms=1_795_000_000_000
    )
    assert json.loads(status.decode("utf-8"))["school"] == "s\ufffd"


async def test_the_bureau_closes_a_ledger_entry_and_an_unknown_one_fails_with_the_reason() -> None:
    target = Target()
    args = {"entry": "20261124-001", "note": "cable replaced"}
    done = await handle(encode(command("ledger.close", args)), target)
    assert done.status == "done"
    assert done.result == {
        "entry": "20261124-001",
        "closed_by": command("ledger.close", {})["issuer"],
    }
    unknown = await handle(encode(command("ledger.close", {**args, "entry": "x"})), target)
    assert (unknown.status, unknown.reason) == ("failed", "ledger_refused")
    assert "no ledger entry 'x'" in (unknown.detail or "")
    no_note = await handle(encode(command("ledger.close", {"entry": "20261124-001"})), target)
    assert (no_note.status, no_note.reason) == ("failed", "bad_args")
