"""The local control socket: how `schoolgate reset` and `schoolgate alarms` reach the running
daemon. A Unix socket (mode 0660, so only root and the service's group), one JSON request per
line, one JSON answer per line. It never listens on the network.

Owns the socket, the request format and the client helper; what a request does is the caller's
`handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
log = structlog.get_logger(__name__)
_MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    """The daemon could not be reached or refused the request."""


class RequestError(Exception):
    """A handler's way of answering `{"ok": false, "error": ...}`."""


def _remove_stale(path: Path) -> None:
    """Make room for the socket (a killed daemon leaves its socket file behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.asynccontextmanager
async def serve(
    path: Path, handler: Handler, *, read_timeout_s: float = 5.0
) -> AsyncIterator[None]:
    handlers: set[asyncio.Task[Any]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            # A client that connects and says nothing must not hold a connection (or, on
            # Python 3.12+, the shutdown, which waits for every connection) for ever.
            async with asyncio.timeout(read_timeout_s):
                line = await reader.readline()
            try:
                request = json.loads(line[:_MAX_REQUEST])
                if not isinstance(request, dict):
                    raise RequestError("a request is a JSON object")
                answer = {"ok": True, **await handler(request)}
            except (RequestError, ValueError) as exc:
                answer = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            handlers.discard(task)
            writer.close()

    _remove_stale(path)
    server = await asyncio.start_unix_server(on_client, path=str(path), limit=_MAX_REQUEST)
    os.chmod(path, 0o660)
    try:
        yield
    finally:
        server.close()
        # asyncio runs each connection's handler in a task of its own, outside our TaskGroup;
        # a shutdown ends them, or (Python 3.12+) wait_closed would wait for them.
        for handler_task in handlers:
            handler_task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        _remove_stale(path)


async def request(path: Path, body: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_REQUEST)
    except (OSError, TimeoutError) as exc:
        raise ControlError(
            f"the gateway is not running (no control socket at {path}): {exc}"
        ) from exc
    try:
        writer.write(json.dumps(body).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            line = await reader.readline()
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"no answer from the gateway at {path}: {exc}") from exc
    finally:
        writer.close()
    answer = json.loads(line) if line else {"ok": False, "error": "empty answer"}
    if not isinstance(answer, dict):
        raise ControlError("malformed answer from the gateway")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "refused")))
    return answer
