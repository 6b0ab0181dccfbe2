"""docs/schemas/command.schema.json is generated from the command registry: the file in the tree
is exactly what `python -m gateway.commands.schema` writes, and what the registry's models take is
what the schema takes (the args tables of tests/test_contract_schemas.py check both sides)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commands import schema
from gateway.commands.args import AlarmArgs, BadArgs, UnlockArgs, parse_args
from gateway.commands.registry import LOCAL, REMOTE
from gateway.core import auth

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "schemas" / "command.schema.json"
REGENERATE = "python -m gateway.commands.schema > docs/schemas/command.schema.json"


def test_the_schema_file_is_what_the_registry_generates() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema.render(), (
        f"docs/schemas/command.schema.json differs from the registry: run `{REGENERATE}`"
    )


def test_the_generator_runs_as_a_module_and_prints_the_file() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.commands.schema"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    )
    assert done.stdout == schema.render()


def test_a_changed_model_changes_the_generated_schema() -> None:
    # The comparison above is only worth something if the output follows the models.
    unlock = json.loads(schema.render())["$defs"]["unlock_args"]
    assert unlock["properties"]["door"] == {
        "description": UnlockArgs.model_fields["door"].description,
        "maximum": 255,
        "minimum": 1,
        "type": "integer",
    }
    assert unlock["required"] == ["device", "door"] and unlock["additionalProperties"] is False


def test_every_command_name_has_one_declaration() -> None:
    assert set(REMOTE) == auth.COMMANDS
    assert json.loads(schema.render())["properties"]["command"]["enum"] == list(REMOTE)
    assert set(LOCAL) == {
        "alarms",
        "status",
        "reset",
        "command",
        "test.start",
        "test.stop",
        "test.report",
        "watch",
        "ledger_close",
        "drill",
    }


@pytest.mark.parametrize(
    ("raw", "sentence"),
    [
        ({"alarm_id": "a"}, "by must be a non-empty string"),
        ({"alarm_id": "a", "by": "b", "note": 1}, "unknown argument(s) ['note']; takes"),
        ({"alarm_id": 5, "by": ""}, "alarm_id must be a non-empty string"),
    ],
)
def test_bad_args_are_one_sentence_naming_the_first_problem(
    raw: dict[str, object], sentence: str
) -> None:
    with pytest.raises(BadArgs) as caught:
        parse_args(AlarmArgs, raw)
    assert str(caught.value).startswith(sentence)
