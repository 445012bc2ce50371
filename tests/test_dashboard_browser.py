"""The dashboard in a real browser: Playwright driving Debian's chromium against `heliograph serve`
filled with the demo's traffic (issue 10).

Screenshots of every page go to the test's tmp folder and to SHOTS (a fixed place to look at them).
Without chromium the test is skipped, unless CI is set: then it fails (`.ci/run` installs it).
"""

from __future__ import annotations

import re
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from heliograph.demo import _one_call

from .conftest import Gateway, start_gateway

SHOTS = Path(os.environ.get("HELIOGRAPH_SCREENSHOTS", "/tmp/dash-shots"))
XSS = '<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">'


def chromium_path() -> str:
    path = shutil.which("chromium")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("CI is set but Debian's chromium is missing: .ci/run installs it with apt")
        pytest.skip("chromium not installed (apt-get install chromium): the dashboard's browser test not run")
    return path


def send(gw: Gateway, call: tuple[str, dict[str, str], dict[str, Any]]) -> str:
    path, headers, body = call
    headers = headers | gw.auth
    httpx.post(gw.url + path, headers=headers, json=body, timeout=30)
    return headers["Helicone-Request-Id"]


@pytest.fixture(scope="module")
def filled(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = start_gateway(tmp_path_factory.mktemp("browser"), fake.url)
    rng = random.Random(7)
    run = uuid.uuid4().hex[:6]
    calls = [_one_call(rng, n, run) for n in range(80)]
    calls.append(("/openai/v1/chat/completions",
                  {"Helicone-Request-Id": str(uuid.uuid4()), "Authorization": "Bearer sk-test",
                   "Helicone-User-Id": "mallory", "Helicone-Property-Feature": "support-bot",
                   "Helicone-Property-Note": XSS},
                  {"model": "gpt-4o", "messages": [{"role": "user", "content": XSS}]}))
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda call: send(gw, call), calls))
    gw.record(ids[-1])
    gw.extra["ids"] = ids
    yield gw
    gw.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Any]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    SHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(page: Any, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        page.screenshot(path=str(folder / f"{name}-top.png"))        # what a person sees first
        for suffix in ("", "-top"):
            shutil.copy(folder / f"{name}{suffix}.png", SHOTS / f"{name}{suffix}.png")
    yield shoot


def test_a_person_uses_the_dashboard(filled: Gateway, shots: Any) -> None:
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    gw = filled
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            # A zone half an hour off UTC: chart times show in it, so round UTC hours read hh:30.
            context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light",
                                          timezone_id="Asia/Kolkata")
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            page.goto(gw.url + "/")
            expect(page).to_have_url(gw.url + "/login")
            shots(page, "01-login")
            page.fill("input[name=key]", gw.key)
            page.click("button[type=submit]")
            expect(page).to_have_url(gw.url + "/requests")
            expect(page.locator("tr[data-request-id]").first).to_be_visible()
            assert page.evaluate("window.__xss") is None, "a recorded value ran as script"
            assert page.locator("td.props .tag", has_text="<script>").count() >= 1   # shown as text
            shots(page, "02-requests")

            # filter by a property and a model, through the form
            page.fill("#f-prop", "feature=support-bot")
            page.fill("#f-model", "gpt-4o")
            page.click("form.filters button[type=submit]")
            page.wait_for_url(lambda url: "prop=feature%3Dsupport-bot" in url and "model=gpt-4o&" in url)
            assert "provider=" not in page.url and "sort=" not in page.url    # empty fields stay out of the URL
            rows = page.locator("tbody tr[data-request-id]")
            assert rows.count() >= 1
            for text in rows.locator("td:nth-child(3)").all_inner_texts():
                assert text.strip() == "gpt-4o"
            for text in rows.locator("td.props").all_inner_texts():
                assert "feature=support-bot" in text
            shots(page, "03-requests-filtered")

            # keyboard: / focuses the search, j selects the first row, Enter opens it
            page.keyboard.press("/")
            expect(page.locator("#f-q")).to_be_focused()
            page.keyboard.press("Escape")
            page.keyboard.press("j")
            first_id = page.locator("tr.selected").get_attribute("data-request-id")
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{gw.url}/requests/{first_id}")
            shots(page, "04-request-detail")

            # live tail: a request sent after the page opened appears without reload
            page.goto(gw.url + "/requests")
            expect(page.locator("[data-tail-toggle].on")).to_be_visible()
            page.wait_for_timeout(300)
            new_id = send(gw, ("/openai/v1/chat/completions",
                               {"Helicone-Request-Id": str(uuid.uuid4()), "Authorization": "Bearer sk-test",
                                "Helicone-Property-Feature": "live-tail"},
                               {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "live"}]}))
            expect(page.locator(f'tr[data-request-id="{new_id}"]')).to_be_visible(timeout=15_000)
            shots(page, "05-requests-live")

            for path, name in (("/analytics", "06-analytics"), ("/sessions", "07-sessions"),
                               ("/users", "08-users"), ("/keys", "09-keys")):
                page.goto(gw.url + path)
                shots(page, name)
            expect(page.locator("table[aria-label=Keys]")).to_be_visible()

            # a chart with data, and a session's tree with its waterfall
            page.goto(gw.url + "/analytics?range=24h")
            chart = page.locator("svg.chart-line[data-points]").first
            expect(chart).to_be_visible()
            assert int(chart.get_attribute("data-points") or 0) > 0
            expect(page.locator("[data-zone]")).to_have_text(re.compile(r"times in Asia/(Kolkata|Calcutta)"))
            axis = chart.locator("g.axis text[data-t]").all_text_contents()
            assert axis and all(label.endswith(":30") for label in axis), axis
            page.goto(gw.url + "/sessions?sort=requests")      # the largest: one of a single call has no tree
            page.locator("td a[href^='/sessions/']").first.click()
            shots(page, "07b-session-tree")
            expect(page.locator("tr.tree-node").first).to_be_visible()
            expect(page.locator("svg.waterfall").first).to_be_visible()
            shots(page, "07b-session-tree")

            # a phone, in dark mode
            phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                        storage_state=context.storage_state())
            mobile = phone.new_page()
            mobile.goto(gw.url + "/requests")
            expect(mobile.locator("tr[data-request-id]").first).to_be_visible()
            shots(mobile, "10-requests-phone-dark")
            phone.close()

            # log out
            page.goto(gw.url + "/requests")
            page.click("text=Log out")
            expect(page).to_have_url(gw.url + "/login")
            page.goto(gw.url + "/requests")
            page.wait_for_url(lambda url: url.startswith(gw.url + "/login"))
            csp = [e for e in errors if "Content Security Policy" in e]
            assert not csp, csp
        finally:
            browser.close()


def test_a_new_deployment_teaches_the_first_call_and_shows_it(fake, tmp_path: Path, shots: Any) -> None:  # type: ignore[no-untyped-def]
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    gw = start_gateway(tmp_path, fake.url)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(gw.url + "/login")
                page.fill("input[name=key]", gw.key)
                page.click("button[type=submit]")
                expect(page.locator("#snippet-openai")).to_contain_text(f'base_url="{gw.url}/openai/v1"')
                expect(page.locator("#snippet-anthropic")).to_contain_text(f'base_url="{gw.url}/anthropic"')
                shots(page, "00-requests-empty")
                page.wait_for_timeout(300)
                first = send(gw, ("/openai/v1/chat/completions",
                                  {"Helicone-Request-Id": str(uuid.uuid4()), "Authorization": "Bearer sk-test"},
                                  {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "first"}]}))
                expect(page.locator(f'tr[data-request-id="{first}"]')).to_be_visible(timeout=15_000)
                expect(page.locator("[data-empty-project]")).to_have_count(0)
            finally:
                browser.close()
    finally:
        gw.stop()
