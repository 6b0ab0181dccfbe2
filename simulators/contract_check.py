"""A received MQTT message checked against the written contract: the topic templates of
docs/schemas/topics.json and the JSON Schema each one names. The receiving side's view of
docs/contract.md, for the tests, the scenario runner and the demo.

Owns loading the schemas, matching a topic to its entry, and the checks a schema cannot make on
its own (the payload's school and gateway agree with the topic, an event's type with its category,
a heartbeat's range and paths with its destination). It covers both directions: what the gateway
publishes (events, status, heartbeats, command results) and what a receiver sends it (commands).
It does not subscribe (`simulators.listener` does), never builds payloads (`gateway.core.contract`
and `gateway.core.auth` do) and does not verify signatures (`gateway.core.auth.verify_payload`
does).

`jsonschema` is a dev dependency and docs/schemas is not in the wheel: this runs from a source
checkout, as the tests and the simulators do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # ships no stubs

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
REPLAY_SPAN = 10_000
"""A replay command covers fewer seqs than this (docs/contract.md;
gateway.commands.handlers.MAX_REPLAY_SPAN, not imported: a receiver's tests should not need the
gateway's drivers)."""
SCHEMA_FILES = (
    "event.schema.json",
    "status.schema.json",
    "heartbeat.schema.json",
    "command.schema.json",
    "result.schema.json",
)


class ContractViolation(ValueError):
    """A message that breaks the contract; `problems` has one line per broken rule."""

    def __init__(self, topic: str, problems: list[str]) -> None:
        super().__init__(f"{topic}: " + "; ".join(problems))
        self.topic = topic
        self.problems = problems


class Message(Protocol):
    """What a listener records (`simulators.listener.Received` is one)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Checked:
    kind: str
    """The topic's name in topics.json: `event`, `status`, `heartbeat`, `command` or `result`."""
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Topic:
    name: str
    regex: re.Pattern[str]
    validator: Any  # a Draft202012Validator (untyped)


def load_json(name: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    obj = json.loads((schema_dir / name).read_text(encoding="utf-8"))
    if not isinstance(obj, dict):
        raise TypeError(f"{name} is not a JSON object")
    return obj


def check_schemas(schema_dir: Path = SCHEMA_DIR) -> None:
    """Raise `jsonschema.SchemaError` if a schema file is not valid JSON Schema 2020-12."""
    for name in SCHEMA_FILES:
        Draft202012Validator.check_schema(load_json(name, schema_dir))


def _topic_regex(template: str, placeholders: dict[str, Any], root: str | None) -> re.Pattern[str]:
    parts = re.split(r"\{([a-z_]+)\}", template)
    # re.split with a group alternates literal text and placeholder names.
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        elif part == "root" and root is not None:
            pattern += f"(?P<root>{re.escape(root)})"
        else:
            pattern += f"(?P<{part}>{placeholders[part]['pattern']})"
    return re.compile(pattern)


class ContractChecker:
    """Checks messages against the schemas in `schema_dir`. With `root`, a topic must start with
    exactly that root (a gateway's `contract.topic_root`); without, any valid root is taken."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, *, root: str | None = None) -> None:
        topics = load_json("topics.json", schema_dir)
        self._topics = [
            _Topic(
                name=entry["name"],
                regex=_topic_regex(entry["topic"], topics["placeholders"], root),
                validator=Draft202012Validator(load_json(entry["schema"], schema_dir)),
            )
            for entry in topics["topics"]
        ]

    def problems(self, topic: str, payload: bytes) -> list[str]:
        """Every way the message breaks the contract; empty when it keeps it."""
        try:
            self.check(topic, payload)
        except ContractViolation as exc:
            return exc.problems
        return []

    def check(self, topic: str, payload: bytes) -> Checked:
        """The message's kind and parsed body; `ContractViolation` when it breaks the contract."""
        matched = [(t, m) for t in self._topics if (m := t.regex.fullmatch(topic))]
        if not matched:
            raise ContractViolation(topic, ["the topic matches no topic in topics.json"])
        entry, match = matched[0]
        body, problems = self._validate(entry, topic, payload)
        if isinstance(body, dict):
            problems += _topic_agrees(entry.name, match, body)
            problems += _body_agrees(entry.name, body)
        if problems:
            raise ContractViolation(topic, problems)
        return Checked(entry.name, body)

    def check_payload(self, kind: str, payload: bytes, *, topic: str = "(no topic)") -> Checked:
        """A payload checked against the schema of `kind` (a name in topics.json) whatever its
        topic: for an MQTT 5 command result sent to the command's response topic. `topic` only
        names the message in a violation."""
        entry = next((t for t in self._topics if t.name == kind), None)
        if entry is None:
            raise ValueError(f"no topic named {kind!r} in topics.json")
        body, problems = self._validate(entry, topic, payload)
        if isinstance(body, dict):
            problems += _body_agrees(entry.name, body)
        if problems:
            raise ContractViolation(topic, problems)
        return Checked(entry.name, body)

    @staticmethod
    def _validate(entry: _Topic, topic: str, payload: bytes) -> tuple[Any, list[str]]:
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ContractViolation(topic, [f"the payload is not UTF-8 JSON: {exc}"]) from None
        problems = [
            f"{'/'.join(map(str, error.absolute_path)) or '(payload)'}: {error.message}"
            for error in sorted(entry.validator.iter_errors(body), key=lambda e: e.json_path)
        ]
        return body, problems

    def check_all(self, messages: Iterable[Message]) -> list[str]:
        """One line per broken message (`topic: problem; problem`); empty when all keep it."""
        return [
            f"{m.topic}: {'; '.join(problems)}"
            for m in messages
            if (problems := self.problems(m.topic, m.payload))
        ]


def _topic_agrees(kind: str, match: re.Match[str], body: dict[str, Any]) -> list[str]:
    problems = [
        f"{field}: {body.get(field)!r} in the payload, {match[field]!r} in the topic"
        for field in ("school", "gateway")
        if body.get(field) != match[field]
    ]
    event_type = body.get("type")
    if kind == "event" and isinstance(event_type, str):
        category = event_type.split(".", 1)[0]
        if category != match["category"]:
            problems.append(f"type {event_type!r} is not in the topic's category")
    return problems


def _body_agrees(kind: str, body: dict[str, Any]) -> list[str]:
    """The rules within one payload that JSON Schema cannot relate: an order between two
    numbers, a key named by a value."""
    problems: list[str] = []
    if kind == "heartbeat":
        first, last = body.get("from_seq"), body.get("last_seq")
        if isinstance(first, int) and isinstance(last, int) and first > last:
            problems.append(f"from_seq {first} is after last_seq {last}")
        paths, destination = body.get("paths"), body.get("destination")
        if isinstance(paths, dict) and isinstance(destination, str) and destination not in paths:
            problems.append(f"paths has no entry for its own destination {destination!r}")
    args = body.get("args")
    if kind == "command" and body.get("command") == "replay" and isinstance(args, dict):
        first, last = args.get("from_seq"), args.get("to_seq")
        if isinstance(first, int) and isinstance(last, int) and not 0 <= last - first < REPLAY_SPAN:
            span = f"from_seq <= to_seq < from_seq + {REPLAY_SPAN}"
            problems.append(f"args: need {span}, not {first}..{last}")
    return problems


@cache
def default_checker() -> ContractChecker:
    """The checker for the repo's schemas and any root, loaded once."""
    return ContractChecker()
