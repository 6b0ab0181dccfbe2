"""The control socket knows who is asking: the real gateway's handler behind a real Unix socket,
asked by real processes of other users (the tests run as root; a child process setuid()s to
`nobody`, uid 65534, whose primary group is `nogroup`). Reading is open, resets need
`reset_group`, device commands the narrower `device_group`; root and the daemon's user may do
everything; each reset records the uid and user name the kernel reported next to the `--by` name
the client chose; each refusal is answered with its reason and logged."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import PanicPress
from edge_config.models import GatewayConfig
from gateway.app import Gateway
from gateway.commands import control
from gateway.commands.access import ControlAccess, Refused, member_of
from gateway.core import contract
from simulators.dido import DiDoModule, serve_tcp

NOBODY = 65534
NOGROUP = 65534
# The child is the system interpreter (the venv's may sit under a directory nobody cannot
# enter) speaking the socket's protocol by hand: one line out, one line back.
CHILD = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
answer = b""
while not answer.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
sys.stdout.write(answer.decode())
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="asking as another user needs root to setuid() the child"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def config(workdir: Path, modbus_port: int, **control_section: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "site": {"school_id": "school-7", "gateway_id": "gate-east"},
            "store": {"path": str(workdir / "outbox.db")},
            "control": {"socket_path": str(workdir / "control.sock"), **control_section},
            # Never connected: the gateway is not run, only its control handler is served.
            "destinations": {"police": {"host": "127.0.0.1", "port": 1, "client_id": "gw"}},
            "lines": {"io": {"type": "modbus_tcp", "host": "127.0.0.1", "port": modbus_port}},
            "devices": {
                "box": {
                    "kind": "alarm_box",
                    "line": "io",
                    "lamp_coil": 0,
                    "buttons": [{"input": 0, "name": "desk"}],
                }
            },
        }
    )


@contextlib.asynccontextmanager
async def served(**control_section: str) -> AsyncIterator[tuple[Gateway, Path, DiDoModule]]:
    """The gateway's store open and its control socket served in a folder `nobody` can enter,
    the socket open to every user (the groups, not the file mode, are under test)."""
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-control-"))
    workdir.chmod(0o755)
    module = DiDoModule(unit_id=1)
    try:
        async with serve_tcp(module) as (_, port):
            gateway = Gateway(config(workdir, port, **control_section))
            sock = gateway.config.control_socket
            async with gateway.store, control.serve(sock, gateway.handle_control):
                sock.chmod(0o666)
                try:
                    yield gateway, sock, module
                finally:
                    for line in gateway.lines.values():
                        await line.close()
    finally:
        shutil.rmtree(workdir)


async def ask_as(uid: int, gid: int, sock: Path, body: dict[str, Any]) -> dict[str, Any]:
    """`body` sent by a child process running as uid:gid (no supplementary groups)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or os.path.realpath(sys.executable)
    child = await asyncio.create_subprocess_exec(
        python,
        "-c",
        CHILD,
        str(sock),
        json.dumps(body),
        user=uid,
        group=gid,
        extra_groups=[],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def latched(gateway: Gateway) -> str:
    await gateway.latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=now_ms()))
    return gateway.latches.open_alarms[-1].alarm_id


async def stored_resets(gateway: Gateway) -> list[dict[str, Any]]:
    rows = await gateway.store.queue.claim("police", 1000)
    events = [contract.decode_event(row.body) for row in rows]
    return [e for e in events if e["type"] == "alarm.reset"]


