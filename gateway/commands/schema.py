"""docs/schemas/command.schema.json, generated from the command registry.

Owns `command_schema()`: the envelope (gateway.core.auth's, written here as data: its fields do
not change with the commands) plus, from gateway.commands.registry, the enum of command names and
each command's `args`, from its pydantic model (strict types, bounds, no unknown field). Run
`python -m gateway.commands.schema > docs/schemas/command.schema.json` after changing a command;
tests/test_command_schema.py fails while the file and the registry differ.

It does not validate anything (simulators.contract_check does, with jsonschema).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gateway.commands.args import MAX_REPLAY_SPAN, TIMESTAMP_PATTERN, Args
from gateway.commands.registry import REMOTE, RemoteCommand
from gateway.core import auth

_DESCRIPTION = (
    "One signed command on <root>/<school>/<gateway>/commands, sent by a receiver to its own "
    "broker (docs/contract.md, Commands). Generated from gateway/commands/registry.py by "
    "`python -m gateway.commands.schema`: do not edit by hand. The envelope is "
    "gateway/core/auth.py's (build_command, sign_command): sig is the base64 Ed25519 signature "
    "of the issuer's key over gateway.core.auth.canonical of every other key. The args of each "
    "command are its model's in the registry. What a schema cannot check is the gateway's: the "
    "signature, the freshness window, replay, that the issuer's key may send this command, "
    f"to_seq - from_seq < {MAX_REPLAY_SPAN}, and that a device, door or alarm exists. A command "
    "that breaks this schema is answered on results with status rejected (malformed) or failed "
    "(bad_args). Write integers without a fraction: JSON Schema takes 5.0 as an integer, the "
    "gateway does not."
)


_ENVELOPE_REQUIRED = [
    "schema",
    "id",
    "school",
    "gateway",
    "command",
    "args",
    "issued_at",
    "issuer",
    "sig",
]


def _envelope_defs() -> dict[str, Any]:
    return {
        "ident": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
        "timestamp": {
            "type": "string",
            "description": "ISO 8601 with a UTC offset (Z or +hh:mm); fractions of a second "
            "optional",
            "pattern": TIMESTAMP_PATTERN,
        },
    }


def _envelope(names: list[str]) -> dict[str, Any]:
    return {
        "schema": {"const": 1, "description": "payload version"},
        "id": {
            "type": "string",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            "description": "a new UUID per command, lower-case and hyphenated; a command id is "
            "accepted once",
        },
        "school": {"$ref": "#/$defs/ident", "description": "the gateway's site.school_id"},
        "gateway": {"$ref": "#/$defs/ident", "description": "the gateway's site.gateway_id"},
        "command": {"enum": names},
        "args": {"type": "object", "description": "the command's arguments (below)"},
        "issued_at": {
            "$ref": "#/$defs/timestamp",
            "description": "when the receiver issued it; accepted within -40 s/+20 s of the "
            "gateway's clock",
        },
        "issuer": {
            "$ref": "#/$defs/ident",
            "description": "the id of the receiver's key in the gateway's security.trusted_keys",
        },
        "sig": {
            "type": "string",
            "pattern": "^[A-Za-z0-9+/]{85}[AQgw]==$",
            "description": "base64 (canonical, padded) Ed25519 signature over "
            "gateway.core.auth.canonical of every key but sig",
        },
    }


def _plain(schema: Any) -> Any:
    """Pydantic's JSON Schema without what only restates the model: titles, and defaults (the
    descriptions say them; a default of "" stands for "not given" and is never valid sent)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k not in ("title", "default")}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def args_schema(model: type[Args]) -> dict[str, Any]:
    schema = _plain(model.model_json_schema())
    schema.setdefault("required", [])
    if not schema["required"]:
        del schema["required"]
    return dict(schema)


def _condition(names: list[str]) -> dict[str, Any]:
    match = {"const": names[0]} if len(names) == 1 else {"enum": names}
    return {"required": ["command"], "properties": {"command": match}}


def command_schema() -> dict[str, Any]:
    """The JSON Schema of a command message, from the registry."""
    if set(REMOTE) != auth.COMMANDS:  # the registry refuses to load otherwise; say it here too
        raise ValueError("the registry does not cover gateway.core.auth.COMMANDS")
    by_model: dict[type[Args], list[RemoteCommand[Any]]] = {}
    for spec in REMOTE.values():
        by_model.setdefault(spec.args, []).append(spec)
    defs = _envelope_defs()
    conditions = []
    for model, specs in by_model.items():
        defs[model.schema_name] = args_schema(model)
        conditions.append(
            {
                "if": _condition([spec.name for spec in specs]),
                "then": {"properties": {"args": {"$ref": f"#/$defs/{model.schema_name}"}}},
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:schoolgate:contract:v1:command",
        "title": "schoolgate command, contract version 1",
        "description": _DESCRIPTION,
        "type": "object",
        "required": list(_ENVELOPE_REQUIRED),
        "additionalProperties": False,
        "properties": _envelope(list(REMOTE)),
        "allOf": conditions,
        "$defs": defs,
    }


def render() -> str:
    """The file's text: two-space JSON, keys in the order written, a final newline."""
    return json.dumps(command_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
