"""The Attribution page in Debian's Chromium at 1280×800: the methods' maps, the sanity check
and the faithfulness table draw with no number, label or glyph cut, and the checks' progress
bars end in their results."""

from __future__ import annotations

import pytest

from tests.browser import assert_no_exception, chromium_page, screenshot, settle, wait_for_app
from tests.test_browser_layout import problems

pytestmark = pytest.mark.browser
TIMEOUT_MS = 240_000


def test_the_page_and_its_checks_draw_uncut_at_1280x800(app_url: str) -> None:
    with chromium_page(viewport=(1280, 800)) as page:
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{app_url}/Attribution?image=3")
        wait_for_app(page, "Every method's map", TIMEOUT_MS)
        settle(page)
        assert_no_exception(page)
        assert not problems(page)
        screenshot(page, "attribution-methods-1280x800")

        page.get_by_role("tab", name="Sanity check").click()
        settle(page)
        run_check(page, "Run the sanity check", "Spearman rank correlation of each map")

        page.get_by_role("tab", name="Faithfulness").click()
        settle(page)
        field = page.get_by_label("Test images (the first; 1 – 10,000)", exact=True)
        field.fill("10")
        field.press("Enter")
        settle(page)
        run_check(page, "Measure faithfulness", "Most faithful on this model")
        screenshot(page, "attribution-faithfulness-1280x800")


def run_check(page, button: str, done: str) -> None:
    """Start one of the page's checks and wait for its result, drawn whole and uncut."""
    page.get_by_role("button", name=button).click()
    page.get_by_text(done).wait_for(timeout=TIMEOUT_MS)
    settle(page)
    assert_no_exception(page)
    assert not problems(page)
