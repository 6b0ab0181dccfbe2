"""The daemon's stderr is JSON lines only (issue 10): what paho and aiomqtt log through the
standard library, and the tracebacks of exceptions raised in their callbacks (which asyncio's
default exception handler logs), come out as structured events, not raw text."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, logging
    from gateway import logsetup

    logsetup.configure(fmt="json", level="info")
    logging.getLogger("aiomqtt").warning("There are %d pending publish calls.", 75)
    try:
        raise OSError("Connection refused")
    except OSError:
        logging.getLogger("paho.mqtt.client").exception("Caught exception in on_socket_open")

    def callback() -> None:
        raise RuntimeError("boom in a paho callback")

    async def main() -> None:
        asyncio.get_running_loop().call_soon(callback)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    """
)


def test_library_logs_and_callback_tracebacks_are_json_lines() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30, check=True
    )
    lines = done.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    by_logger = {e.get("logger"): e for e in events}
    assert by_logger["aiomqtt"]["event"] == "There are 75 pending publish calls."
    assert by_logger["aiomqtt"]["level"] == "warning"
    assert "Connection refused" in by_logger["paho.mqtt.client"]["exception"]
    assert "boom in a paho callback" in by_logger["asyncio"]["exception"]
