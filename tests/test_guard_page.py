"""The guard's page in a real headless chromium (Debian's, through selenium): live stages, the
lost state and recovery, the PIN and its lockout, and the layout at 800x480 and 1920x1080.

Set GUARD_SCREENSHOTS=1 to save docs/img/guard-{zh,en}-{800x480,1920x1080}.png."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from gateway.core.clock import FakeClock
from gateway.guard.memory_source import MemorySource
from gateway.guard.server import COALESCE_S, GuardServer
from gateway.guard.view import AlarmView
from guard_support import GUARD, NOW, PIN, gate_source, guard_config, headless_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="./run installs chromium"),
]

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


class Page:
    """The browser, driven from a thread so the server keeps serving on the test's loop."""

    def __init__(self, driver: WebDriver, port: int) -> None:
        self.driver = driver
        self.port = port

    async def open(self, *, lang: str = "zh", size: tuple[int, int] = (1280, 800)) -> None:
        def go() -> None:
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            )
            self.driver.get(f"http://127.0.0.1:{self.port}/?lang={lang}")

        await asyncio.to_thread(go)
        await self.until("document.getElementById('conn').classList.contains('live')")

    async def js(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def until(self, condition_js: str, timeout_s: float = 5.0) -> None:
        check: Callable[[WebDriver], Any] = lambda d: d.execute_script("return " + condition_js)  # noqa: E731
        await asyncio.to_thread(WebDriverWait(self.driver, timeout_s, 0.02).until, check)


@pytest.fixture
def pin_clock() -> FakeClock:
    """The server's clock (its PIN gate and its stream's coalescing); a test moves it on past a
    lockout, or past `COALESCE_S` so that a change goes out at once."""
    return FakeClock()


@pytest.fixture
async def served(
    browser: WebDriver, pin_clock: FakeClock
) -> AsyncIterator[tuple[MemorySource, GuardServer, Page]]:
    source = gate_source()
    server = GuardServer(source, guard_config(heartbeat_s=0.5), clock=pin_clock)
    await server.start()
    try:
        yield source, server, Page(browser, server.port)
    finally:
        await server.stop()


def _stage_is(alarm_id: str, stage: str) -> str:
    return f"document.querySelector('[data-alarm=\"{alarm_id}\"]')?.dataset.stage === '{stage}'"


async def test_an_alarm_shows_stored_then_at_police_then_acknowledged(
    served: tuple[MemorySource, GuardServer, Page], pin_clock: FakeClock
) -> None:
    source, _, page = served
    await page.open()
    pin_clock.advance(COALESCE_S)
    source.put_alarm(AlarmView("new", "box-west", "西门岗亭", NOW, "stored"))
    await page.until(_stage_is("new", "stored"), timeout_s=1.0)
    pin_clock.advance(COALESCE_S)
    source.update_alarm("new", stage="at_police")
    await page.until(_stage_is("new", "at_police"), timeout_s=1.0)
    pin_clock.advance(COALESCE_S)
    source.update_alarm("new", stage="acknowledged", acknowledged_by="张警官", acknowledged_at=NOW)
    await page.until(_stage_is("new", "acknowledged"), timeout_s=1.0)
    text = await page.js("return document.querySelector('[data-alarm=\"new\"]').textContent")
    assert "公安已确认" in text and "张警官" in text
    # the newest first
    assert await page.js("return document.querySelector('#alarm-list li').dataset.alarm") == "new"


_RULE_ROWS_JS = """
return [...document.querySelectorAll('#rule-list li')].map((li) => li.textContent);
"""


async def test_the_rules_today_show_with_the_catalogue_words_and_hide_without_rules(
    served: tuple[MemorySource, GuardServer, Page], pin_clock: FakeClock
) -> None:
    source, _, page = served
    await page.open()
    assert not await page.js("return document.getElementById('rules').hidden")
    rows = await page.js(_RULE_ROWS_JS)
    assert rows[0] == "开门时段: 早到校 07:00\u201308:10, 放学 16:30\u201317:30", rows
    assert "巡更 3 / 5 次" in rows[1] and "未达标" in rows[1], rows
    assert (
        "东门 2 号柱" in rows[2] and "违规未处理" in rows[2] and "bollards_up_at_arrival" in rows[2]
    )
    assert "东门闸机 · 设备离线" in rows[3] and "台账逾期" in rows[3] and "06:42 到期" in rows[3]
    await page.js("document.getElementById('lang').click()")
    rows = await page.js(_RULE_ROWS_JS)
    assert "Patrols 3 of 5" in rows[1] and "Device offline" in rows[3], rows
    pin_clock.advance(COALESCE_S)
    source.set_rules(None)  # no [rules]: no section
    await page.until("document.getElementById('rules').hidden")


async def test_a_stopped_server_shows_lost_and_the_page_recovers_by_itself(
    served: tuple[MemorySource, GuardServer, Page],
) -> None:
    source, server, page = served
    await page.open()
    await server.stop()
    await page.until("document.getElementById('conn').classList.contains('lost')")
    assert await page.js("return document.body.classList.contains('lost')")
    again = GuardServer(source, guard_config(port=server.port, heartbeat_s=0.5))
    await again.start()
    try:
        await page.until("document.getElementById('conn').classList.contains('live')")
        source.put_alarm(AlarmView("after", "box-east", "东门岗亭", NOW, "stored"))
        await page.until(_stage_is("after", "stored"))
    finally:
        await again.stop()


async def _try_reset(page: Page, alarm_id: str, pin: str) -> str:
    await page.js(
        'document.querySelector(`[data-alarm="${arguments[0]}"] button`).click();'
        "document.getElementById('pin').value = arguments[1];"
        "document.getElementById('dialog-error').dataset.error = '';"
        "document.getElementById('dialog-ok').click();",
        alarm_id,
        pin,
    )
    await page.until(
        "document.getElementById('dialog').hidden ||"
        " document.getElementById('dialog-error').dataset.error !== ''"
    )
    return str(await page.js("return document.getElementById('dialog-error').dataset.error"))


async def test_actions_need_the_pin_and_wrong_pins_are_limited(
    served: tuple[MemorySource, GuardServer, Page], browser: WebDriver, pin_clock: FakeClock
) -> None:
    source, _, page = served
    await page.open(lang="en")
    for attempt in range(4):
        assert await _try_reset(page, "a-1", "0000") == "pin_wrong", attempt
    shown = await page.js("return document.getElementById('dialog-error').textContent")
    assert "1 attempts left" in shown
    assert await _try_reset(page, "a-1", "0000") == "locked"
    assert await _try_reset(page, "a-1", PIN) == "locked"  # even the right PIN, while locked
    assert source.actions == []
    pin_clock.advance(301)
    await page.js("document.getElementById('dialog-cancel').click()")
    assert await _try_reset(page, "a-1", PIN) == ""
    await page.until("!document.querySelector('[data-alarm=\"a-1\"]')")
    assert [(a.action, a.target, a.by) for a in source.actions] == [("reset", "a-1", GUARD)]
    del browser


_LAYOUT_JS = """
const boxes = [...document.querySelectorAll(
  'header > *, #test-mode:not([hidden]), main > section:not([hidden])')];
const rows = [...document.querySelectorAll('.rows > li, .row > *')];
const problems = [];
const rect = (e) => e.getBoundingClientRect();
const meets = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5
                     && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
const parents = [...document.querySelectorAll('.rows, .row')];
const groups = [boxes, ...parents.map((p) => [...p.children])];
for (const group of groups) {
  for (let i = 0; i < group.length; i++) for (let j = i + 1; j < group.length; j++) {
    if (meets(rect(group[i]), rect(group[j]))) {
      problems.push('overlap: ' + group[i].outerHTML.slice(0, 60)
                    + ' / ' + group[j].outerHTML.slice(0, 60));
    }
  }
}
for (const e of [...boxes, ...rows]) {
  if (rect(e).right > innerWidth + 0.5 || rect(e).left < -0.5) {
    problems.push('outside: ' + e.outerHTML.slice(0, 80));
  }
}
if (document.documentElement.scrollWidth > innerWidth) problems.push('scrolls sideways');
return problems;
"""


@pytest.mark.parametrize("size", [(800, 480), (1920, 1080)])
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_the_page_fits_without_overlap(
    served: tuple[MemorySource, GuardServer, Page], size: tuple[int, int], lang: str
) -> None:
    _, _, page = served
    await page.open(lang=lang, size=size)
    assert await page.js("return document.documentElement.lang") == lang
    # The test-mode banner is shown (gate_source is in test mode), with the catalogue's words.
    banner = await page.js(
        "const b = document.getElementById('test-mode');"
        "return b.hidden || b.getBoundingClientRect().height === 0 ? null : b.textContent"
    )
    assert banner is not None and ("测试模式" if lang == "zh" else "Test mode until") in banner
    assert await page.js(_LAYOUT_JS) == []
    if os.environ.get("GUARD_SCREENSHOTS"):
        path = IMG / f"guard-{lang}-{size[0]}x{size[1]}.png"
        await asyncio.to_thread(page.driver.save_screenshot, str(path))
