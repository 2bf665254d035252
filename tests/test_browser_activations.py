"""The Activations page in Debian's Chromium: change the layer, pick a test image by class, draw a
digit on the canvas with the mouse, and watch the prediction follow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import (
    SIDEBAR,
    app_with_saved_runs,
    assert_no_exception,
    choose,
    chromium_page,
    screenshot,
    settle,
    wait_for_app,
)

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def app_url(lenet5_mnist_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app with the fixture's LeNet-5 among the saved runs (shipped models stay first)."""
    runs = tmp_path_factory.mktemp("runs")
    with app_with_saved_runs(runs, lenet5_mnist_checkpoint) as url:
        yield url


def verdict(page, expected: str) -> str:
    """The line under the probability bars, once it matches `expected` (a regex)."""
    from playwright.sync_api import expect

    markdown = page.locator('[data-testid="stMarkdownContainer"]')
    line = markdown.filter(has_text=re.compile(r"^predicted ")).first
    expect(line).to_have_text(re.compile(expected), timeout=TIMEOUT_MS)
    return line.inner_text()


def test_layer_class_pick_and_drawn_digit(app_url: str) -> None:
    with chromium_page(viewport=(1500, 2400)) as page:
        page.goto(f"{app_url}/Activations")
        wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        choose(page, "Model", re.compile("lenet5-test"), scope=page.locator(SIDEBAR))
        wait_for_app(page, "features.conv1 — test image 0", TIMEOUT_MS)
        assert_no_exception(page)
        verdict(page, r"true 7")  # MNIST's first test image is a 7

        choose(page, "Layer", re.compile(r"^features\.conv2 · Conv2d"))
        page.get_by_text("features.conv2 — test image 0").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("after ReLU").first.click()
        settle(page)
        page.get_by_text("features.conv2 after ReLU — test image 0").first.wait_for()
        assert_no_exception(page)

        page.get_by_text("by class", exact=True).click()
        page.get_by_text(re.compile(r"^Which one of the")).wait_for(timeout=TIMEOUT_MS)
        settle(page)
        choose(page, "Class", re.compile(r"^3$"))
        verdict(page, r"true 3")
        page.get_by_text("Grad-CAM for '3' at features.relu2").first.wait_for(timeout=TIMEOUT_MS)
        settle(page)
        assert_no_exception(page)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.set_viewport_size({"width": 1500, "height": 2800})  # down to the Grad-CAM
        page.wait_for_timeout(500)
        screenshot(page, "activations-by-class")
        page.set_viewport_size({"width": 1500, "height": 2400})

        page.get_by_text("draw a digit", exact=True).click()
        settle(page)
        page.get_by_text("The canvas is empty").wait_for(timeout=TIMEOUT_MS)
        canvas = page.locator("canvas.upper-canvas").first
        canvas.wait_for()
        box = canvas.bounding_box()
        assert box is not None
        left, top = box["x"], box["y"]
        # One straight down-stroke in the middle: a "1" as MNIST writes it.
        page.mouse.move(left + 140, top + 45)
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(left + 140 + step * 0.4, top + 45 + step * 10)
        page.mouse.up()
        page.get_by_text("What the model sees").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("after ReLU — your drawing").first.wait_for(timeout=TIMEOUT_MS)
        settle(page)
        assert_no_exception(page)
        drawn = verdict(page, r"^predicted \d \(")
        assert "true" not in drawn  # a drawing has no label
        assert drawn.startswith("predicted 1 "), drawn
        screenshot(page, "activations-drawn")


def test_uploads_a_photo_of_a_digit_and_refuses_a_fake(app_url: str, shared_datasets: Path) -> None:
    import io

    import numpy as np
    import PIL.Image

    from dashboard import data

    split = data.load_split("mnist", "test", data_root=shared_datasets)
    digit = split.images[1, 0].numpy()  # a 2
    paper = np.full((160, 120), 230, dtype=np.uint8)  # dark ink on light paper, off centre
    paper[20:76, 50:106] = 230 - np.kron(digit, np.ones((2, 2), dtype=np.uint8)) * 0.85
    buffer = io.BytesIO()
    PIL.Image.fromarray(paper).save(buffer, format="PNG")
    with chromium_page(viewport=(1500, 1600)) as page:
        page.goto(f"{app_url}/Activations")
        wait_for_app(page, "Where the image comes from", TIMEOUT_MS)
        choose(page, "Model", re.compile("lenet5-test"), scope=page.locator(SIDEBAR))
        page.get_by_text("upload", exact=True).click()
        uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        uploader.wait_for(state="attached", timeout=TIMEOUT_MS)

        fake = {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image\n" * 40}
        uploader.set_input_files(files=[fake])
        error = page.locator('[data-testid="stAlertContentError"]')
        error.first.wait_for(timeout=TIMEOUT_MS)
        lines = [line for line in error.first.inner_text().splitlines() if line.strip()]
        assert lines[-1] == (
            "notes.png is not an image in a format read here "
            "(PNG, JPEG, GIF, BMP, TIFF, WebP or PPM)"
        )  # after the ⚠️ icon
        assert_no_exception(page)

        photo = {"name": "two.png", "mimeType": "image/png", "buffer": buffer.getvalue()}
        uploader.set_input_files(files=[photo])
        page.get_by_text("two.png · 120×160").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text(re.compile("inverted to light on black")).first.wait_for()
        settle(page)
        assert_no_exception(page)
        assert "true" not in verdict(page, r"^predicted \d \(")  # an upload has no label
        screenshot(page, "activations-upload")
