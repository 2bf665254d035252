"""A real run that records its training dynamics, shared by the figure and page tests: LeNet-5
trained by the command line for 2 epochs on 2,000 MNIST digits, sampled every 5 steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

EVERY = 5  # steps between samples: 32 steps an epoch give 14 samples over the run


@pytest.fixture(scope="session")
def dynamics_checkpoint(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dynamics") / "lenet5-dynamics"
    command = [sys.executable, "-m", "dashboard", "train", "--model", "lenet5"]
    command += ["--dataset", "mnist", "--epochs", "2", "--limit-train", "2000"]
    command += ["--limit-test", "500", "--seed", "0", "--dynamics-every", str(EVERY)]
    command += ["--data-root", str(shared_datasets), "--out", str(out)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
    return out.with_suffix(".safetensors")
