"""Text from files and folders is shown as text, never read as Markdown: a checkpoint whose
card's name, notes, dataset source and class names hold `![probe](http://…)`, and an image
folder whose class folders are named so. Every page's Markdown carries the text escaped
(AppTest), and in Chromium no page asks for the image."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import chromium_page, require_chromium, settle, streamlit_server
from tests.conftest import REPO_ROOT

PROBE_URL = "http://127.0.0.1:9/cnn-lens-probe.png"  # port 9 (discard): nothing answers
PROBE = f"![probe]({PROBE_URL})"
FOLDER_PROBE = "![probe](cnn-lens-probe.png)"  # a folder name holds no "/": a relative address
PAGES = (
    "app.py",
    "pages/1_Model.py",
    "pages/2_Train.py",
    "pages/3_Shape_flow.py",
    "pages/4_Filters.py",
    "pages/5_Activations.py",
    "pages/6_Confusion_matrix.py",
    "pages/7_Compare.py",
    "pages/8_Convolution_lab.py",
    "pages/9_Channels.py",
    "pages/10_Representations.py",
    "pages/11_Attribution.py",
)
# An image or a link, not escaped: what Markdown would fetch or follow.
UNESCAPED = re.compile(r"(?<!\\)\[probe(?<!\\)\](?<!\\)\(")


def hostile_checkpoint(folder: Path, stem: str = "hostile") -> Path:
    """The shipped LeNet-5 with a card whose texts each carry the probe."""
    weights = folder / f"{stem}.safetensors"
    shutil.copy(REPO_ROOT / "trained" / "lenet5-mnist.safetensors", weights)
    card = json.loads((REPO_ROOT / "trained" / "lenet5-mnist.json").read_text())
    card["name"] = f"run {PROBE}"
    card["notes"] = f"see {PROBE}"
    card["dataset_source"] = f"from {PROBE}"
    card["classes"] = [f"{digit} {PROBE}" for digit in range(10)]
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights


def hostile_folder(root: Path) -> Path:
    """An image folder of ten classes (as many as an untrained course-net's outputs) named with
    the probe, a few PNGs in each."""
    rng = np.random.default_rng(0)
    for name in (f"{letter} {FOLDER_PROBE}" for letter in "abcdefghij"):
        (root / name).mkdir(parents=True)
        for k in range(6):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


def shown_markdown(node) -> list[str]:
    """Every Markdown body, label and title the page hands Streamlit, in its tree."""
    found = []
    proto = getattr(node, "proto", None)
    for field in ("body", "label", "title"):
        value = getattr(proto, field, None) if proto is not None else None
        if isinstance(value, str) and value:
            found.append(value)
    for child in getattr(node, "children", {}).values():
        found += shown_markdown(child)
    return found


@pytest.fixture(scope="module")
def hostile_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"ckpt:{hostile_checkpoint(tmp_path_factory.mktemp('hostile'))}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_escapes_a_cards_texts(page: str, hostile_key: str) -> None:
    app = AppTest.from_file(str(REPO_ROOT / page), default_timeout=180)
    app.session_state["lens_model"] = hostile_key
    app.session_state["lens_extra_models"] = [hostile_key]
    app.run()
    assert not app.exception, app.exception
    texts = shown_markdown(app._tree)
    if page != "pages/8_Convolution_lab.py":  # its first section names no model
        assert any("probe" in text for text in texts), "the card's texts are not on the page"
    assert not [text for text in texts if UNESCAPED.search(text)]


@pytest.mark.parametrize("page", ["pages/1_Model.py", "pages/6_Confusion_matrix.py"])
def test_class_folder_names_are_escaped(page: str, allowed_tmp_path: Path, monkeypatch) -> None:
    tmp_path = allowed_tmp_path
    monkeypatch.setenv("CNN_LENS_CACHE", str(tmp_path / "cache"))
    folder = hostile_folder(tmp_path / "images")
    app = AppTest.from_file(str(REPO_ROOT / page), default_timeout=180)
    app.session_state["lens_model"] = "arch:course-net"
    app.session_state["lens_dataset"] = "folder (your own images)"
    app.session_state["lens_folder"] = str(folder)
    app.run()
    assert not app.exception, app.exception
    texts = shown_markdown(app._tree)
    assert any("cnn-lens-probe" in text for text in texts), "the class names are not shown"
    assert not [text for text in texts if UNESCAPED.search(text)]


def test_no_page_fetches_an_image_named_in_a_card(tmp_path: Path) -> None:
    """In Chromium, with the hostile checkpoint among the saved runs: every page drawn with it
    selected asks nothing of the probe's address and holds no image pointing there."""
    require_chromium()
    runs = tmp_path / "runs"
    runs.mkdir()
    key = f"ckpt:{hostile_checkpoint(runs)}"
    asked: list[str] = []
    env = {"CNN_LENS_RUNS": str(runs), "CNN_LENS_CACHE": str(tmp_path / "cache")}
    with streamlit_server(env=env) as url, chromium_page(viewport=(1280, 800)) as page:
        page.on("request", lambda request: asked.append(request.url))
        for path, text in (
            ("", "Multiply-adds per image"),
            ("/Model", "Measure test accuracy"),
            ("/Activations", "(Grad-CAM)"),
            ("/Confusion_matrix", "Top confusions"),
            ("/Compare", "Weights, layer by layer"),
            ("/Train", "Start training"),
        ):
            page.goto(f"{url}{path}?model={key}")
            page.get_by_text(text, exact=False).first.wait_for(timeout=180_000)
            settle(page)
            page.wait_for_timeout(1000)
            assert page.get_by_text("probe", exact=False).count() > 0, path  # shown, as text
            images = page.locator('img[src*="cnn-lens-probe"]').count()
            assert images == 0, path
    assert not [address for address in asked if "cnn-lens-probe" in address]
