"""Field types shared by the configuration schema, for the values pydantic's strict mode alone
does not make safe: file paths (TOML gives strings; strict mode takes only `Path` objects),
whole-number choices (a `Literal[1, 2]` still takes `true` and `1.0`), serial device paths,
broker host names and environment variable names.

Owns only these types and the rule each enforces. Strictness itself (booleans are not numbers,
strings are not numbers or booleans, numbers are finite) is set once on the base model in
`edge_config.models`; the filesystem checks (can the file be read, the folder written) are in
`edge_config.checks`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticKnownError

MAX_PATH_BYTES = 4095
"""PATH_MAX (4096 on Linux) less the terminating NUL."""


def _path(value: object) -> object:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("expected a file path (a string)")  # noqa: TRY004 - pydantic wants ValueError
    if not value:
        raise ValueError("a file path must not be empty")
    if "\x00" in value:
        raise ValueError("a file path must not contain a NUL character")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ValueError(f"a file path is at most {MAX_PATH_BYTES} bytes")
    return Path(value)


ConfigPath = Annotated[Path, BeforeValidator(_path)]
"""A file path: a non-empty string without NUL, at most PATH_MAX bytes."""


DEVICE_PATH_PATTERN = r"^[^\x00-\x1f]{1,4095}$"
"""A serial device path or pyserial URL: no control characters (a NUL would fail the open)."""
_DEVICE_PATH = re.compile(DEVICE_PATH_PATTERN.removeprefix("^").removesuffix("$"))


def _device_path(value: str) -> str:
    # Python's re, not pydantic's `pattern=`: pydantic-core's engine unrolls the {1,4095} into
    # an automaton of about 8 MB that the daemon would keep for its whole life. Same rule (a
    # full match, so no `$`-before-newline), same error type, message and context.
    if _DEVICE_PATH.fullmatch(value) is None:
        raise PydanticKnownError("string_pattern_mismatch", {"pattern": DEVICE_PATH_PATTERN})
    return value


DevicePath = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": DEVICE_PATH_PATTERN}),
    AfterValidator(_device_path),
]
"""A serial device path or pyserial URL, 1 to 4095 characters, none of them a control character."""


def _exact_int(value: object) -> object:
    # `Literal[1, 2]` compares by equality, so `true` and `1.0` would pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("Input should be a valid integer")  # noqa: TRY004 - pydantic wants ValueError
    return value


WholeNumber = BeforeValidator(_exact_int)
"""Put on an integer `Literal` (`Annotated[Literal[1, 2], WholeNumber]`) so only integers match."""


MAX_PORT = 65535
MAX_HOST_CHARS = 253


def _host(value: object) -> object:
    if isinstance(value, str) and any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("a host name or address has no spaces or control characters")
    return value


Host = Annotated[str, Field(min_length=1, max_length=MAX_HOST_CHARS), BeforeValidator(_host)]
"""A broker or Modbus host: a DNS name (at most 253 characters) or an IP address."""


def _node(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("expected 'host:port' (a string)")  # noqa: TRY004 - pydantic wants ValueError
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address, written [::1]:1883
    good_port = port.isascii() and port.isdigit() and 1 <= int(port) <= MAX_PORT
    if not sep or not host or not good_port:
        raise ValueError(f"{value!r} is not 'host:port' (port 1-65535)")
    if len(host) > MAX_HOST_CHARS or any(ch.isspace() or not ch.isprintable() for ch in host):
        raise ValueError(f"{value!r}: the host has spaces or control characters, or is too long")
    return value


NodeAddress = Annotated[str, BeforeValidator(_node)]
"""One broker node of a cluster, 'host:port' ('[v6 address]:port' for IPv6)."""


def split_node(node: str) -> tuple[str, int]:
    """('host', port) of a validated `NodeAddress`."""
    host, _, port = node.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
"""An environment variable name (letters, digits and _, not starting with a digit)."""
