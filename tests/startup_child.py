"""Child process for test_startup_imports.py: does what `schoolgate run -c CONFIG` does (load the
config, build the gateway, run it until its control socket answers), hands it one signed-looking
command, stops it, and writes what was imported (and how many objects start-up froze) to JSON.

    python tests/startup_child.py CONFIG OUT_JSON
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from gateway import cli, control_cli, logsetup  # noqa: F401 - what `python -m gateway` loads before `run`
from gateway.commands import control  # what `python -m gateway` loads before `run`

READY_TIMEOUT_S = 15.0


def command_bytes(school: str, gateway: str) -> bytes:
    """An acknowledge from `police-console` with a well-formed but wrong signature."""
    return json.dumps(
        {
            "schema": 1,
            "id": str(uuid.uuid4()),
            "gateway": gateway,
            "school": school,
            "command": "acknowledge",
            "args": {"alarm_id": "a-1", "by": "Officer Li"},
            "issued_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "issuer": "police-console",
            "sig": base64.b64encode(bytes(64)).decode("ascii"),
        }
    ).encode()


async def no_replay(from_seq: int, to_seq: int) -> list[int]:
    return []


async def main(config_path: Path, out: Path) -> None:
    config = control_cli.load_or_exit(config_path)
    logsetup.configure(fmt="json", level="warning")
    from gateway.app import Gateway  # noqa: PLC0415 - as cli.cmd_run does

    gateway = Gateway(config, config_dir=config_path.parent)
    running = asyncio.create_task(gateway.run(), name="gateway")
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:  # the socket is served once the store is open and the latches restored
            try:
                status = await control.request(config.control_socket, {"op": "status"})
                break
            except control.ControlError:
                await asyncio.sleep(0.05)
    if gateway.guard_source is not None:  # the page's task has started (and imported aiohttp)
        async with asyncio.timeout(READY_TIMEOUT_S):
            await gateway.guard_page_ready.wait()
    imported_when_running = sorted(sys.modules)
    frozen = gc.get_freeze_count()
    result = await gateway.commands.handle(
        command_bytes(config.site.school_id, config.site.gateway_id),
        destination="police",
        replay=no_replay,
    )
    gateway.stop_requested.set()
    await running
    out.write_text(
        json.dumps(
            {
                "running": imported_when_running,
                "after_command": sorted(sys.modules),
                "status_keys": sorted(status),
                "frozen": frozen,
                "status": result.status,
                "reason": result.reason,
                "detail": result.detail,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
