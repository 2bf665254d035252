"""The real app in Debian's Chromium: every page opens, renders, and shows no exception."""

from __future__ import annotations

import pytest

from tests.browser import (
    assert_no_exception,
    chromium_page,
    screenshot,
    wait_for_app,
)

pytestmark = pytest.mark.browser


def test_home_page_shows_the_shape_flow_table(app_url: str) -> None:
    with chromium_page() as page:
        page.goto(app_url)
        wait_for_app(page, "Shape flow")
        assert_no_exception(page)
        table = page.locator('[data-testid="stDataFrame"]')
        table.first.wait_for()
        assert page.get_by_text("Multiply-adds per image").count() == 1
        screenshot(page, "home")
