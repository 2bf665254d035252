"""DistributedDataParallel: two CPU processes (gloo) started by torchrun train the same model
as one process does, because they see the same global batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dashboard import data, models, training
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT

SETTINGS = {"epochs": 1, "batch_size": 64, "lr": 0.05, "optimizer": "sgd", "seed": 0}


def test_two_gloo_processes_match_one_process(shared_datasets: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "dashboard", "train", "--model", "course-net", "--dataset", "mnist",
        "--data-root", str(shared_datasets), "--limit-train", "2000", "--limit-test", "500",
        "--epochs", "1", "--batch-size", "64", "--lr", "0.05", "--optimizer", "sgd",
        "--seed", "0", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # one object: only rank 0 prints
    assert payload["device"] == "cpu, 2 processes (gloo)"
    card = checkpoints.read_card(out)
    assert card.training["processes"] == 2
    assert card.training["batch_size"] == 64  # the global batch: 32 per process
    assert card.command.startswith("torchrun --nproc_per_node=2 -m dashboard train")

    # The same run in this one process: same seed, same data, batches of 64.
    train = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    torch.manual_seed(0)
    model = models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)
    single = training.fit(
        model,
        data.take_first(train, 2000),
        data.take_first(test, 500),
        training.TrainConfig(**SETTINGS),
    )
    # SGD without momentum: the only difference is the order of float additions.
    distributed = checkpoints.load_checkpoint(out).model.state_dict()
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(distributed[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    (ddp_epoch,) = card.history
    (one_epoch,) = single.history
    assert ddp_epoch["train_loss"] == pytest.approx(one_epoch.train_loss, rel=1e-5)
    assert ddp_epoch["train_accuracy"] == one_epoch.train_accuracy
    assert ddp_epoch["test_accuracy"] == pytest.approx(one_epoch.test_accuracy, abs=0.002)
    assert payload["test_accuracy"] == ddp_epoch["test_accuracy"]
