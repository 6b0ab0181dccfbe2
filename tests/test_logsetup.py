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


SITE_TIME_CHILD = textwrap.dedent(
    """
    from zoneinfo import ZoneInfo
    import structlog
    from gateway import logsetup

    logsetup.configure(fmt="json", level="info", tz=ZoneInfo("Asia/Shanghai"))
    structlog.get_logger("t").info("site_time")
    logsetup.configure(fmt="json", level="info", tz=ZoneInfo("America/Los_Angeles"))
    structlog.get_logger("t2").info("other_site")
    """
)


def test_log_timestamps_carry_the_site_offset() -> None:
    """Issue 13: log times were local without an offset while events use site time."""
    done = subprocess.run(
        [sys.executable, "-c", SITE_TIME_CHILD],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"TZ": "UTC", "PATH": ""},
    )
    stamps = [json.loads(line)["timestamp"] for line in done.stderr.splitlines()]
    assert stamps[0].endswith("+08:00"), stamps
    assert stamps[1][-6:] in ("-07:00", "-08:00"), stamps
