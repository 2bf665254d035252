"""The Convolution lab in Debian's Chromium: step the worked example to another position with the
keyboard, open "Any neuron", and keep screenshots (artifacts/screenshots/lab_*.png)."""

from __future__ import annotations

import numpy as np
import pytest

from tests import browser

pytestmark = pytest.mark.browser

PRESET_X = np.array(
    [[3, 4, 6, 5, 7], [2, 4, 6, 8, 2], [1, 6, 7, 8, 4], [9, 7, 4, 6, 2], [3, 7, 5, 4, 1]]
)
PRESET_K = np.arange(1, 10).reshape(3, 3)


def multiply_add(y: int, x: int) -> str:
    window = np.pad(PRESET_X, 1)[y : y + 3, x : x + 3]
    terms = " + ".join(f"{a}·{b}" for a, b in zip(window.ravel(), PRESET_K.ravel(), strict=True))
    return f"{terms} = {int((window * PRESET_K).sum())}"


def code_text(page) -> str:
    return "\n".join(page.locator('[data-testid="stCode"]').all_inner_texts())


def test_step_through_the_worked_example_and_open_a_neuron(app_url: str) -> None:
    with browser.chromium_page(viewport=(1400, 1500)) as page:
        page.goto(f"{app_url}/Convolution_lab")
        browser.wait_for_app(page, "Padded input")
        page.get_by_text(multiply_add(0, 0)).first.wait_for()
        browser.assert_no_exception(page)

        # (0, 0) → (1, 2) in reading order, one step at a time: key presses sent while the
        # page reruns for the previous one can be dropped on a busy machine.
        for k in range(1, 8):
            slider = page.get_by_role("slider").first
            slider.focus()
            slider.press("ArrowRight")
            page.get_by_text(multiply_add(k // 5, k % 5)).first.wait_for(timeout=60_000)
            browser.wait_for_app(page, "Padded input")
        browser.wait_for_app(page, "Padded input")
        browser.assert_no_exception(page)
        assert "= 295" in code_text(page)
        browser.screenshot(page, "lab_worked")

        page.get_by_role("tab", name="Any neuron").click()
        page.get_by_text("model's activation ✓").first.wait_for(timeout=60_000)
        browser.figure_title(page, "What this neuron sees").first.wait_for(timeout=60_000)
        browser.wait_for_app(page, "computed by hand")
        browser.assert_no_exception(page)
        assert "computed by hand" in code_text(page)
        browser.screenshot(page, "lab_neuron")

        page.get_by_role("tab", name="Pooling").click()
        page.get_by_text("max(3, 4, 2, 4) = 4").first.wait_for()
        browser.wait_for_app(page, "Average pooling")
        browser.assert_no_exception(page)
        browser.screenshot(page, "lab_pooling")
