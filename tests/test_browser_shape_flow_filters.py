"""Shape flow and Filters in Debian's Chromium: change the input size, change the layer, and
keep screenshots of what a user sees (artifacts/screenshots/)."""

from __future__ import annotations

import pytest

from tests.browser import (
    assert_no_exception,
    chromium_page,
    screenshot,
    wait_for_app,
)

pytestmark = pytest.mark.browser


def choose(page, selectbox, option: str, settle_text: str) -> None:
    """Pick `option` in a Streamlit selectbox and wait for the rerun to finish."""
    selectbox.click()
    page.get_by_role("option", name=option).first.click()
    page.wait_for_timeout(300)
    wait_for_app(page, settle_text)


def sidebar_model(page, label: str, settle_text: str) -> None:
    sidebar = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    choose(page, sidebar.first, label, settle_text)


def test_shape_flow_input_size_breaks_the_linear_layer(app_url: str) -> None:
    with chromium_page(viewport=(1400, 1900)) as page:
        page.goto(f"{app_url}/Shape_flow")
        wait_for_app(page, "Multiply-adds per image")
        sidebar_model(page, "course-net (untrained)", "Multiply-adds per image")
        assert_no_exception(page)
        assert page.get_by_text("Feature-map flow at 1×28×28").count() >= 1
        for label, shown in (("Height H", "1×32×28"), ("Width W", "1×32×32")):
            field = page.get_by_label(label)
            field.fill("32")
            field.press("Enter")
            page.get_by_text(f"breaks at input {shown}").first.wait_for()
            wait_for_app(page, "Multiply-adds per image")
        error = page.locator('[data-testid="stAlertContentError"]')
        assert error.count() == 1
        assert "classifier.fc (Linear)" in error.first.inner_text()
        assert "expects 320 features, gets 500" in error.first.inner_text()
        assert_no_exception(page)
        screenshot(page, "shape_flow_broken")
        page.get_by_role("button", name="Reset to 1×28×28").click()
        error.first.wait_for(state="detached")  # the reset size goes through again
        wait_for_app(page, "Multiply-adds per image")
        assert page.get_by_label("Height H").input_value() == "28"

        sidebar_model(page, "resnet18 (untrained)", "Multiply-adds per image")
        page.get_by_text("Feature-map flow at 3×224×224").first.wait_for()
        assert_no_exception(page)
        screenshot(page, "shape_flow")


def test_filters_change_layer_and_back_to_the_first(app_url: str) -> None:
    with chromium_page(viewport=(1400, 2300)) as page:
        page.goto(f"{app_url}/Filters")
        wait_for_app(page, "Colour scale")
        assert_no_exception(page)
        layer = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first
        value = layer.get_by_role("combobox")
        first = value.input_value()
        layer.click()
        options = page.get_by_role("option")
        second = options.nth(1).inner_text()
        options.nth(1).click()
        page.get_by_text("to compare it with classic edge detectors").first.wait_for()
        wait_for_app(page, "Colour scale")
        assert_no_exception(page)
        assert value.input_value() == second
        titles = page.locator(".gtitle").evaluate_all("els => els.map(e => e.textContent)")
        assert any(t.startswith(second.split(" — ")[0]) for t in titles), titles
        screenshot(page, "filters_second_layer")

        choose(page, layer, first, "Colour scale")
        page.get_by_text("Which learned filters are edge detectors?").first.wait_for()
        page.get_by_text("Nearest classic kernel of each learned filter").first.wait_for()
        page.wait_for_timeout(1000)  # plotly draws after the script has finished
        assert_no_exception(page)
        screenshot(page, "filters")
