"""State, links and feedback in Debian's Chromium: the running indicator shows while the app
works (and the tests' idle wait really waits), widgets hold across pages, the data root set in
the app survives a reload and a fresh browser (and `-- --data-root DIR` works), and a link to an
uploaded model opens it in another browser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from dashboard import data
from tests.browser import (
    IDLE,
    RUNS_SEEN,
    SIDEBAR,
    assert_no_exception,
    choose,
    chromium_page,
    require_chromium,
    screenshot,
    selectbox_text,
    set_number,
    settle,
    streamlit_server,
    wait_for_app,
)

pytestmark = pytest.mark.browser
REFUSED = "http://127.0.0.1:9"  # nothing listens: a download attempt fails at once
STATUS = '[data-testid="stStatusWidget"]'
SMALL, LARGE = (1280, 800), (1920, 1080)
SHIPPED = Path(__file__).resolve().parent.parent / "trained" / "lenet5-mnist.safetensors"


def private_env(root: Path, **more: str) -> dict[str, str]:
    """Runs, caches and settings in `root`; downloads refused."""
    env = {
        "CNN_LENS_RUNS": str(root / "runs"),
        "CNN_LENS_CACHE": str(root / "cache"),
        "CNN_LENS_CONFIG": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "user-cache"),  # the default data root: empty
        "http_proxy": REFUSED,
        "https_proxy": REFUSED,
    }
    return env | more


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with every folder it writes in a temporary one (uploads included)."""
    require_chromium()
    with streamlit_server(env=private_env(tmp_path_factory.mktemp("app"))) as url:
        yield url


def query_of(page) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlparse(page.url).query).items()}


def go(page, name: str, text: str) -> None:
    """Click a page in the sidebar, as a user switches pages, and wait for its text."""
    page.locator(SIDEBAR).get_by_role("link", name=name, exact=True).click()
    wait_for_app(page, text, timeout_ms=120_000)
    assert_no_exception(page)


def global_scale(page):
    """The "global" choice of the Activations page's colour scale."""
    return page.locator('[data-testid="stMain"] [role="radiogroup"]').get_by_role(
        "radio", name="global", exact=True
    )


