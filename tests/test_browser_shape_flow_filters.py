"""Shape flow and Filters in Debian's Chromium: change the input size, change the layer, and
keep screenshots of what a user sees (artifacts/screenshots/)."""

from __future__ import annotations

import re

import pytest

from tests.browser import (
    assert_no_exception,
    chromium_page,
    clipped_texts,
    figure_title,
    missing_glyphs,
    screenshot,
    selectbox_text,
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
        figure_title(page, "Dataflow graph at 3×224×224").first.wait_for()  # its default view
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


# Every text written on the graph's blocks, with its box on the screen.
_BLOCK_TEXTS = """chart => [...chart.querySelectorAll('.textpoint text')].map(t => {
  const b = t.getBoundingClientRect();
  return {text: t.textContent, left: b.left, right: b.right, top: b.top, bottom: b.bottom};
})"""


def test_graph_of_resnet18_small_reads_on_a_laptop_screen(app_url: str) -> None:
    """The graph view, the default for a ResNet, at 1280×800: every label inside the figure,
    none on another, the skip connections' sums and downsample branches drawn, a block's hover
    giving its numbers."""
    with chromium_page(viewport=(1280, 800)) as page:
        page.goto(f"{app_url}/Shape_flow?model=resnet18-small-cifar10&dataset=cifar10")
        wait_for_app(page, "Multiply-adds per image", 120_000)
        title = figure_title(page, "Dataflow graph at 3×32×32")
        title.first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # plotly draws after the script has finished
        assert_no_exception(page)
        assert clipped_texts(page) == []
        assert missing_glyphs(page) == []
        chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=title).first
        box = chart.bounding_box()
        texts = chart.evaluate(_BLOCK_TEXTS)
        assert [t["text"] for t in texts].count("Add +") == 8
        assert sum("downsample" in t["text"] for t in texts) == 3
        for t in texts:  # inside the figure, left to right
            assert box["x"] <= t["left"] <= t["right"] <= box["x"] + box["width"], t
        for i, a in enumerate(texts):  # no text on another
            for b in texts[i + 1 :]:
                apart = (
                    a["right"] <= b["left"] or b["right"] <= a["left"]
                    or a["bottom"] <= b["top"] or b["bottom"] <= a["top"]
                )  # fmt: skip
                assert apart, (a, b)
        screenshot(page, "shape_flow_graph")
        conv = chart.locator(".textpoint text", has_text="Conv 3×3/2, 32").first
        conv.scroll_into_view_if_needed()
        conv.hover(force=True)  # the text lets the pointer through to plotly's hover layer
        hover = page.locator(".hoverlayer .hovertext")
        hover.first.wait_for(timeout=10_000)
        words = hover.first.text_content()
        assert "layer2.0.conv1" in words
        assert "parameters 4,672 · multiply-adds 1,179,648" in words  # 32·16·9 + BN's 64
        screenshot(page, "shape_flow_graph_hover")

        # A click on the block opens its layer's maps on Activations.
        conv.click(force=True)
        page.wait_for_url(re.compile(r"/Activations\?.*layer=layer2\.0\.conv1"), timeout=60_000)
        wait_for_app(page, "Where the image comes from", 120_000)
        assert selectbox_text(page, "Layer").startswith("layer2.0.conv1")
        assert_no_exception(page)
