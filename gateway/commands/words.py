"""The words of `schoolgate command DEVICE NAME k=v ...` (and `schoolgate keys sign-command`)
turned into what the gateway is sent.

Owns reading `key=value` words (`on=true` is True, `ms=500` is 500) and building the control
socket's `command` request, read by that op's model from the registry (gateway.commands.args
`DeviceRequest`), so the command line refuses what the daemon would. Light on purpose: the
command line imports it, so it imports pydantic and the argument models only, never a driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.commands.args import DeviceRequest, parse_args


def parse_value(text: str) -> object:
    """`on=true` -> True, `ms=500` -> 500, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "on", "yes"):
        return True
    if lowered in ("false", "off", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        return text


def key_values(words: Sequence[str]) -> dict[str, object]:
    """`["on=true", "ms=500"]` -> `{"on": True, "ms": 500}`; ValueError naming the word that is
    not `key=value`."""
    params: dict[str, object] = {}
    for item in words:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {item!r} is not key=value")
        params[key] = parse_value(value)
    return params


def device_request(device: str, name: str, words: Sequence[str], *, by: str) -> dict[str, Any]:
    """The `command` op's request for `schoolgate command DEVICE NAME k=v ...`, read by the op's
    own model; ValueError (`BadArgs` among them) saying what is wrong."""
    params = key_values(words)
    request = parse_args(DeviceRequest, {"device": device, "name": name, "args": params, "by": by})
    return {"op": "command", **request.model_dump()}
