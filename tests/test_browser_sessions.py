"""Two browser sessions at once, in Debian's Chromium (two browser contexts: two users): each
trains its own model on the Train page and sees only its own selection, run and progress; the
one that fine-tunes the shared cached model leaves it untouched (the other session measures the
shipped accuracy again); closing one tab mid-run stops its run and leaves no thread behind,
while the other session's run goes on."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dashboard import data
from dashboard.analysis import metrics
from dashboard.base import paths
from dashboard.models import checkpoints
from tests import test_browser_train
from tests.browser import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    PROGRESS,
    TRAINING_NOW,
    assert_no_exception,
    choose,
    new_page,
    open_train,
    screenshot,
    set_run,
    wait_for_app,
    wait_until_no_run_trains,
)

pytestmark = pytest.mark.browser

# The app with saved runs and the decoded-data cache in temporary folders (one per module).
server = test_browser_train.server

SHIPPED = checkpoints.list_checkpoints()[0]  # the sidebar's default: the best MNIST model
RUN_HEADER = '[data-testid="stMarkdownContainer"]:has-text("— mnist")'


@contextmanager
def two_users(viewport: tuple[int, int] = (1400, 1900)) -> Iterator[tuple[object, object]]:
    """Two pages in two browser contexts of one Chromium: separate cookies, separate
    Streamlit sessions, as two people on two machines."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield new_page(browser, viewport), new_page(browser, viewport)
        finally:
            browser.close()


def trained_digest() -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(paths.TRAINED_DIR.glob("*"))
        if p.is_file()
    }