def test_the_running_indicator_shows_and_the_idle_wait_waits(tmp_path: Path) -> None:
    """A cold start imports PyTorch for seconds: the toolbar shows Streamlit's running man and
    Stop meanwhile (hidden by toolbarMode "minimal" before), the sidebar says what it loads,
    and the tests' idle wait fails while the app is busy (it passed at once before)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with streamlit_server(env=private_env(tmp_path)) as url, chromium_page(SMALL) as page:
        page.goto(f"{url}/Train")
        with pytest.raises(PlaywrightTimeout):
            page.wait_for_function(IDLE, timeout=500)  # busy: the wait does not pass
        status = page.locator(STATUS)
        status.wait_for(state="visible", timeout=60_000)
        assert "Stop" in status.inner_text()
        page.locator(SIDEBAR).get_by_text("Starting: loading PyTorch").wait_for(timeout=60_000)
        screenshot(page, "state-running-indicator")
        wait_for_app(page, "Start training", timeout_ms=180_000)
        assert status.count() == 0  # gone once the run ended
        assert page.evaluate(RUNS_SEEN) >= 1  # the run counter saw it
        assert_no_exception(page)


def test_widgets_hold_across_pages_and_the_link_survives_a_reload(app_url: str) -> None:
    with chromium_page(SMALL) as page:
        page.goto(f"{app_url}/Train?model=lenet5-mnist&dataset=mnist")
        wait_for_app(page, "Start training", timeout_ms=120_000)
        assert selectbox_text(page, "Architecture") == "lenet5"
        set_number(page, "Epochs", 1)
        choose(page, "Optimizer", "sgd")
        go(page, "Shape flow", "Input channels C")
        go(page, "Train", "Start training")
        assert page.get_by_label("Epochs", exact=True).input_value() == "1"
        assert selectbox_text(page, "Optimizer") == "sgd"
        assert selectbox_text(page, "Architecture") == "lenet5"  # not course-net
        page.get_by_text("Start from the weights of").click()
        settle(page)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        screenshot(page, "state-train-after-round-trip")

        page.goto(f"{app_url}/Activations?model=lenet5-mnist&dataset=mnist")
        wait_for_app(page, "Where the image comes from", timeout_ms=120_000)
        set_number(page, "Test image (0 – 9,999)", 42)
        choose(page, "Layer", re.compile(r"^features\.conv2 "))
        page.get_by_text("global", exact=True).click()
        settle(page)
        expect(global_scale(page)).to_be_checked()  # the click took, before the round trip
        go(page, "Filters", "Colour scale")
        go(page, "Activations", "Where the image comes from")
        assert page.get_by_label("Test image (0 – 9,999)").input_value() == "42"
        assert selectbox_text(page, "Layer").startswith("features.conv2")
        # The controls paint after the image source: wait for them rather than read too early.
        expect(global_scale(page)).to_be_checked(timeout=60_000)
        assert query_of(page)["image"] == "42"

        page.reload()  # a new session: the address bar brings the view back
        wait_for_app(page, "Where the image comes from", timeout_ms=120_000)
        assert page.get_by_label("Test image (0 – 9,999)").input_value() == "42"
        assert selectbox_text(page, "Layer").startswith("features.conv2")
        assert_no_exception(page)
        page.set_viewport_size({"width": LARGE[0], "height": LARGE[1]})
        screenshot(page, "state-activations-after-reload")


def test_the_data_root_set_in_the_app_holds_for_reloads_and_other_browsers(
    tmp_path: Path, shared_datasets: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps({"allowed_roots": [str(shared_datasets)]}))
    env = private_env(tmp_path, CNN_LENS_DATA="")
    with streamlit_server(env=env) as url:
        with chromium_page(LARGE) as page:
            page.goto(f"{url}/Model")
            wait_for_app(page, "Choose a model from", timeout_ms=120_000)
            page.get_by_role("tab", name="The dataset").click()
            page.get_by_text("Test set: bundled MNIST sample").wait_for()
            field = page.get_by_label("Data root", exact=True)
            field.fill("/usr/share")
            field.press("Enter")
            settle(page)
            page.get_by_text(
                "/usr/share is outside the folders this server lets the app read"
            ).wait_for()
            field.fill(str(shared_datasets))
            field.press("Enter")
            settle(page)
            page.get_by_text("Test set: MNIST full set").wait_for()
            assert_no_exception(page)
            saved = json.loads((config / "settings.json").read_text())
            assert saved == {
                "allowed_roots": [str(shared_datasets)],
                "data_root": str(shared_datasets),
            }
            screenshot(page, "state-data-root-set")

            page.reload()
            wait_for_app(page, "Choose a model from", timeout_ms=120_000)
            page.get_by_role("tab", name="The dataset").click()
            page.get_by_text("Test set: MNIST full set").wait_for()
            assert page.get_by_label("Data root", exact=True).input_value() == str(shared_datasets)

        with chromium_page(SMALL) as fresh:  # another browser, a CIFAR-10 link
            fresh.goto(f"{url}/Activations?model=resnet18-small-cifar10&dataset=cifar10")
            wait_for_app(fresh, "Where the image comes from", timeout_ms=180_000)
            assert_no_exception(fresh)
            assert fresh.locator('[data-testid="stAlertContentError"]').count() == 0
            screenshot(fresh, "state-cifar-link-fresh-browser")


def test_the_data_root_can_be_given_after_the_double_dash(
    tmp_path: Path, shared_datasets: Path
) -> None:
    env = private_env(tmp_path, CNN_LENS_DATA="")
    args = ["--data-root", str(shared_datasets)]
    with streamlit_server(env=env, script_args=args) as url, chromium_page(SMALL) as page:
        page.goto(f"{url}/Model")
        wait_for_app(page, "Choose a model from", timeout_ms=120_000)
        page.get_by_role("tab", name="The dataset").click()
        page.get_by_text("Test set: MNIST full set").wait_for()
        page.get_by_text("Set for this server by --data-root").wait_for()
        assert page.get_by_label("Data root", exact=True).input_value() == str(shared_datasets)
        assert page.get_by_label("Data root", exact=True).is_disabled()
        assert_no_exception(page)


def test_a_link_to_an_upload_opens_it_in_another_browser(app_url: str) -> None:
    with chromium_page(LARGE) as page:
        page.goto(f"{app_url}/Model?dataset=cifar10")
        wait_for_app(page, "Choose a model from", timeout_ms=120_000)
        page.get_by_text("Upload a state dict", exact=True).click()
        settle(page)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(SHIPPED)
        page.locator('[data-testid="stFileChip"]').wait_for()  # the name shows shortened
        choose(page, "Its architecture", "lenet5")
        page.get_by_role("button", name="Load and select").click()
        page.get_by_text("loaded as lenet5: now selected on every page").wait_for(timeout=60_000)
        settle(page)
        page.get_by_text("guessed from the model's shape").first.wait_for()
        link = query_of(page)
        assert re.fullmatch(r"upload:[0-9a-f]{16}-[0-9a-f]{8}", link["model"]), link
        assert link["dataset"] == "mnist"
        assert all(not value.startswith("/") for value in link.values()), link
        screenshot(page, "state-upload-selected")

    with chromium_page(SMALL) as fresh:
        fresh.goto(f"{app_url}/Activations?model={link['model']}&dataset=mnist&image=7")
        wait_for_app(fresh, "Where the image comes from", timeout_ms=120_000)
        assert_no_exception(fresh)
        model = fresh.locator(SIDEBAR).get_by_role("combobox", name="Model").input_value()
        assert model == "lenet5-mnist (lenet5, uploaded)"
        assert "not on this server" not in fresh.locator('[data-testid="stMain"]').inner_text()
        screenshot(fresh, "state-upload-link-fresh-browser")

        fresh.goto(f"{app_url}/Activations?model=upload:{'0' * 16}-00000000&dataset=mnist")
        wait_for_app(fresh, "Where the image comes from", timeout_ms=120_000)
        fresh.get_by_text(re.compile(r"is not on this server .*: showing .* instead")).wait_for()
        assert "model" in query_of(fresh)  # the model shown instead, by its name
        assert_no_exception(fresh)


def test_a_drawing_and_an_uploaded_image_are_still_there_after_another_page(
    app_url: str, tmp_path: Path, shared_datasets: Path
) -> None:
    """Streamlit empties a canvas and a file uploader when their page is left: the strokes are
    drawn again and the upload kept, each with its prediction."""
    import PIL.Image

    with chromium_page(SMALL) as page:
        page.goto(f"{app_url}/Activations?model=lenet5-mnist&dataset=mnist")
        wait_for_app(page, "Where the image comes from", timeout_ms=120_000)
        page.get_by_text("draw a digit", exact=True).click()
        settle(page)
        canvas = page.locator('[data-testid="stMain"] canvas').last
        canvas.wait_for()
        box = canvas.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + 50
        page.mouse.move(x, y)
        page.mouse.down()
        for step in range(24):  # a vertical stroke: a "1"
            page.mouse.move(x, y + 7 * step)
        page.mouse.up()
        settle(page)
        verdict = page.locator("p").filter(has_text=re.compile(r"^predicted \d"))
        verdict.wait_for()
        drawn = verdict.inner_text()
        go(page, "Filters", "Colour scale")
        go(page, "Activations", "Where the image comes from")
        verdict.wait_for()
        assert verdict.inner_text() == drawn
        screenshot(page, "state-drawing-after-round-trip")

        image = tmp_path / "seven.png"  # test image 0 of MNIST, a 7
        seven = data.load_split("mnist", "test", data_root=shared_datasets).images[0, 0]
        PIL.Image.fromarray(seven.numpy()).save(image)
        page.get_by_text("upload", exact=True).click()
        settle(page)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(image)
        settle(page)
        seven_verdict = page.locator("p").filter(has_text=re.compile(r"^predicted 7 "))
        seven_verdict.wait_for()
        go(page, "Shape flow", "Input channels C")
        go(page, "Activations", "Where the image comes from")
        page.get_by_text("Showing seven.png, uploaded before").wait_for()
        seven_verdict.wait_for()
        assert_no_exception(page)
        screenshot(page, "state-upload-after-round-trip")
