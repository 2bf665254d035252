"""The Confusion matrix page in Debian's Chromium: click a cell of the heatmap (the invisible
marker over its centre, located through plotly's own axes), see exactly that cell's images,
click one, and land on the Activations page with that image selected."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from dashboard import data
from dashboard.analysis import confusion, metrics
from dashboard.models import checkpoints
from tests import browser

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000
GALLERY_BUTTONS = '[class*="st-key-cm_open_"]'  # one element container per image button


@pytest.fixture(scope="module")
def app_url(lenet5_mnist_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app with the fixture's LeNet-5 among the saved runs (shipped models stay first)."""
    runs = tmp_path_factory.mktemp("runs")
    with browser.app_with_saved_runs(runs, lenet5_mnist_checkpoint) as url:
        yield url


@pytest.fixture(scope="module")
def pred(lenet5_mnist_checkpoint: Path, shared_datasets: Path) -> metrics.Predictions:
    """The fixture model's answers on the MNIST test split, computed here (the oracle)."""
    model = checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model
    return metrics.predict(model, data.load_split("mnist", "test", data_root=shared_datasets))


def cell_centre(page, true: int, predicted: int) -> tuple[float, float]:
    """Page coordinates of a cell's centre, from the clickable chart's plotly axes."""
    page.wait_for_function(
        "() => document.querySelector('.st-key-cm_chart .js-plotly-plot')?._fullLayout"
    )
    x, y = page.evaluate(
        """([row, col]) => {
            const gd = document.querySelector('.st-key-cm_chart .js-plotly-plot');
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            return [box.left + L.xaxis._offset + L.xaxis.l2p(col),
                    box.top + L.yaxis._offset + L.yaxis.l2p(row)];
        }""",
        [true, predicted],
    )
    return x, y


def test_click_a_cell_see_its_images_open_one(app_url: str, pred: metrics.Predictions) -> None:
    cm = metrics.confusion(pred)
    worst = confusion.top_cells(cm, 1)[0]
    inside = metrics.cell_indices(pred, worst.true, worst.predicted)
    with browser.chromium_page(viewport=(1500, 2000)) as page:
        page.goto(f"{app_url}/Confusion_matrix")
        browser.wait_for_app(page, "Top confusions", TIMEOUT_MS)
        browser.choose(
            page, "Model", re.compile("lenet5-test"), scope=page.locator(browser.SIDEBAR)
        )
        page.get_by_text(f"{pred.accuracy:.2%}", exact=True).wait_for(timeout=TIMEOUT_MS)
        # drawn after the matrix: the new model's chart is in place once this button is
        page.get_by_role("button", name=worst.label(pred.classes)).wait_for(timeout=TIMEOUT_MS)
        browser.settle(page)
        browser.assert_no_exception(page)

        page.mouse.click(*cell_centre(page, worst.true, worst.predicted))
        started = time.perf_counter()
        heading = f"True {worst.true} → predicted {worst.predicted}: {worst.count} images"
        page.get_by_text(heading).wait_for(timeout=TIMEOUT_MS)
        shown_after = time.perf_counter() - started
        browser.settle(page)
        shown = min(40, worst.count)  # the first page
        page.wait_for_function(  # stale elements of the previous run gone
            f"() => document.querySelectorAll('{GALLERY_BUTTONS}').length === {shown}"
        )
        buttons = page.locator(GALLERY_BUTTONS)
        labels = [int(re.search(r"#(\d+)", t)[1]) for t in buttons.all_inner_texts()]
        assert labels == inside[:40].tolist()
        page.wait_for_function(
            """() => { const im = [...document.querySelectorAll('[data-testid="stImage"] img')];
                       return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0); }"""
        )
        assert page.locator('[data-testid="stImage"] img').count() == shown
        browser.assert_no_exception(page)
        page.mouse.move(5, 5)  # no hover label over the matrix in the browser.screenshot
        page.wait_for_timeout(300)
        browser.screenshot(page, "confusion")
        print(f"gallery of {worst.count} images shown {shown_after * 1000:.0f} ms after the click")

        index = int(inside[0])
        page.locator(f".st-key-cm_open_{index}").get_by_role("button", name=f"#{index}").click()
        browser.wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        opened = re.compile(rf"/Activations\?(.*&)?image={index}(&|$)")  # and the rest of the view
        page.wait_for_url(opened, timeout=TIMEOUT_MS)
        field = page.locator('[data-testid="stNumberInputField"]').first
        # The address changes with the switch, before the page's run has drawn its widgets.
        expect(field).to_have_value(str(index), timeout=TIMEOUT_MS)
        named = re.compile(rf"[Tt]est image ({index}|{index:,})\b")
        page.get_by_text(named).first.wait_for(timeout=TIMEOUT_MS)
        browser.assert_no_exception(page)
        browser.screenshot(page, "confusion_to_activations")


def test_compare_two_checkpoints(app_url: str) -> None:
    with browser.chromium_page(viewport=(1500, 2600)) as page:
        page.goto(f"{app_url}/Confusion_matrix")
        browser.wait_for_app(page, "Top confusions", TIMEOUT_MS)
        browser.choose(
            page, "Model", re.compile("lenet5-test"), scope=page.locator(browser.SIDEBAR)
        )
        browser.choose(page, "Second model", re.compile("course-net"))
        page.get_by_text("Improved in B").first.wait_for(timeout=TIMEOUT_MS)
        assert page.locator(".st-key-cm_difference .js-plotly-plot").count() == 1
        browser.assert_no_exception(page)
        page.locator(".st-key-cm_difference").scroll_into_view_if_needed()
        browser.screenshot(page, "confusion_compare")
    assert (browser.SCREENSHOTS / "confusion_compare.png").exists()
