"""The Channels page in Debian's Chromium: click a tile of the layer's atlas and its channel
opens below; click one of that channel's top images and the Activations page opens on that
image, at that layer, with the one-neuron window on the position that fired."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from dashboard import data
from dashboard.analysis import atlas
from dashboard.models import checkpoints
from tests import browser
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
LAYER, CHANNEL, IMAGES = "features.conv2", 3, 2000  # the page's defaults for LeNet-5 but CHANNEL


def marker_centre(page, chart_key: str, k: int) -> tuple[float, float]:
    """Page coordinates of the k-th clickable marker (trace "tiles") of a chart."""
    selector = f".st-key-{chart_key} .js-plotly-plot"
    page.wait_for_function(f"() => document.querySelector('{selector}')?._fullLayout")
    page.locator(selector).scroll_into_view_if_needed()  # the main block scrolls, not the page
    return page.evaluate(
        """([selector, k]) => {
            const gd = document.querySelector(selector);
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            const t = gd._fullData.find(d => d.name === 'tiles');
            return [box.left + L.xaxis._offset + L.xaxis.l2p(t.x[k]),
                    box.top + L.yaxis._offset + L.yaxis.l2p(t.y[k])];
        }""",
        [selector, k],
    )


@pytest.fixture(scope="module")
def best(shared_datasets: Path) -> atlas.Example:
    """The oracle: the channel's best test image, from the atlas computed here."""
    model = checkpoints.load_checkpoint(REPO_ROOT / "trained" / "lenet5-mnist.safetensors").model
    split = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    return atlas.compute_atlas(model, data.take_first(split, IMAGES), LAYER).top(CHANNEL)[0]


def test_a_tile_opens_its_channel_and_an_example_opens_on_activations(
    best: atlas.Example, shared_datasets: Path
) -> None:
    with browser.app_with_data(shared_datasets, (1280, 1400)) as (url, page):
        page.goto(f"{url}/Channels?model=lenet5-mnist&dataset=mnist")
        browser.wait_for_app(page, f"All 16 channels of {LAYER}", TIMEOUT_MS)
        browser.figure_title(page, "Channel 0: top 9 images").first.wait_for(timeout=TIMEOUT_MS)
        browser.assert_no_exception(page)

        page.mouse.click(*marker_centre(page, "ch_tiles_chart", CHANNEL))  # tiles by channel
        browser.settle(page)
        field = page.get_by_label("Channel (0 – 15)", exact=True)
        expect(field).to_have_value(str(CHANNEL), timeout=TIMEOUT_MS)
        browser.figure_title(page, f"Channel {CHANNEL}: top 9 images").first.wait_for(
            timeout=TIMEOUT_MS
        )
        browser.assert_no_exception(page)
        browser.screenshot(page, "channels_tile_clicked")
        page.get_by_text("Feature visualization").first.scroll_into_view_if_needed()
        browser.screenshot(page, "channels_channel_view")

        page.mouse.click(*marker_centre(page, "ch_examples_chart", 0))
        browser.wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        page.wait_for_url(f"**/Activations?**image={best.index}**", timeout=TIMEOUT_MS)
        assert f"layer={LAYER}" in page.url
        index_field = page.locator('[data-testid="stNumberInputField"]').first
        expect(index_field).to_have_value(str(best.index), timeout=TIMEOUT_MS)
        y, x = best.position
        window = page.get_by_text("One neuron: its value and the input pixels it sees")
        window.scroll_into_view_if_needed()
        browser.screenshot(page, "channels_to_activations")
        for label, value in (("Channel", CHANNEL), ("Row y", y), ("Column x", x)):
            expect(page.get_by_label(label, exact=True)).to_have_value(str(value))
        browser.assert_no_exception(page)
        browser.screenshot(page, "channels_to_activations")
