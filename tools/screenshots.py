"""Regenerate the README's screenshots (docs/screenshots/*.png) from the running app.

    python tools/screenshots.py [--out docs/screenshots] [--only home compare ...]

Starts `streamlit run app.py` headless on a free local port (the shipped checkpoints only: an
empty runs folder, caches and settings in a temporary folder), opens each view in Debian's
Chromium through Playwright (the test suite's helpers in tests/browser.py), waits for the page's
own text and for its figures, and saves the whole page, 1280 px wide, as a small palette PNG.
The HTML report is built by its button, then opened offline and photographed too. Data comes
from --data-root, else $CNN_LENS_DATA, else the app's default (the bundled MNIST sample works).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.browser import chromium_page, settle, streamlit_server  # noqa: E402

WIDTH = 1280  # pixels: a laptop's page, and the README's column scales it down cleanly
MAX_HEIGHT = 3000  # a longer page is cut here: the top is what a reader needs
TIMEOUT_MS = 300_000
MAIN = '[data-testid="stMain"]'


@dataclass(frozen=True)
class Shot:
    """One screenshot: the app's address, a text its finished page shows, what to do then."""

    name: str
    path: str
    ready: str
    action: Callable | None = None
    height: int = 1600  # how much of the page to keep


def show_all_controls(page) -> None:
    """Nothing to click: the page as it opens."""


def open_a_cell(page) -> None:
    """Click the matrix's largest off-diagonal cell: its images open in a dialog."""
    page.get_by_role("button", name="→", exact=False).first.click()
    page.get_by_role("dialog").locator('[data-testid="stImage"] img').first.wait_for(
        timeout=TIMEOUT_MS
    )


SHOTS = (
    Shot("home", "/", "Multiply-adds per image", height=1300),
    Shot("model", "/Model", "Measure test accuracy", height=1700),
    Shot("train", "/Train", "Start training", height=1500),
    Shot("shape_flow", "/Shape_flow?model=arch:resnet18", "Output sizes worked out", height=1900),
    Shot("filters", "/Filters", "Nearest classic kernel of each learned filter", height=2300),
    Shot("activations", "/Activations?image=8", "(Grad-CAM)", height=2600),
    Shot("confusion", "/Confusion_matrix", "Top confusions", open_a_cell, height=1100),
    Shot("compare", "/Compare", "One test image through both", height=3000),
    Shot("lab", "/Convolution_lab", "Convolution lab", height=1500),
)


def whole_page(page, height: int) -> bytes:
    """The page's main block as one PNG `WIDTH` wide and up to `height` tall: Streamlit
    scrolls inside its main block, so the window is made as tall as the content first."""
    content = page.evaluate(f"document.querySelector('{MAIN}').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": min(content, height, MAX_HEIGHT)})
    page.wait_for_timeout(1500)  # plotly fits each figure to its column again
    page.mouse.move(1, 1)  # no hover label in the picture
    return page.screenshot()


def small_png(raw: bytes, target: Path) -> int:
    """Save as a 256-colour PNG (a third of the size, the same to the eye); → bytes written."""
    import PIL.Image

    with PIL.Image.open(io.BytesIO(raw)) as image:
        palette = image.convert("RGB").quantize(256, method=PIL.Image.Quantize.MEDIANCUT)
        palette.save(target, optimize=True)
    return target.stat().st_size


def report_shot(page, url: str, folder: Path) -> bytes:
    """Build the home page's HTML report, open the file offline, photograph its top."""
    page.goto(url)
    page.get_by_text("Build HTML report").first.wait_for(timeout=TIMEOUT_MS)
    settle(page)
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.get_by_role("button", name="Build HTML report").click()
    report = folder / "report.html"
    download.value.save_as(report)
    page.set_viewport_size({"width": WIDTH, "height": 800})
    page.goto(report.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0")
    page.wait_for_timeout(2000)
    return page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": 3000})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    parser.add_argument("--data-root", help="where the datasets are (else $CNN_LENS_DATA)")
    parser.add_argument("--only", nargs="*", help="these screenshots only (names as saved)")
    args = parser.parse_args(argv)
    wanted = set(args.only or [*(s.name for s in SHOTS), "report"])
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cnn-lens-shots-") as tmp:
        folder = Path(tmp)
        env = {
            "CNN_LENS_RUNS": str(folder / "runs"),
            "CNN_LENS_CACHE": str(folder / "cache"),
            "CNN_LENS_CONFIG": str(folder / "config"),
        }
        if args.data_root:
            env["CNN_LENS_DATA"] = str(Path(args.data_root).resolve())
        (folder / "runs").mkdir()
        with streamlit_server(env=env, timeout=120) as url:
            for shot in SHOTS:
                if shot.name not in wanted:
                    continue
                with chromium_page(viewport=(WIDTH, 800)) as page:
                    page.goto(f"{url}{shot.path}")
                    page.get_by_text(shot.ready, exact=False).first.wait_for(timeout=TIMEOUT_MS)
                    settle(page, TIMEOUT_MS)
                    if shot.action is not None:
                        shot.action(page)
                        settle(page, TIMEOUT_MS)
                    size = small_png(whole_page(page, shot.height), args.out / f"{shot.name}.png")
                print(f"{shot.name}.png: {size / 1024:.0f} kB", file=sys.stderr)
            if "report" in wanted:
                with chromium_page(viewport=(WIDTH, 800)) as page:
                    raw = report_shot(page, url, folder)
                size = small_png(raw, args.out / "report.png")
                print(f"report.png: {size / 1024:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    sys.exit(main())
