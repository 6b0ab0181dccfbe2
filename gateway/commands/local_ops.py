"""The control socket's dispatch: one request from a peer, to the op the registry names.

Owns the order every request goes through: the asker's right for the op
(gateway.commands.access), the op's declared request model (gateway.commands.registry), then its
handler (gateway.commands.local) against the running gateway (`ControlTarget`). A bad field is a
`RequestError` with its sentence; gateway.commands.control turns any refusal or error into an
`{"ok": false}` answer. It does not parse lines or hold the socket (gateway.commands.control).
"""

from __future__ import annotations

from typing import Any

from gateway.commands.access import ControlAccess
from gateway.commands.args import BadArgs
from gateway.commands.control import Peer, RequestError, Stream
from gateway.commands.local import Answer, ControlTarget
from gateway.commands.registry import LOCAL


class LocalOps:
    """`handle` is the control socket's handler (`control.serve(path, ops.handle)`)."""

    def __init__(self, target: ControlTarget, access: ControlAccess) -> None:
        self._target = target
        self._access = access

    async def handle(self, request: dict[str, Any], peer: Peer) -> Answer | Stream:
        op = request.get("op")
        self._access.check(peer, op)
        spec = LOCAL.get(op) if isinstance(op, str) else None
        if spec is None:
            raise RequestError(f"unknown op {op!r} ({', '.join(LOCAL)})")
        fields = {key: value for key, value in request.items() if key != "op"}
        try:
            return await spec.run(self._target, fields, peer)
        except BadArgs as exc:
            raise RequestError(str(exc)) from None
