"""The Train and Model pages in Debian's Chromium: a run's live progress, Stop, Save (the new
model selected on every page), and a .pt state dict uploaded on the Model page."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from dashboard import models
from dashboard.models import checkpoints
from tests.browser import (
    MAIN,
    PROGRESS,
    assert_no_exception,
    choose,
    chromium_page,
    open_train,
    require_chromium,
    screenshot,
    set_run,
    streamlit_server,
    wait_for_app,
    wait_until_no_run_trains,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The app with saved runs and uploads in temporary folders (never the repository's)."""
    require_chromium()
    runs_dir = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    with streamlit_server(
        env={"CNN_LENS_RUNS": str(runs_dir), "CNN_LENS_CACHE": str(cache)}
    ) as url:
        yield url, runs_dir


def progress_text(page) -> str:
    return page.locator(PROGRESS).first.inner_text()


def test_train_live_stop_save_then_upload_on_the_model_page(server, tmp_path: Path) -> None:
    url, runs_dir = server
    with chromium_page(viewport=(1400, 1900)) as page:
        open_train(page, url)
        choose(page, "Architecture", "course-net")
        set_run(page, epochs=40, images=3000, test_images=1000)
        page.get_by_role("button", name="Start training").click()

        # The fragment redraws the progress while the run trains in the background.
        page.locator(PROGRESS).get_by_text(re.compile(r"epoch \d+/40, step")).wait_for(
            timeout=60_000
        )
        first = progress_text(page)
        page.wait_for_function(
            f"() => document.querySelector('{PROGRESS}').innerText !== {first!r}", timeout=30_000
        )
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=30_000)
        # The live view: the filters and maps of copies taken while the run trains.
        page.get_by_text(re.compile(r"^The weights after epoch \d+, step \d+/\d+")).wait_for(
            timeout=30_000
        )
        page.locator(".gtitle", has_text="features.conv1 filters").wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Start training").is_disabled()
        assert_no_exception(page)
        screenshot(page, "train-running")

        clicked = time.monotonic()
        page.locator(MAIN).get_by_role("button", name="Stop", exact=True).click()
        page.get_by_text(re.compile(r"^stopped by user at epoch \d+, step \d+")).wait_for(
            timeout=30_000
        )
        print(f"Stop → 'stopped' shown in the browser: {time.monotonic() - clicked:.2f} s")
        name_box = page.get_by_label("Name", exact=True)
        name_box.wait_for()
        name_box.fill("browser-run")
        name_box.press("Enter")
        page.get_by_role("button", name="Save", exact=True).click()
        page.get_by_text("it is the selected model on every page").wait_for(timeout=30_000)
        wait_for_app(page, "it is the selected model on every page")
        screenshot(page, "train-saved")
        shipped = checkpoints.list_checkpoints()
        if shipped:  # overlay a shipped card's curves on this session's run
            pills = page.locator(".st-key-_train_compare_runs")  # every run, a pill each
            pill = pills.get_by_role("button", name=shipped[0].name, exact=True)
            pill.scroll_into_view_if_needed()
            pill.click()
            wait_for_app(page, "Compare runs")
            chart = page.locator('[data-testid="stPlotlyChart"]').last
            chart.get_by_text(shipped[0].name).first.wait_for()  # its legend group
            page.get_by_text("Runs to overlay").scroll_into_view_if_needed()
            page.mouse.wheel(0, 700)  # the compare section at the top of the window
            page.wait_for_timeout(500)
            assert_no_exception(page)
            screenshot(page, "train-compare")
        assert (runs_dir / "browser-run.safetensors").is_file()
        card = checkpoints.read_card(runs_dir / "browser-run.safetensors")
        assert card.architecture == "course-net"
        assert card.notes.startswith("partial run: stopped by user at epoch")
        sidebar = page.locator('[data-testid="stSidebar"]')
        model_box = sidebar.get_by_role("combobox", name="Model")
        assert model_box.input_value().startswith("browser-run — ")  # selected everywhere
        assert_no_exception(page)

        # Same browser session: the Model page follows the new selection.
        sidebar.get_by_role("link", name="Model", exact=True).click()
        wait_for_app(page, "Choose a model from")
        page.get_by_role("heading", name=re.compile("^browser-run")).wait_for()
        assert page.get_by_text("Made by").count() == 1
        assert_no_exception(page)
        screenshot(page, "model-saved-run")

        torch.manual_seed(0)
        weights = tmp_path / "my-lenet.pt"
        torch.save(models.build_model("lenet5").state_dict(), weights)
        page.get_by_text("Upload a state dict", exact=True).click()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(weights)
        page.get_by_text("my-lenet.pt").wait_for()
        choose(page, "Its architecture", "lenet5")
        page.get_by_role("button", name="Load and select").click()
        page.get_by_text("my-lenet.pt loaded as lenet5: now selected on every page").wait_for(
            timeout=60_000
        )
        assert model_box.input_value() == "my-lenet (lenet5, uploaded)"
        page.get_by_role("heading", name="my-lenet (lenet5, uploaded)").wait_for()
        assert_no_exception(page)
        screenshot(page, "model-upload")


def test_the_model_page_shows_a_shipped_card(server) -> None:
    url, _ = server
    shipped = checkpoints.list_checkpoints()
    if not shipped:
        pytest.skip("no shipped checkpoints in trained/ yet")
    with chromium_page(viewport=(1400, 1700)) as page:
        page.goto(f"{url}/Model")
        wait_for_app(page, "Choose a model from", timeout_ms=120_000)
        page.get_by_text("Made by").wait_for(timeout=60_000)  # the default: the best shipped one
        shown = " ".join(page.locator('[data-testid="stCode"]').first.inner_text().split())
        assert shown in {" ".join(card.command.split()) for card in shipped}
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
        assert_no_exception(page)
        screenshot(page, "model")


def test_closing_the_tab_stops_its_run(server) -> None:
    url, _ = server
    with chromium_page() as page:
        open_train(page, url)
        choose(page, "Architecture", "course-net")
        set_run(page, epochs=500, images=2000)
        page.get_by_role("button", name="Start training").click()
        page.locator(PROGRESS).get_by_text(re.compile(r"epoch \d+/500, step")).wait_for(
            timeout=60_000
        )
    closed = time.monotonic()  # the browser is gone: so is the session's websocket
    with chromium_page() as page:
        ended = wait_until_no_run_trains(page, url, closed, limit_s=40)
        print(f"tab closed → its run ended within {ended:.1f} s")
        assert_no_exception(page)
