"""SIGKILL at random moments, at least 50 times: after every restart no committed event is
missing, seqs stay unique and growing, and every event still has its delivery rows."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).parent / "crash_child.py"
KILLS = 50

pytestmark = [pytest.mark.long(18), pytest.mark.timeout(180)]


async def run_and_kill(db: Path, delay_s: float) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(db),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.stdout is not None
    committed: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.startswith(b"C "):
                committed.append(line[2:].strip().decode())

    reader = asyncio.create_task(read())
    await asyncio.sleep(delay_s)
    proc.kill()
    await proc.wait()
    await reader  # everything printed before the kill was committed before it was printed
    return committed


async def test_no_committed_event_is_lost_across_50_sigkills(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    rng = random.Random(20261124)
    committed: list[str] = []
    for _ in range(KILLS):
        # From 0.05 s (often still starting) to 0.6 s (well into the stream).
        committed += await run_and_kill(db, rng.uniform(0.05, 0.6))
    assert len(committed) > 500, "the child never got going; the test proves nothing"
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT id, seq FROM events").fetchall())
        orphans = conn.execute(
            "SELECT COUNT(*) FROM events e WHERE NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.destination = 'bureau')"
        ).fetchone()
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    conn.close()
    missing = [i for i in committed if i not in stored]
    assert missing == []
    seqs = [stored[i] for i in committed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert orphans == (0,)
    assert integrity == "ok"
