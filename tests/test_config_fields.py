"""The schema's shared field types (edge_config/fields.py) that stand in for a pydantic
constraint: each must accept and refuse exactly what the constraint did, with the same error."""

from __future__ import annotations

from typing import Annotated, Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from edge_config.fields import DEVICE_PATH_PATTERN, DevicePath

STRICT = ConfigDict(strict=True)
NEW = TypeAdapter(DevicePath, config=STRICT)
OLD = TypeAdapter(Annotated[str, Field(min_length=1, pattern=DEVICE_PATH_PATTERN)], config=STRICT)
"""The serial port's field as it was: pydantic's own `pattern=` (about 8 MB of regex automaton
in pydantic-core), kept here as the reference."""


def outcome(adapter: TypeAdapter[str], value: Any) -> Any:
    try:
        return ("ok", adapter.validate_python(value))
    except ValidationError as exc:
        return ("error", exc.errors(include_url=False))


EDGES = [
    "",
    "/dev/ttyUSB0",
    "rfc2217://10.0.0.5:4001",
    "a\n",  # `$` must not match before a final newline
    "/dev/tty\x00S0",
    "\x1f",
    "\x7f",
    "\ud800",  # a lone surrogate: pydantic-core cannot read it as UTF-8
    "a" * 4095,
    "a" * 4096,
    "串口" * 2047 + "口",
    5,
    b"/dev/ttyS0",
    None,
]


def test_the_device_path_refuses_and_accepts_as_the_pattern_did_on_the_edges() -> None:
    for value in EDGES:
        assert outcome(NEW, value) == outcome(OLD, value), repr(value)[:40]


def long_path(length: int, at: int, odd: str) -> str:
    """Around the 4095-character limit, with one character (maybe a control one) somewhere."""
    chars = ["x"] * length
    if at < length:
        chars[at] = odd
    return "".join(chars)


@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x3F), max_size=40),
        st.builds(
            long_path, st.integers(4090, 4100), st.integers(0, 4100), st.sampled_from("a\né")
        ),
    )
)
def test_the_device_path_refuses_and_accepts_as_the_pattern_did(value: str) -> None:
    assert outcome(NEW, value) == outcome(OLD, value)


def test_a_bad_serial_port_in_a_config_names_the_key_and_the_rule() -> None:
    from edge_config.models import SerialLine  # noqa: PLC0415 - the model that uses the field

    try:
        SerialLine.model_validate({"type": "serial", "port": "/dev/tty\nS0"})
    except ValidationError as exc:
        (error,) = exc.errors(include_url=False)
    else:
        raise AssertionError("a port with a newline was accepted")
    assert error["loc"] == ("port",)
    assert error["type"] == "string_pattern_mismatch"
    assert error["ctx"] == {"pattern": DEVICE_PATH_PATTERN}


def patterns(schema: Any) -> list[str]:
    """Every `pattern` pydantic-core compiles for a core schema."""
    if isinstance(schema, dict):
        own = [schema["pattern"]] if schema.get("type") == "str" and "pattern" in schema else []
        return own + [p for value in schema.values() for p in patterns(value)]
    if isinstance(schema, list | tuple):
        return [p for value in schema for p in patterns(value)]
    return []


def test_no_pattern_of_the_schema_repeats_a_class_thousands_of_times() -> None:
    """pydantic-core's regex engine unrolls a bounded repetition: `[^\\x00-\\x1f]{1,4095}` cost
    the daemon about 8 MB for as long as it ran. A long bound belongs in Python (DevicePath)."""
    import re  # noqa: PLC0415

    from edge_config.models import GatewayConfig  # noqa: PLC0415

    found = patterns(GatewayConfig.__pydantic_core_schema__)
    assert any("{0,62}" in p for p in found)  # the check sees the schema's patterns (Ident)
    bounds = [int(b) for p in found for b in re.findall(r"\{\d*,(\d+)\}", p)]
    assert max(bounds) <= 255, sorted(bounds)[-3:]
