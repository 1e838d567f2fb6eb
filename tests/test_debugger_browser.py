"""The mapping debugger in a real browser: Debian's headless Chromium driven by Playwright.

Type a FHIR mapping error, see it marked at its line (problems pane, gutter, line
mark; clicking the problem puts the cursor there), fix it, see the Observation
appear. The screenshot lands in the test's temporary folder (and, when
``IOMT_SCREENSHOT_DIR`` is set, there too: that is how docs/debugger.png is made).
Chromium comes from ``scripts/setup-chromium`` (apt); Playwright's own browser
download is never used.
"""
import os
import pathlib
import shutil

import pytest

from ci_fixtures import need
from pipelines.debugger import server as debugger_server
from pipelines.debugger.examples import examples

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    need(sync_playwright is not None, "Playwright for Python is not installed (pip install playwright)")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} not found (scripts/setup-chromium installs it)")
    srv = debugger_server.make_server(port=0)
    debugger_server.serve_in_thread(srv)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = browser.new_page(viewport={"width": 1440, "height": 900})
            pg.set_default_timeout(15000)
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.goto(srv.url)
            pg.wait_for_selector("body[data-state=done]")
            yield pg
            assert errors == []  # no script error, no CSP violation, no failed load
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()


def _runs(page) -> int:
    return int(page.get_attribute("body", "data-runs") or 0)


def _wait_for_run_after(page, before: int) -> None:
    """Until a run newer than ``before`` is shown (polled: the page's CSP forbids eval)."""
    for _ in range(300):
        if _runs(page) > before and page.get_attribute("body", "data-state") == "done":
            return
        page.wait_for_timeout(50)
    raise AssertionError("the page did not show a new run")


def _cursor_line(page, selector: str) -> int:
    return page.eval_on_selector(
        selector, "t => t.value.slice(0, t.selectionStart).split('\\n').length")


@pytest.mark.timeout(180)  # ~8 s idle, with Chromium's start
def test_type_an_error_see_it_at_its_line_fix_it_see_the_observation(page, tmp_path):
    heart = next(e for e in examples() if e["id"] == "heartrate")
    before = _runs(page)
    page.select_option("#example", "heartrate")
    _wait_for_run_after(page, before)
    assert page.locator("#observations .card.observation").count() == 1

    fhir = page.locator('textarea[data-file="fhir"]')
    text = heart["fhirMapping"]
    at = text.index('"periodInterval"') + len('"periodInterval')
    line = text[:at].count("\n") + 1
    # put the cursor inside the key and type one letter: "periodIntervall" is not a member
    fhir.click()
    fhir.evaluate(f"t => t.setSelectionRange({at}, {at})")
    before = _runs(page)
    page.keyboard.type("l")
    _wait_for_run_after(page, before)

    problem = page.locator(f'#problems li[data-file="fhir"][data-line="{line}"]')
    assert "periodIntervall" in problem.inner_text()
    assert page.locator("#problems li.error").count() == 1
    assert page.locator(f'#editor-fhir .gutter .ln.error[data-line="{line}"]').count() == 1
    assert page.locator(f'#editor-fhir .mark.error[data-line="{line}"]').count() == 1
    assert page.locator("#observations .card.observation").count() == 0
    assert "Fix the FHIR mapping" in page.inner_text("#observations")

    page.locator('textarea[data-file="messages"]').click()  # move away, then jump back
    problem.click()
    assert _cursor_line(page, 'textarea[data-file="fhir"]') == line
    assert page.evaluate("document.activeElement.dataset.file") == "fhir"
    page.screenshot(path=str(tmp_path / "debugger-error.png"))

    before = _runs(page)
    page.keyboard.press("End")
    fhir.evaluate(f"t => t.setSelectionRange({at + 1}, {at + 1})")
    page.keyboard.press("Backspace")
    _wait_for_run_after(page, before)
    page.wait_for_selector("#observations .card.observation")
    assert page.locator("#problems li.error").count() == 0
    assert page.locator("#editor-fhir .mark.error").count() == 0
    card = page.locator("#observations .card.observation").first
    assert "heartrate" in card.inner_text() and "count/min" in card.inner_text()
    assert page.locator("#measurements .card").count() == heart["messages"].count("\n")

    shot = tmp_path / "debugger.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    out = os.environ.get("IOMT_SCREENSHOT_DIR")
    if out:
        shutil.copy(shot, pathlib.Path(out) / "debugger.png")


@pytest.mark.timeout(60)
def test_a_device_use_table_splits_the_hour_between_wearers(page):
    """Type a device-use table: the example's hour of heart rate goes to two patients, handed
    over at 08:03, one Observation each; a bad row is a problem at its line of that editor."""
    before = _runs(page)
    page.select_option("#example", "heartrate")
    _wait_for_run_after(page, before)
    assert page.locator("#observations .card.observation").count() == 1
    table = page.locator('textarea[data-file="deviceUse"]')
    table.click()
    before = _runs(page)
    table.fill("device-000,patient-a,2026-01-05T08:00:00Z,2026-01-05T08:03:00Z\n"
               "device-000,patient-b,2026-01-05T08:03:00Z,\n"
               "device-000,,2026-01-05,\n")
    _wait_for_run_after(page, before)
    cards = page.locator("#observations .card.observation")
    assert cards.count() == 2
    assert "Patient/patient-a" in cards.nth(0).inner_text() and "Patient/patient-b" in cards.nth(1).inner_text()
    assert page.locator('#problems li[data-file="deviceUse"][data-line="3"]').count() == 1
    assert page.locator('#editor-deviceUse .gutter .ln.error[data-line="3"]').count() == 1
    before = _runs(page)
    table.fill("")
    _wait_for_run_after(page, before)
    assert page.locator("#observations .card.observation").count() == 1
