"""The Evaluation page in Debian's Chromium at 1280×800: each of its three views drawn with no
number, label, title or chip cut and no glyph missing, and a top loss opening on Activations."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser import assert_no_exception, screenshot, settle, wait_for_app
from tests.test_browser_layout import TIMEOUT_MS, patient_page, problems

pytestmark = pytest.mark.browser
VIEW = "/Evaluation?model=lenet5-mnist&dataset=mnist"
VIEWS = {  # each view with a text its finished run shows
    "Curves": "1 = every image of the class ranked above every other",
    "Calibration": "T was fitted on",
    "Top losses": "Confidence of right and wrong answers",
}


def test_every_view_draws_whole_and_a_top_loss_opens(app_url: str) -> None:
    found: dict[str, list[str]] = {}
    with patient_page((1280, 800)) as page:
        for view, text in VIEWS.items():
            page.goto(f"{app_url}{VIEW}&view={view.replace(' ', '+')}")
            wait_for_app(page, text, TIMEOUT_MS)
            settle(page)
            assert_no_exception(page)
            if problems(page):
                found[view] = problems(page, settle_s=0)
            screenshot(page, f"evaluation_{view.replace(' ', '_').lower()}")
        assert not found, found

        # the Top losses view is open: its first image's button opens it on Activations
        first = page.locator('[class*="st-key-ev_open_"]').first
        index = int(re.search(r"#(\d+)", first.inner_text())[1])
        first.get_by_role("button").click()
        wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        page.wait_for_url(re.compile(rf"/Activations\?(.*&)?image={index}(&|$)"))
        field = page.locator('[data-testid="stNumberInputField"]').first
        expect(field).to_have_value(str(index), timeout=TIMEOUT_MS)
        assert_no_exception(page)
