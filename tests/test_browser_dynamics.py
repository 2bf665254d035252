"""The Training dynamics page in Debian's Chromium at 1280×800 and 1920×1080, opened by a link to
a saved run that recorded its dynamics: both figures drawn, nothing cut, no missing glyph, and
screenshots of what a user sees (artifacts/screenshots/dynamics-*.png)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser
from tests.dynamics_run import dynamics_checkpoint  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def app_url(dynamics_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    runs = tmp_path_factory.mktemp("runs")
    with browser.app_with_saved_runs(runs, dynamics_checkpoint) as url:
        yield url


@pytest.mark.parametrize("viewport", [(1280, 800), (1920, 1080)])
def test_dynamics_page_by_link(app_url: str, viewport: tuple[int, int]) -> None:
    with browser.chromium_page(viewport=viewport) as page:
        page.goto(f"{app_url}/Training_dynamics?model=run:lenet5-dynamics&x=epoch")
        browser.wait_for_app(page, "Distributions over epochs", timeout_ms=TIMEOUT_MS)
        for title in ("Update-to-weight ratio", "features.conv1.weight: distribution"):
            browser.figure_title(page, title).first.wait_for(timeout=TIMEOUT_MS)
        browser.assert_no_exception(page)
        assert page.get_by_text("rule of thumb").count() >= 1  # the guide line's label
        assert browser.clipped_texts(page) == []
        assert browser.missing_glyphs(page) == []
        assert "statistic=update_ratio" in page.url
        page.wait_for_timeout(1000)  # the figures' drawing
        name = f"dynamics-{viewport[0]}x{viewport[1]}"
        browser.screenshot(page, name)
        # the main block scrolls, not the page: each figure in view, then the heatmap
        plots = page.locator(".js-plotly-plot")  # each figure whole (Playwright scrolls to it)
        plots.nth(0).screenshot(path=str(browser.SCREENSHOTS / f"{name}-lines.png"))
        plots.nth(1).screenshot(path=str(browser.SCREENSHOTS / f"{name}-bands.png"))
        page.get_by_text("histogram heatmap").click()
        browser.settle(page)
        heatmap = browser.figure_title(page, "features.conv1.weight: histograms").first
        heatmap.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_timeout(1000)
        plots.nth(1).screenshot(path=str(browser.SCREENSHOTS / f"{name}-heatmap.png"))
        browser.assert_no_exception(page)
        assert browser.clipped_texts(page) == []
