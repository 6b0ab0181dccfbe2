"""What the guard page costs the gateway: RSS and CPU of the gateway process, at rest (the demo
gate's devices polled, no presses), with the page off, on, and on with 5 headless chromium pages
connected, in one run on one machine, each for `--window` seconds (30 by default).

    .venv/bin/python bench/guard_cost.py [--window 30] [--json out.json]

Owns the three windows and their report; the gate is `simulators.gate`, the /proc readings
`bench/procstat.py`. It needs Debian's chromium and chromedriver (installed by `./run`). The load
average before and after is printed beside the figures: on a shared machine, say so with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from procstat import loadavg, machine, measuring  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

from simulators.broker import free_port  # noqa: E402
from simulators.demo import guard_section  # noqa: E402
from simulators.gate import simulated_gate  # noqa: E402

PAGES = 5


def _browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def _open_pages(driver: WebDriver, url: str, count: int) -> None:
    """`count` tabs on the page, each with its own event stream, each showing it is live."""
    for i in range(count):
        if i:
            driver.switch_to.new_window("tab")
        driver.get(url)
        # Live once its event stream delivered the first snapshot (the header says so).
        WebDriverWait(driver, 20, 0.05).until(
            lambda d: (
                d.execute_script('return document.getElementById("conn").className') == "conn live"
            )
        )


async def _window(pid: int, window_s: float) -> dict[str, float]:
    async with measuring(pid) as usage:
        await asyncio.sleep(window_s)  # the measurement window itself
    return {
        "cpu_percent": round(usage.cpu_percent, 2),
        "rss_mb": round(usage.rss_mb, 1),
        "peak_mb": round(usage.peak_mb, 1),
    }


async def _run(window_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "window_s": window_s}
    results["load_before"] = loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="guard-cost-"))
    try:
        async with simulated_gate(_sub(workdir, "off")) as gate:
            results["page_off"] = await _window(gate.gateway.pid, window_s)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        async with simulated_gate(_sub(workdir, "on"), extra_config=guard_section(port)) as gate:
            results["page_on"] = await _window(gate.gateway.pid, window_s)
            driver = await asyncio.to_thread(_browser)
            try:
                await asyncio.to_thread(_open_pages, driver, url, PAGES)
                results[f"page_on_{PAGES}_browsers"] = await _window(gate.gateway.pid, window_s)
            finally:
                await asyncio.to_thread(driver.quit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_after"] = loadavg()
    return results


def _sub(workdir: Path, name: str) -> Path:
    path = workdir / name
    path.mkdir()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(_run(args.window))
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
