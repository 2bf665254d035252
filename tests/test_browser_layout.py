"""What a user sees in Debian's Chromium at 1280×800 and 1920×1080: no number, label, title or
chip shown cut, no glyph drawn as an empty box, results opened where the user is looking, every
layer one readable block, two inputs side by side, any model on an upload."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import numpy as np
import PIL.Image
import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.browser import (
    MAIN,
    PROGRESS,
    assert_no_exception,
    chromium_page,
    clipped_texts,
    cut_cells,
    missing_glyphs,
    set_run,
    settle,
    wait_for_app,
)
from tests.test_browser_confusion import cell_centre

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
VIEWPORTS = [(1280, 800), (1920, 1080)]
# Every page, with a text its finished run shows; AlexNet's classifier.1 has 37,752,832
# parameters (the grid sized from its first rows drew "7,752,832").
PAGES = [
    ("/?model=arch:alexnet", "Multiply-adds per image"),
    ("/Shape_flow?model=arch:alexnet", "Output sizes worked out"),
    ("/Shape_flow?model=arch:resnet18", "Output sizes worked out"),
    ("/Model", "Measure test accuracy"),
    ("/Train", "Start training"),
    ("/Filters", "Nearest classic kernel of each learned filter"),
    ("/Activations", "(Grad-CAM)"),
    ("/Confusion_matrix", "Top confusions"),
    ("/Compare", "One test image through both"),
    ("/Convolution_lab", "Convolution lab"),
    ("/Channels", "Feature visualization"),
    ("/Representations", "Click a point"),
]


@contextmanager
def patient_page(viewport: tuple[int, int] = (1280, 800)) -> Iterator[object]:
    """A Chromium page that waits as long as a loaded machine needs for every step."""
    with chromium_page(viewport=viewport) as page:
        page.set_default_timeout(TIMEOUT_MS)
        page.set_default_navigation_timeout(TIMEOUT_MS)
        yield page


def problems(page, settle_s: float = 20.0) -> list[str]:
    """Cut table cells, clipped texts and chips, missing glyphs — once the page has settled:
    plotly lays a figure out at its own width first and fits it to its column a moment later,
    so a finding must still be there after `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        found = (
            cut_cells(page)
            + clipped_texts(page)
            + [f"no glyph: {c!r}" for c in missing_glyphs(page)]
        )
        if not found or time.monotonic() > deadline:
            return found
        page.wait_for_timeout(1000)


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
def test_no_number_label_chip_or_glyph_is_cut(app_url: str, viewport: tuple[int, int]) -> None:
    found: dict[str, list[str]] = {}
    with patient_page(viewport) as page:
        for path, text in PAGES:
            page.goto(f"{app_url}{path}")
            page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT_MS)
            settle(page)
            assert_no_exception(page)
            if problems(page):
                found[path] = problems(page, settle_s=0)
    assert not found, found


def in_view(page, locator) -> bool:
    """The element lies wholly inside the browser's viewport (where the user is looking)."""
    box = locator.bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= -1 and box["y"] + box["height"] <= height + 1


def scroll_to_bottom_edge(locator) -> None:
    """Scroll as a user does, just until the element shows at the bottom of the screen."""
    locator.evaluate("e => e.scrollIntoView({block: 'end'})")


def test_a_runs_progress_shows_where_start_was_clicked(app_url: str) -> None:
    with patient_page() as page:
        page.goto(f"{app_url}/Train")
        wait_for_app(page, "Start training", TIMEOUT_MS)
        set_run(page, epochs=1, images=2000, test_images=500)
        start = page.get_by_role("button", name="Start training")
        scroll_to_bottom_edge(start)
        page.wait_for_timeout(300)
        assert in_view(page, start)
        start.click()
        progress = page.locator(PROGRESS).first
        progress.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_timeout(500)  # the page redrawn around the run
        assert in_view(page, progress), progress.bounding_box()
        stop = page.locator(MAIN).get_by_role("button", name="Stop", exact=True)
        with suppress(PlaywrightError):  # the short run may end by itself meanwhile
            stop.click(timeout=5_000)
        assert_no_exception(page)


def test_a_cells_images_open_where_the_matrix_was_clicked(app_url: str) -> None:
    with patient_page() as page:
        page.goto(f"{app_url}/Confusion_matrix")
        wait_for_app(page, "Top confusions", TIMEOUT_MS)
        page.locator(".st-key-cm_chart").scroll_into_view_if_needed()
        page.mouse.click(*cell_centre(page, 9, 7))  # a cell off the diagonal
        dialog = page.get_by_role("dialog")
        dialog.wait_for(timeout=TIMEOUT_MS)
        first = dialog.locator('[data-testid="stImage"] img').first
        first.wait_for(timeout=TIMEOUT_MS)
        assert re.match(r"True 9 → predicted 7: \d+ images?", dialog.inner_text())
        assert in_view(page, first)
        dialog.locator(".st-key-cm_close").get_by_role("button").click()
        dialog.wait_for(state="detached", timeout=TIMEOUT_MS)
        assert_no_exception(page)


# Image and colour-bar boxes of every block of the "Every layer" chart, and the chart's box.
_STACK = """chart => {
  const box = e => { const b = e.getBoundingClientRect(); return [b.top, b.bottom]; };
  return {
    chart: box(chart),
    maps: [...chart.querySelectorAll('.heatmaplayer image, .hm image')].map(box),
    bars: [...chart.querySelectorAll('.colorbar .cbbg')].map(box),
  };
}"""


def test_every_layer_is_a_block_with_its_own_colour_bar_and_no_blank_band(app_url: str) -> None:
    """resnet18-small on CIFAR-10: 38 layers, each a block of maps beside a colour bar as tall
    as them, in one chart no taller than its blocks (it was 29,656 px, ~5,800 of them blank)."""
    with patient_page() as page:
        page.goto(f"{app_url}/Activations?model=resnet18-small-cifar10&dataset=cifar10")
        wait_for_app(page, "(Grad-CAM)", TIMEOUT_MS)
        page.get_by_text("Show all layers").first.click()
        title = page.locator(".gtitle", has_text="Every layer — test image 0")
        title.first.wait_for(timeout=TIMEOUT_MS)
        settle(page)
        chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=title).first
        page.wait_for_timeout(1000)
        geometry = chart.evaluate(_STACK)
        maps, bars = geometry["maps"], geometry["bars"]
        assert len(maps) == len(bars) == 38
        for (top, bottom), (bar_top, bar_bottom) in zip(maps, bars, strict=True):
            assert bar_top == pytest.approx(top, abs=2)
            assert bar_bottom == pytest.approx(bottom, abs=2)
        chart_top, chart_bottom = geometry["chart"]
        assert min(t for t, _ in maps) - chart_top < 160  # the title, then the first blocks
        assert chart_bottom - max(b for _, b in maps) < 30  # nothing blank under the last
        assert chart_bottom - chart_top < 8000
        assert_no_exception(page)


def test_a_second_input_shows_both_images_and_both_maps_readably(app_url: str) -> None:
    with patient_page() as page:
        page.goto(f"{app_url}/Activations?image=3")
        wait_for_app(page, "(Grad-CAM)", TIMEOUT_MS)
        page.get_by_text("Compare with a second input").first.click()
        page.locator(".gtitle", has_text="features.conv1 — test image 4").first.wait_for(
            timeout=TIMEOUT_MS
        )
        settle(page)
        page.wait_for_timeout(2000)
        widths = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')].map(
                 p => [p.querySelector('.gtitle')?.textContent,
                       p.querySelector('.draglayer .nsewdrag')?.getBoundingClientRect().width]))"""
        )
        for image in ("Test image 3", "Test image 4"):
            assert widths.get(image, 0) >= 150, widths  # each image at least 150 px wide
        for maps in ("features.conv1 — test image 3", "features.conv1 — test image 4"):
            assert widths.get(maps, 0) >= 500, widths  # each input's maps as large as alone
        assert not problems(page)
        assert_no_exception(page)


def photo() -> bytes:
    """A colour picture: a red disc on a blue ground, 300×200 PNG."""
    ys, xs = np.mgrid[:200, :300]
    disc = (ys - 100) ** 2 + (xs - 150) ** 2 < 70**2
    rgb = np.zeros((200, 300, 3), dtype=np.uint8)
    rgb[...] = (30, 60, 200)
    rgb[disc] = (220, 30, 30)
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_1000_class_model_reads_an_uploaded_photo(app_url: str) -> None:
    """AlexNet (1000 outputs, 3×224×224) with MNIST selected was refused; now the photo is
    resized to its input and read with its own classes."""
    with patient_page() as page:
        page.goto(f"{app_url}/Activations?model=arch:alexnet&dataset=mnist")
        page.get_by_text("do not fit this model").first.wait_for(timeout=TIMEOUT_MS)
        uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        uploader.wait_for(state="attached", timeout=TIMEOUT_MS)
        uploader.set_input_files(
            files=[{"name": "disc.png", "mimeType": "image/png", "buffer": photo()}]
        )
        page.get_by_text("What the model sees").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("3×224×224", exact=True).first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text(re.compile(r"^predicted class \d+ \(")).first.wait_for(timeout=TIMEOUT_MS)
        settle(page)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        assert_no_exception(page)
