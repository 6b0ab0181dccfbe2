"""Run by tests/test_doctor.py under `unshare -rm`: mounts a 600 KiB tmpfs, makes a store there
in WAL mode, fills the disk, and prints doctor's store steps as JSON."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.commissioning.report import Report
from gateway.commissioning.system import check_store


def main() -> None:
    mountpoint = Path(sys.argv[1])
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mountpoint)], check=True
    )
    store = mountpoint / "outbox.db"
    db = sqlite3.connect(store)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    # Held open, as the running daemon holds it: its -wal and -shm files stay.
    try:
        with (mountpoint / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
    except OSError:
        pass
    report = Report()
    asyncio.run(check_store(store, report, timeout_s=5.0))
    db.close()
    print(report.to_json())


if __name__ == "__main__":
    main()