def server_process(url: str) -> Path:
    """/proc/PID of the `streamlit run` process serving `url` (found by its port)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--server.port" in words and port.encode() in words and b"run" in words:
            return entry
    raise AssertionError(f"no streamlit process listens on port {port}")


def server_threads(url: str) -> int:
    """OS threads of the server process."""
    return len(os.listdir(server_process(url) / "task"))


def run_threads(url: str) -> int:
    """The server's threads that train a run: each names itself lens-run-N in the OS."""
    names = []
    for task in (server_process(url) / "task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended while being read
            names.append((task / "comm").read_text().strip())
    return sum(name.startswith("lens-run-") for name in names)


def run_header(page) -> str:
    return page.locator(RUN_HEADER).filter(has_text=re.compile(r"^Run \d+ — ")).first.inner_text()


def wait_until_finished(page, epochs: int, timeout_ms: int = 240_000) -> None:
    page.get_by_text(f"finished: {epochs} epochs trained").wait_for(timeout=timeout_ms)
    wait_for_app(page, "Save this run")


def save_as(page, name: str) -> None:
    box = page.get_by_label("Name", exact=True)
    box.fill(name)
    box.press("Enter")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("it is the selected model on every page").wait_for(timeout=60_000)
    wait_for_app(page, "it is the selected model on every page")


def sidebar_model(page) -> str:
    sidebar = page.locator('[data-testid="stSidebar"]')
    return sidebar.get_by_role("combobox", name="Model").input_value()


def test_two_sessions_train_different_models_at_once_and_never_mix(server) -> None:
    url, runs_dir = server
    shipped_before = trained_digest()
    with two_users() as (first, second):
        open_train(first, url)
        open_train(second, url)
        # The first user trains a course-net from random weights.
        choose(first, "Architecture", "course-net")
        set_run(first, epochs=2, images=3000)
        # The second fine-tunes the sidebar's shipped model: the cached model every session
        # shares is read, never trained.
        second.get_by_text("Start from the weights of", exact=False).click()
        wait_for_app(second, "Start training")
        set_run(second, epochs=2, images=2000)
        first.get_by_role("button", name="Start training").click()
        second.get_by_role("button", name="Start training").click()
        for page in (first, second):
            page.locator(PROGRESS).get_by_text(re.compile(r"epoch \d/2, step")).wait_for(
                timeout=90_000
            )
        second.get_by_text("Runs training on this server now: 2 of 2.").wait_for()
        first_header, second_header = run_header(first), run_header(second)
        assert re.match(r"Run \d+ — course-net · adam lr 0\.001 · batch 64 — mnist$", first_header)
        batch_norm = SHIPPED.model_args["options"].get("batch_norm", False)
        assert re.match(rf"Run \d+ — lenet5 \(.*batch_norm={batch_norm}.*\) · adam", second_header)
        ids = {re.match(r"Run (\d+)", h)[1] for h in (first_header, second_header)}
        assert len(ids) == 2
        screenshot(first, "sessions-first-training")
        screenshot(second, "sessions-second-training")

        wait_until_finished(first, 2)
        wait_until_finished(second, 2)
        for page in (first, second):
            assert_no_exception(page)
        assert "course-net" not in run_header(second)
        assert "lenet5" not in run_header(first)
        second.get_by_text(f"started from the weights of {SHIPPED.name}", exact=False).wait_for()
        assert first.get_by_text("started from the weights of", exact=False).count() == 0
        # Each session's comparison offers its own run only.
        for page, header in ((first, first_header), (second, second_header)):
            own = re.match(r"Run (\d+)", header)[1]
            chips = page.locator(".st-key-_train_compare_runs").inner_text()  # the runs' pills
            assert f"run {own} (this session)" in chips
            assert len(re.findall(r"\(this session\)", chips)) == 1

        # The first session still has the shipped model selected: the Model page measures it
        # again with the cached model the second session fine-tuned from.
        first_sidebar = first.locator('[data-testid="stSidebar"]')
        first_sidebar.get_by_role("link", name="Model", exact=True).click()
        wait_for_app(first, "Choose a model from")
        first.get_by_role("heading", name=re.compile(f"^{re.escape(SHIPPED.name)}")).wait_for()
        first.get_by_role("button", name="Measure test accuracy on mnist").click()
        measured = first.get_by_text(re.compile(r"^Measured now: "))
        measured.wait_for(timeout=120_000)
        test = data.load_split("mnist", "test")
        model = checkpoints.load_checkpoint(SHIPPED.path).model  # from disk, outside the app
        expected = metrics.predict(model, test).accuracy
        assert measured.inner_text().startswith(f"Measured now: {100 * expected:.2f} %")
        assert_no_exception(first)
        screenshot(first, "sessions-first-model-page")

        # Each saves its run: the new model is selected in its own session only.
        first_sidebar.get_by_role("link", name="Train", exact=True).click()
        wait_for_app(first, "Save this run")
        save_as(first, "session-one")
        save_as(second, "session-two")
        assert sidebar_model(first).startswith("session-one — ")
        assert sidebar_model(second).startswith("session-two — ")
        assert_no_exception(first)
        assert_no_exception(second)

    one = checkpoints.read_card(runs_dir / "session-one.safetensors")
    two = checkpoints.read_card(runs_dir / "session-two.safetensors")
    assert one.architecture == "course-net"
    # the sidebar's model (the best shipped one), fine-tuned with its own options
    options = two.model_args["options"]
    assert two.architecture == SHIPPED.architecture == "lenet5"
    assert options["batch_norm"] == SHIPPED.model_args["options"].get("batch_norm", False)
    assert "initial_weights" not in one.training
    assert two.training["initial_weights"].startswith(SHIPPED.name)
    assert (one.training["train_images"], two.training["train_images"]) == (3000, 2000)
    assert trained_digest() == shipped_before  # nothing shipped was written


def test_closing_one_tab_stops_its_run_only_and_leaves_no_thread(server) -> None:
    url, _ = server
    with two_users(viewport=(1400, 1000)) as (leaving, staying):
        open_train(leaving, url)
        open_train(staying, url)
        idle = server_threads(url)
        assert run_threads(url) == 0
        choose(leaving, "Architecture", "course-net")
        set_run(leaving, epochs=500, images=2000)
        choose(staying, "Architecture", "course-net")
        set_run(staying, epochs=3, images=3000)
        leaving.get_by_role("button", name="Start training").click()
        staying.get_by_role("button", name="Start training").click()
        for page, epochs in ((leaving, 500), (staying, 3)):
            page.locator(PROGRESS).get_by_text(re.compile(rf"epoch \d+/{epochs}, step")).wait_for(
                timeout=90_000
            )
        # Both runs train (the OS thread count is no measure of it: a page's own script threads
        # come and go meanwhile).
        staying.get_by_text(f"{TRAINING_NOW}: 2 of 2.").wait_for(timeout=60_000)
        training = server_threads(url)
        assert run_threads(url) == 2  # one thread per run, each named lens-run-N
        leaving.context.close()  # the tab is gone, and with it its session's websocket
        closed = time.monotonic()

        wait_until_finished(staying, 3)  # the other user's run went on to its end
        assert_no_exception(staying)
        ended = wait_until_no_run_trains(staying, url, closed, limit_s=60)
        print(f"tab closed → its run ended within {ended:.1f} s")
        deadline = time.monotonic() + 30
        while run_threads(url) and time.monotonic() < deadline:
            time.sleep(0.5)
        after = server_threads(url)
        print(f"server threads: {idle} idle, {training} with two runs, {after} after")
        # Both runs' threads are gone. The OS count of all threads is only printed: it moves by
        # a few with the sessions' script runs and the pools torch keeps for the threads it saw.
        assert run_threads(url) == 0, (idle, training, after)
