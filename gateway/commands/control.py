"""The local control socket: how `schoolgate reset` and `schoolgate alarms` reach the running
daemon. A Unix socket (mode 0660, so only root and the service's group), one JSON request per
line, one JSON answer per line. It never listens on the network. One op streams
(`watch`): its handler answers with a `Stream`, and the connection then carries one JSON line
per item until the client closes it or the daemon stops.

Owns the socket, the request format, the boundary around each request and the client helper.
Every connection is told who is asking (`Peer`: the kernel's SO_PEERCRED, not what the client
says); any bytes a client sends get an `{"ok": false, "error": ...}` answer or a closed
connection, never an exception out of the connection's task. What a request does, and who may
ask for it, is the caller's `handler` (gateway.commands.local_ops, declared in
gateway.commands.registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pwd
import socket
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)
_MAX_REQUEST = 64 * 1024
_MAX_REASON = 300
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlError(Exception):
    """The daemon could not be reached or refused the request."""


class RequestError(Exception):
    """A handler's way of answering `{"ok": false, "error": ...}`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a connection, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        """The user name of `uid`, or the number when the user database has none."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def fields(self) -> dict[str, object]:
        """For the log: who asked."""
        return {"uid": self.uid, "user": self.user, "pid": self.pid}


@dataclasses.dataclass(frozen=True, slots=True)
class Stream:
    """An answer that goes on: `first` is the answer line's fields, then each item of `items` is
    one more line, until the client closes the connection or the daemon stops."""

    first: dict[str, Any]
    items: AsyncGenerator[dict[str, Any], None]


class _ClientGone(Exception):
    """The client of a stream closed its end."""


Handler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any] | Stream]]


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    """The peer's credentials (Linux SO_PEERCRED). OSError when the socket has none."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        raise OSError("the connection has no socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)


def _refusal(reason: str) -> dict[str, Any]:
    if len(reason) > _MAX_REASON:
        reason = reason[:_MAX_REASON] + "..."
    return {"ok": False, "error": reason}


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line -> a JSON object that can be logged, stored and echoed (valid UTF-8 all
    through, nesting the encoder can walk). RequestError with the reason otherwise."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("a request is UTF-8 text") from None
    if not text.strip():
        raise RequestError("empty request")
    try:
        request = json.loads(text)
    except RecursionError:
        raise RequestError("request nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        raise RequestError(f"a request is one JSON object per line: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError("a request is a JSON object")
    try:
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("request has invalid Unicode (a lone surrogate)") from None
    except (RecursionError, ValueError):
        raise RequestError("request nested too deeply") from None
    return request


def encode_answer(answer: dict[str, Any]) -> bytes:
    """One answer line; ASCII JSON (a lone surrogate becomes an escape), whatever it holds."""
    try:
        return json.dumps(answer).encode("ascii") + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("control_answer_unencodable", error=repr(exc))
        return json.dumps(_refusal("the answer could not be encoded")).encode("ascii") + b"\n"


async def answer_request(line: bytes, peer: Peer, handler: Handler) -> dict[str, Any] | Stream:
    """The boundary: whatever the line holds and whatever the handler raises, an answer."""
    op: object = None
    try:
        request = parse_request(line)
        op = request.get("op")
        result = await handler(request, peer)
    except (RequestError, ValueError) as exc:
        answer = _refusal(str(exc))
    except Exception as exc:  # the boundary: no request may end the connection's task
        log.exception("control_request_failed", op=_loggable(op), **peer.fields())
        answer = _refusal(f"internal error ({type(exc).__name__}), logged by the gateway")
    else:
        if isinstance(result, Stream):
            return Stream({"ok": True, **result.first}, result.items)
        return {"ok": True, **result}
    log.warning("control_refused", op=_loggable(op), reason=answer["error"], **peer.fields())
    return answer


def _loggable(op: object) -> object:
    return op if isinstance(op, str) and len(op) <= 64 else None


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
            peer = peer_of(writer)
            answer: dict[str, Any] | Stream
            try:
                # A client that connects and says nothing must not hold a connection (or, on
                # Python 3.12+, the shutdown, which waits for every connection) for ever.
                async with asyncio.timeout(read_timeout_s):
                    line = await reader.readline()
            except ValueError:  # over the stream's limit: refused, then the connection closed
                answer = _refusal(f"request longer than {_MAX_REQUEST} bytes")
                log.warning("control_refused", op=None, reason=answer["error"], **peer.fields())
            else:
                answer = await answer_request(line, peer, handler)
            if isinstance(answer, Stream):
                writer.write(encode_answer(answer.first))
                await writer.drain()
                await _pump(answer.items, reader, writer)
            else:
                writer.write(encode_answer(answer))
                await writer.drain()
        except (OSError, TimeoutError):  # the client went away, or never said anything
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


async def _pump(
    items: AsyncGenerator[dict[str, Any], None],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Write each item as a line until the client closes its end (EOF, or a reset while
    writing) or the daemon stops (cancelled). The items' generator is closed either way."""

    async def until_closed() -> None:
        while await reader.read(1024):  # a watcher says nothing more; anything it does is ignored
            pass
        raise _ClientGone

    try:
        async with contextlib.aclosing(items), asyncio.TaskGroup() as tg:
            tg.create_task(until_closed(), name="control:stream-eof")
            async for item in items:
                writer.write(encode_answer(item))
                await writer.drain()
            raise _ClientGone  # the items ended: nothing more to send
    except* (_ClientGone, OSError):
        pass


async def request(path: Path, body: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """One request, its one answer (ControlError when refused or unanswered)."""
    answers = stream(path, body, timeout_s=timeout_s)
    try:
        answer = await anext(answers)
    finally:
        await answers.aclose()
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "refused")))
    return answer


async def stream(
    path: Path, body: dict[str, Any], *, timeout_s: float = 5.0
) -> AsyncGenerator[dict[str, Any], None]:
    """The answer line first; for a streaming op (`watch`) then each line the daemon sends,
    until it closes the connection (ControlError then: the daemon stopped). Closing the
    generator closes the connection, which ends the daemon's side too."""
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
            first = _answer(await reader.readline())
        yield first
        while line := await reader.readline():
            yield _answer(line)
        raise ControlError("the gateway closed the stream (stopped or restarted)")
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"no answer from the gateway at {path}: {exc}") from exc
    finally:
        writer.close()


def _answer(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line) if line else {"ok": False, "error": "empty answer"}
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise ControlError("malformed answer from the gateway")
    if not answer.get("ok", True):
        raise ControlError(str(answer.get("error", "refused")))
    return answer
