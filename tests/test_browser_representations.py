"""The Representations page's projector in Debian's Chromium: a click on a point shows its image
with its nearest neighbours; a box drawn with plotly's Box Select tool over the 2-D map shows
the images inside as a gallery instead, as many as plotly selected, and a card opens its image
on Activations."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests import browser

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
CHART = ".st-key-repr_chart .js-plotly-plot"
IMAGES_DRAWN = """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
  .every(img => img.complete && img.naturalWidth > 0)"""

# The box's corners (fractions of the plot area) in page pixels, and how many images lie inside.
_CORNERS = """([selector, box]) => {
  const gd = document.querySelector(selector);
  const L = gd._fullLayout, frame = gd.getBoundingClientRect();
  const left = frame.left + L.xaxis._offset, top = frame.top + L.yaxis._offset;
  const [x0, y0, x1, y1] = [left + box[0] * L.xaxis._length, top + box[1] * L.yaxis._length,
                            left + box[2] * L.xaxis._length, top + box[3] * L.yaxis._length];
  const inside = new Set();  // rows: a ringed point counts once
  for (const trace of gd._fullData) {
    for (let i = 0; i < trace.x.length; i++) {
      const px = left + L.xaxis.l2p(trace.x[i]), py = top + L.yaxis.l2p(trace.y[i]);
      if (px > x0 && px < x1 && py > y0 && py < y1) inside.add(trace.customdata[i][1]);
    }
  }
  return {corners: [x0, y0, x1, y1], inside: inside.size};
}"""
# The page position of a class trace's first point.
_FIRST_POINT = """([selector, trace]) => {
  const gd = document.querySelector(selector);
  const L = gd._fullLayout, frame = gd.getBoundingClientRect(), t = gd._fullData[trace];
  return [frame.left + L.xaxis._offset + L.xaxis.l2p(t.x[0]),
          frame.top + L.yaxis._offset + L.yaxis.l2p(t.y[0])];
}"""
# What plotly itself selected (each trace's `selectedpoints`), by row (customdata[1]) so a
# ringed point counts once: how many images, and how many of them the model got right.
_SELECTED = """selector => {
  const gd = document.querySelector(selector);
  const rows = new Map();
  for (const trace of gd.data) {
    for (const i of trace.selectedpoints || []) {
      const c = trace.customdata[i];
      rows.set(c[1], c[2] === c[3]);
    }
  }
  return {count: rows.size, right: [...rows.values()].filter(Boolean).length};
}"""


def test_a_box_selection_shows_its_images_as_a_gallery(shared_datasets: Path) -> None:
    with browser.app_with_data(shared_datasets, (1280, 1000)) as (url, page):
        page.goto(f"{url}/Representations?model=lenet5-mnist&dataset=mnist")
        browser.wait_for_app(page, "Click a point", TIMEOUT_MS)
        page.wait_for_function(f"() => document.querySelector('{CHART}')?._fullLayout")
        page.locator(CHART).scroll_into_view_if_needed()  # the main block scrolls, not the page
        browser.assert_no_exception(page)
        neighbours = page.get_by_text("nearest neighbours in")
        page.mouse.click(*page.evaluate(_FIRST_POINT, [CHART, 3]))  # the drag tool: zoom
        neighbours.first.wait_for(timeout=TIMEOUT_MS)
        browser.settle(page)
        page.locator(CHART).scroll_into_view_if_needed()
        page.locator(f'{CHART} .modebar-btn[data-title="Box Select"]').click()
        box = page.evaluate(_CORNERS, [CHART, [0.3, 0.3, 0.7, 0.7]])
        assert box["inside"] > 10  # a box over the middle of the map holds a cluster
        x0, y0, x1, y1 = box["corners"]
        page.mouse.move(x0, y0)
        page.mouse.down()
        for step in range(1, 11):  # plotly draws the box as the mouse moves
            page.mouse.move(x0 + (x1 - x0) * step / 10, y0 + (y1 - y0) * step / 10)
        page.mouse.up()
        page.wait_for_function(f"() => document.querySelector('{CHART}').data[0].selectedpoints")
        selected = page.evaluate(_SELECTED, CHART)
        count, right = selected["count"], selected["right"]
        assert abs(count - box["inside"]) <= 3  # plotly's box is the one drawn (edges aside)
        line = page.get_by_text(f"{count:,} images selected: {right:,} right, {count - right:,}")
        line.wait_for(timeout=TIMEOUT_MS)
        browser.settle(page)
        browser.assert_no_exception(page)
        cards = page.locator('[data-testid="stElementContainer"][class*="st-key-repr_pick_"]')
        expect(cards).to_have_count(min(count, 48), timeout=TIMEOUT_MS)
        expect(neighbours).to_have_count(0)  # the gallery replaces the clicked image
        line.scroll_into_view_if_needed()
        page.wait_for_function(IMAGES_DRAWN, timeout=TIMEOUT_MS)
        browser.screenshot(page, "representations_box_gallery")

        first = cards.first.inner_text().split("#")[-1].strip()
        cards.first.get_by_role("button", name=f"#{first}").click()
        browser.wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        page.wait_for_url(f"**/Activations?**image={first}**", timeout=TIMEOUT_MS)
        browser.assert_no_exception(page)