async def test_anyone_may_read_a_reset_records_the_kernels_uid_devices_need_the_group() -> None:
    """No groups configured: as before, whoever can open the socket reads and resets; device
    commands are for root and the service user only."""
    async with served() as (gateway, sock, _):
        alarm_id = await latched(gateway)
        status = await ask_as(NOBODY, NOGROUP, sock, {"op": "status"})
        assert status["ok"] is True and status["open_alarms"] == 1
        alarms = await ask_as(NOBODY, NOGROUP, sock, {"op": "alarms"})
        assert [a["alarm_id"] for a in alarms["alarms"]] == [alarm_id]

        with capture_logs() as logs:
            refused = await ask_as(
                NOBODY, NOGROUP, sock, {"op": "command", "device": "box", "name": "lamp"}
            )
        assert refused["ok"] is False
        assert "nobody (uid 65534) may not command devices" in refused["error"]
        assert "device_group is not set" in refused["error"]
        [logged] = [entry for entry in logs if entry["event"] == "control_refused"]
        assert (logged["uid"], logged["user"], logged["op"]) == (NOBODY, "nobody", "command")

        # The name the client gives is its own word; the uid is the kernel's.
        body = {"op": "reset", "alarm_id": alarm_id, "by": "principal wang"}
        assert (await ask_as(NOBODY, NOGROUP, sock, body)) == {"ok": True, "reset": alarm_id}
        [reset] = await stored_resets(gateway)
        assert reset["data"]["reset_by"] == "principal wang"
        assert (reset["data"]["reset_by_uid"], reset["data"]["reset_by_user"]) == (
            NOBODY,
            "nobody",
        )


async def test_reset_group_and_device_group_decide() -> None:
    """`nobody` is in `nogroup` (its primary group), not in `root`."""
    async with served(reset_group="root", device_group="nogroup") as (gateway, sock, module):
        alarm_id = await latched(gateway)
        with capture_logs() as logs:
            refused = await ask_as(NOBODY, NOGROUP, sock, {"op": "reset", "alarm_id": alarm_id})
        assert refused["ok"] is False
        error = refused["error"]
        assert "may not reset alarms or run the walk test: not in the group 'root'" in error
        assert [e["op"] for e in logs if e["event"] == "control_refused"] == ["reset"]
        assert [a.alarm_id for a in gateway.latches.open_alarms] == [alarm_id]  # still latched

        command = {"op": "command", "device": "box", "name": "lamp", "args": {"on": True}}
        answer = await ask_as(NOBODY, NOGROUP, sock, command)
        assert answer == {"ok": True, "device": "box", "result": {"lamp": True}}
        await module.wait_coil(0, True, timeout_s=5)

        # Root (this test process) may do everything, whatever the groups say.
        done = await control.request(sock, {"op": "reset", "alarm_id": alarm_id, "by": "li"})
        assert done["reset"] == alarm_id
        [reset] = await stored_resets(gateway)
        assert (reset["data"]["reset_by_uid"], reset["data"]["reset_by_user"]) == (0, "root")


async def test_a_group_missing_on_this_machine_refuses_with_the_reason() -> None:
    async with served(reset_group="no-such-group-here") as (gateway, sock, _):
        alarm_id = await latched(gateway)
        refused = await ask_as(NOBODY, NOGROUP, sock, {"op": "reset", "alarm_id": alarm_id})
        assert refused == {
            "ok": False,
            "error": "group 'no-such-group-here' of [control] does not exist on this machine",
        }


def test_the_daemons_own_user_may_do_everything() -> None:
    peer = control.Peer(pid=1, uid=NOBODY, gid=NOGROUP)
    ControlAccess(reset_group="root", device_group="root", daemon_uid=NOBODY).check(peer, "reset")
    ControlAccess(daemon_uid=NOBODY).check(peer, "command")
    with pytest.raises(Refused):
        ControlAccess(reset_group="root", daemon_uid=0).check(peer, "reset")


def test_supplementary_members_listed_in_the_group_file_belong() -> None:
    """A user listed in /etc/group's member list is a member although neither its primary
    group nor the asking process's gid is that group."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam(name)
                if user.pw_gid != group.gr_gid:
                    peer = control.Peer(pid=1, uid=user.pw_uid, gid=user.pw_gid)
                    assert member_of(peer, group.gr_name)
                    assert not member_of(control.Peer(1, NOBODY, NOGROUP), group.gr_name)
                    return
    pytest.skip("no group on this machine lists a supplementary member")
