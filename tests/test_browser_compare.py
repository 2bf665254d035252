"""The Compare page in Debian's Chromium, reached from the home page's sidebar link: the seed
study's curves, both filter grids on one scale, another test image through both models, and a
screenshot of what a user sees (artifacts/screenshots/compare.png)."""

from __future__ import annotations

import time

import pytest

from tests.browser import (
    assert_no_exception,
    chromium_page,
    figure_title,
    screenshot,
    wait_for_app,
)

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
A, B = "study-lenet5-batchnorm", "study-lenet5-base"  # the model opened first; its default B


def titles(page) -> list[str]:
    """The titles of every plotly figure drawn so far, without spaces (a title's line breaks
    leave none)."""
    found = page.locator(".gtitle").evaluate_all("els => els.map(e => e.textContent)")
    return [squeezed(title) for title in found]


def squeezed(text: str) -> str:
    return "".join(text.split())


def test_compare_from_the_sidebar_link(app_url: str) -> None:
    with chromium_page(viewport=(1400, 3500)) as page:
        page.goto(f"{app_url}/?model={A}&dataset=mnist")
        wait_for_app(page, "Multiply-adds per image", timeout_ms=TIMEOUT_MS)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_role("link", name="Compare", exact=True).click()
        wait_for_app(page, "One test image through both", timeout_ms=TIMEOUT_MS)
        assert page.url.split("?")[0].endswith("/Compare")
        grids = [f"A · {A} · filters of features.conv1", f"B · {B} · filters of features.conv1"]
        for title in grids:  # plotly draws after the script has finished
            figure_title(page, title).first.wait_for(timeout=TIMEOUT_MS)
        assert_no_exception(page)
        shown = titles(page)
        assert squeezed("Test accuracy") in shown
        assert squeezed(f"A · {A} · maps of features.conv1") in shown
        # both grids are drawn heatmaps with the same colour bar range
        bars = page.locator(".js-plotly-plot").filter(
            has=figure_title(page, "filters of features.conv1")
        )
        assert bars.count() == 2
        ticks = [bar.locator(".cbaxis text").all_inner_texts() for bar in bars.all()]
        assert ticks[0] == ticks[1]
        assert ticks[0], "no colour bar ticks"

        # another test image: both predictions and maps follow
        field = page.get_by_label("Test image (0 – 9,999)")
        field.fill("12")
        started = time.perf_counter()
        field.press("Enter")
        page.get_by_text("#12: 9").first.wait_for(timeout=TIMEOUT_MS)
        wait_for_app(page, "One test image through both", timeout_ms=TIMEOUT_MS)
        elapsed = time.perf_counter() - started
        print(f"image change redrawn in the browser in {elapsed * 1000:.0f} ms")
        assert "image=12" in page.url
        page.wait_for_timeout(1500)  # the new figures' drawing
        assert_no_exception(page)
        screenshot(page, "compare")
