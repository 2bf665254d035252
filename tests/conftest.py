"""Shared test fixtures: where the real datasets are, and small real slices of them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
# The real datasets lie in ../shared/datasets beside the repository (CI clones it there too).
SHARED_DATASETS = Path(
    os.environ.get("CNN_LENS_TEST_DATA", REPO_ROOT.parent / "shared" / "datasets")
).resolve()


# Pages and commands under test read the real datasets unless a test says otherwise.
os.environ.setdefault("CNN_LENS_DATA", str(SHARED_DATASETS))
# A data root chosen in the app is remembered in a settings file: never the user's own.
os.environ.setdefault("CNN_LENS_CONFIG", tempfile.mkdtemp(prefix="cnn-lens-config-"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder holding MNIST/raw and cifar10-jpg; the suite needs it."""
    if not (SHARED_DATASETS / "MNIST" / "raw").is_dir():
        pytest.fail(f"real datasets not found at {SHARED_DATASETS} (set CNN_LENS_TEST_DATA)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def lenet5_mnist_checkpoint(
    shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real LeNet-5 trained by the CLI for one epoch on 8,000 MNIST digits (~92 % on the test
    split): seconds on an idle machine, and mistakes enough to browse."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("checkpoints") / "lenet5-test"
    command = [sys.executable, "-m", "dashboard", "train", "--model", "lenet5"]
    command += ["--dataset", "mnist", "--epochs", "1", "--limit-train", "8000", "--seed", "0"]
    command += ["--limit-test", "1000"]  # the card's accuracy only; tests measure their own
    command += ["--data-root", str(shared_datasets), "--out", str(out)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    return out.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model tests (restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served headless for one browser-test module, with an empty runs/ folder: the
    shipped checkpoints only (modules that need saved runs override this fixture)."""
    from tests.browser import require_chromium, streamlit_server

    require_chromium()
    runs = tmp_path_factory.mktemp("runs")
    with streamlit_server(env={"CNN_LENS_RUNS": str(runs)}) as url:
        yield url
