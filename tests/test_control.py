"""The control socket: one JSON request and answer per line, typed errors, 0660, the asking
process's credentials from the kernel, a boundary no request crosses, and a shutdown that no
client can hold up."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.commands import control


async def echo(request: dict[str, Any], peer: control.Peer) -> dict[str, Any]:
    if request.get("op") == "refuse":
        raise control.RequestError("refused on purpose")
    if request.get("op") == "crash":
        raise KeyError("a handler's bug")
    if request.get("op") == "unencodable":
        return {"value": object()}
    if request.get("op") == "peer":
        return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid, "user": peer.user}
    return {"echo": request}


async def raw_request(sock: Path, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10.0)
    finally:
        writer.close()


async def test_request_and_answer(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo):
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        assert await control.request(sock, {"op": "x"}) == {"ok": True, "echo": {"op": "x"}}
        with pytest.raises(control.ControlError, match="refused on purpose"):
            await control.request(sock, {"op": "refuse"})
    assert not sock.exists()


async def test_malformed_request_gets_an_error_answer(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo):
        for raw in (b"not json\n", b"[1, 2]\n"):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(raw)
            answer = await reader.readline()
            writer.close()
            assert b'"ok": false' in answer


async def test_the_kernel_says_who_is_asking(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo):
        answer = await control.request(sock, {"op": "peer", "by": "someone else"})
    assert answer["pid"] == os.getpid() and answer["uid"] == os.getuid()
    assert answer["gid"] == os.getgid() and answer["user"] == control.Peer(0, os.getuid(), 0).user


async def test_a_failing_handler_is_answered_and_the_socket_keeps_serving(tmp_path: Path) -> None:
    """A bug in what a request does (any exception) is an answer with the reason, logged; it
    left the connection's task before, unanswered."""
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo):
        with pytest.raises(control.ControlError, match=r"internal error \(KeyError\)"):
            await control.request(sock, {"op": "crash"})
        with pytest.raises(control.ControlError, match="could not be encoded"):
            await control.request(sock, {"op": "unencodable"})
        assert (await control.request(sock, {"op": "x"}))["ok"] is True


async def test_over_long_and_undecodable_requests_are_refused(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo):
        long = b'{"op": "' + b"x" * (70 * 1024) + b'"}\n'
        assert b"longer than 65536 bytes" in await raw_request(sock, long)
        assert b"UTF-8" in await raw_request(sock, b'{"op": "\xff"}\n')
        assert b"lone surrogate" in await raw_request(sock, b'{"op": "\\ud800"}\n')
        assert b"nested too deeply" in await raw_request(sock, b"[" * 60_000 + b"\n")
        assert b"empty request" in await raw_request(sock, b"\n")
        assert (await control.request(sock, {"op": "x"}))["ok"] is True


async def test_no_daemon_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="not running"):
        await control.request(tmp_path / "absent.sock", {"op": "status"})


async def test_a_silent_client_is_dropped(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"
    async with control.serve(sock, echo, read_timeout_s=0.2):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert await asyncio.wait_for(reader.read(), 10.0) == b""  # dropped after its timeout
        writer.close()


async def test_a_request_in_progress_cannot_hold_the_shutdown(tmp_path: Path) -> None:
    """Python 3.12+ waits in Server.wait_closed for every connection's handler: a request
    stuck in progress (a device command on a dead line) held the gateway's shutdown."""
    sock = tmp_path / "c.sock"
    entered, never = asyncio.Event(), asyncio.Event()

    async def stuck(request: dict[str, Any], peer: control.Peer) -> dict[str, Any]:
        entered.set()
        await never.wait()
        return {}

    async with asyncio.timeout(10):  # far below the handler's and the client's 60 s
        async with control.serve(sock, stuck, read_timeout_s=60):
            client = asyncio.create_task(control.request(sock, {"op": "x"}, timeout_s=60))
            await entered.wait()
        with pytest.raises(control.ControlError):
            await client
