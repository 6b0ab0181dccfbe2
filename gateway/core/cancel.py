"""A guard for Python 3.11's asyncio.wait_for, which libraries we use (pymodbus, aiomqtt) wait
with: when a cancel arrives in the same loop turn as the awaited result, 3.11's wait_for returns
the result and the cancel is dropped (fixed in 3.12). A loop calling such a library would then
run on through a shutdown. The task still counts the cancel request, so it can be honoured.

Only for calls made from tasks that host no TaskGroup: Python 3.11's TaskGroup can leave its
host task counting a cancel after a child failed.
"""

from __future__ import annotations

import asyncio


def honour_dropped_cancel() -> None:
    """Raise CancelledError if the current task was asked to cancel (and the cancel was lost)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
