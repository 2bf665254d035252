"""Sharing and presenting in Debian's Chromium: the address bar follows the view, a copied link
opens the same view in a fresh browser, presentation mode folds the controls away, and figures
and tables offer their downloads."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser import (
    assert_no_exception,
    chromium_page,
    screenshot,
    wait_for_app,
)

pytestmark = pytest.mark.browser
SETTLED = "Colour scale"  # the Filters page's controls are drawn


def query_of(page) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlparse(page.url).query).items()}


def test_the_address_bar_follows_the_view_and_reopens_it(app_url: str) -> None:
    with chromium_page(viewport=(1400, 1600)) as page:
        page.goto(f"{app_url}/Filters?model=study-lenet5-sgd&dataset=mnist")
        wait_for_app(page, SETTLED)
        assert_no_exception(page)
        page.get_by_text("per filter", exact=True).click()
        page.wait_for_function("() => location.search.includes('scale=per+filter')")
        query = query_of(page)
        assert query["model"] == "study-lenet5-sgd"
        assert query["layer"] == "features.conv1"
        assert query["scale"] == "per filter"
        link = page.url

    with chromium_page(viewport=(1400, 1600)) as fresh:  # another browser: only the link
        fresh.goto(link)
        wait_for_app(fresh, SETTLED)
        assert_no_exception(fresh)
        model = fresh.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
        assert "study-lenet5-sgd" in model.get_by_role("combobox").input_value()
        checked = fresh.locator(
            '[data-testid="stMain"] [role="radiogroup"] label:has(input:checked)'
        )
        assert "per filter" in checked.first.inner_text()
        fresh.wait_for_function("() => location.search.includes('scale=per+filter')")
        assert query_of(fresh) == query


def test_presentation_mode_folds_controls_and_tables_offer_csv(app_url: str) -> None:
    with chromium_page(viewport=(1600, 1000)) as page:
        page.goto(f"{app_url}/Filters?model=lenet5-mnist&present=1")
        wait_for_app(page, "Controls")
        drawn = "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length"
        page.wait_for_function(f"() => {drawn} >= 3")  # the figures, drawn after the controls
        assert_no_exception(page)
        assert page.get_by_text(SETTLED).first.is_hidden()  # folded into the expander
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.get_attribute("data-collapsed") == "true"
        assert page.get_by_role("button", name="HTML").count() == 0  # a clean screen
        screenshot(page, "present_filters")
        page.get_by_text("Controls").first.click()
        page.get_by_text(SETTLED).first.wait_for()

        page.goto(f"{app_url}/Shape_flow?model=lenet5-mnist")
        wait_for_app(page, "Multiply-adds per image")
        table = page.locator('[data-testid="stDataFrame"]').first
        table.hover()
        download = page.locator('[data-testid="stElementToolbarButton"]').get_by_label(
            "Download as CSV"
        )
        assert download.count() >= 1  # the table's own CSV download
