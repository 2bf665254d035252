"""`python -m dashboard train` and `evaluate` on real MNIST: JSON, files, reproduction, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report, confusion_matrix

from dashboard import cli, data
from dashboard.analysis import metrics
from dashboard.base import paths
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT

# The models are tiny: on 2 shared, busy cores a second thread mostly waits at barriers.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN_ARGS = [
    "--model", "course-net", "--dataset", "mnist", "--epochs", "1",
    "--limit-train", "2000", "--limit-test", "500",
]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dashboard", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> dict:
    out = tmp_path_factory.mktemp("train") / "x"
    result = run_cli("train", *TRAIN_ARGS, "--data-root", str(shared_datasets), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return {"out": out, "payload": json.loads(result.stdout), "stderr": result.stderr}


def test_train_prints_its_json_and_saves_a_checkpoint_with_its_card(run, shared_datasets):
    payload, out = run["payload"], run["out"]
    assert set(payload) >= {
        "checkpoint", "test_accuracy", "seconds", "epochs", "images_per_second",
        "dataset_source", "stopped",
    }  # fmt: skip
    assert payload["checkpoint"] == f"{out}.safetensors"
    assert (payload["epochs"], payload["stopped"]) == (1, None)
    assert 0.5 < payload["test_accuracy"] < 1
    assert "first 2,000 used" in payload["dataset_source"]
    assert "first 500 used" in payload["dataset_source"]
    assert "epoch 1/1: train loss" in run["stderr"]  # the progress goes to stderr

    card = json.loads(Path(f"{out}.json").read_text())
    assert card["architecture"] == "course-net"
    assert card["dataset"] == "mnist"
    # the JSON names the folders read; the card says where they are in the data root
    assert card["dataset_source"] == payload["dataset_source"].replace(
        f"({shared_datasets}/MNIST/raw)", "(MNIST/raw in the data root)"
    )
    assert "MNIST/raw in the data root" in card["dataset_source"]
    assert card["model_args"] == {
        "in_channels": 1, "num_classes": 10, "input_size": 28, "options": {}
    }  # fmt: skip
    assert card["metrics"]["test_accuracy"] == payload["test_accuracy"]
    assert [h["epoch"] for h in card["history"]] == [1]
    assert card["training"]["batch_size"] == 64
    assert card["training"]["train_images"] == 2000
    assert card["command"].startswith("python -m dashboard train --model course-net")
    assert f"--out {out}" in card["command"]

    # The saved weights reproduce the accuracy the run reported on its 500 test images.
    loaded = checkpoints.load_checkpoint(payload["checkpoint"])
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    first_500 = dataclasses.replace(test, images=test.images[:500], labels=test.labels[:500])
    assert metrics.predict(loaded.model, first_500).accuracy == payload["test_accuracy"]
    assert sorted(loaded.filter_history) == [0, 1]


def test_train_records_every_layers_dynamics_in_its_json_card_and_checkpoint(run):
    """2,000 images in batches of 64: 32 steps, sampled at the epoch's end (every 50 otherwise);
    the last epoch's weight norms in the card are the saved weights' own."""
    payload, out = run["payload"], run["out"]
    loaded = checkpoints.load_checkpoint(payload["checkpoint"])
    names = [name for name, _ in loaded.model.named_parameters()]
    summary = payload["dynamics"]
    assert (summary["samples"], summary["every"], summary["window"], summary["epoch"]) == (
        1, 50, 10, 1
    )  # fmt: skip
    assert list(summary["update_ratio"]) == names
    assert all(0 < r < 1 for r in summary["update_ratio"].values())
    assert all(0 <= s <= 1 for s in summary["dead_share"].values())
    assert "  layers: update/weight median" in run["stderr"]
    record = json.loads(Path(f"{out}.json").read_text())["dynamics"]
    assert record["tensors"] == names
    assert list(record["activations"]) == list(summary["dead_share"])
    (epoch,) = record["epochs"]
    assert (epoch["epoch"], epoch["samples"]) == (1, 1)
    weights = dict(loaded.model.named_parameters())
    for name, norm in zip(names, epoch["weight_norm"], strict=True):
        exact = float(torch.linalg.vector_norm(weights[name].detach().double()))
        assert norm == pytest.approx(exact, rel=1e-6), name
    assert loaded.dynamics is not None
    assert loaded.dynamics.steps == [32]
    assert sorted(loaded.dynamics.histograms) == [0, 1]
    for name, counts in loaded.dynamics.histograms[1].items():
        assert int(counts.sum()) == weights[name].numel(), name


def test_evaluate_reports_what_sklearn_computes_from_the_predictions(run, shared_datasets):
    result = run_cli("evaluate", f"{run['out']}.safetensors", "--data-root", str(shared_datasets))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) >= {
        "checkpoint", "dataset", "dataset_source", "split", "accuracy", "confusion_matrix",
        "per_class", "classes", "seconds",
    }  # fmt: skip
    assert (payload["dataset"], payload["split"], payload["images"]) == ("mnist", "test", 10000)
    cm = np.array(payload["confusion_matrix"])
    assert cm.sum() == 10000

    loaded = checkpoints.load_checkpoint(run["out"])
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    pred = metrics.predict(loaded.model, test)
    np.testing.assert_array_equal(cm, confusion_matrix(pred.labels, pred.predicted))
    report = classification_report(
        pred.labels, pred.predicted, target_names=payload["classes"], output_dict=True
    )
    for name in payload["classes"]:
        row = payload["per_class"][name]
        assert row["precision"] == pytest.approx(report[name]["precision"], abs=1e-12)
        assert row["recall"] == pytest.approx(report[name]["recall"], abs=1e-12)
        assert row["f1"] == pytest.approx(report[name]["f1-score"], abs=1e-12)
        assert row["support"] == report[name]["support"]
    assert payload["accuracy"] == pytest.approx(np.trace(cm) / 10000)
    assert "precision" in result.stderr  # the summary table


def test_the_cards_command_reproduces_the_same_weights(run, shared_datasets, tmp_path):
    card = json.loads(Path(f"{run['out']}.json").read_text())
    words = shlex.split(card["command"])
    assert words[:4] == ["python", "-m", "dashboard", "train"]
    words[words.index("--out") + 1] = str(tmp_path / "again")
    again = run_cli(*words[3:], "--data-root", str(shared_datasets))
    assert again.returncode == 0, again.stderr
    first = checkpoints.load_checkpoint(run["out"]).model.state_dict()
    second = checkpoints.load_checkpoint(tmp_path / "again").model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_unknown_model_is_one_line_listing_the_names_without_traceback(shared_datasets):
    result = run_cli("train", "--model", "lenet6", "--dataset", "mnist")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown model 'lenet6'" in lines[0]
    assert "course-net" in lines[0]
    assert "lenet5" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "lenet5", "--dataset", "mnits"], "unknown dataset 'mnits'"),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--lr", "-1"], "learning rate"),
        (
            ["train", "--model", "lenet5", "--dataset", "mnist", "--option", "activation=gelu"],
            "activation='gelu' is not allowed",
        ),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--optimizer", "rmsprop"], "choice"),
        (["evaluate", "no/such/file.safetensors"], "no checkpoint"),
        (["train", "--model", "lenet5", "--dataset", "mnist", "--out", "x.pt"], "safetensors"),
    ],
)
def test_bad_input_fails_in_one_line(capsys, argv, message):
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own checks (choices) exit from parse_args
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_existing_checkpoint_is_not_overwritten_without_the_flag(run, capsys, shared_datasets):
    before = Path(f"{run['out']}.safetensors").read_bytes()
    code = cli.main(
        ["train", *TRAIN_ARGS, "--data-root", str(shared_datasets), "--out", str(run["out"])]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "exists; pass --overwrite" in err
    assert Path(f"{run['out']}.safetensors").read_bytes() == before


def test_a_bare_state_dict_needs_model_and_then_evaluates_like_the_card(
    run, capsys, shared_datasets, tmp_path
):
    bare = tmp_path / "weights.pt"
    torch.save(checkpoints.load_checkpoint(run["out"]).model.state_dict(), bare)
    assert cli.main(["evaluate", str(bare)]) == 2
    assert "--model" in capsys.readouterr().err
    argv = ["evaluate", str(bare), "--model", "course-net", "--dataset", "mnist", "--limit", "500"]
    assert cli.main([*argv, "--data-root", str(shared_datasets)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["images"] == 500
    assert payload["accuracy"] == run["payload"]["test_accuracy"]


def test_ctrl_c_stops_after_the_step_and_saves_the_partial_run(shared_datasets, tmp_path):
    out = tmp_path / "partial"
    args = [*TRAIN_ARGS, "--epochs", "40", "--data-root", str(shared_datasets), "--out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "train", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    seen = b""
    deadline = time.monotonic() + 120
    while b"epoch 1/40" not in seen and time.monotonic() < deadline:  # the bar: fit is running
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (seen + stderr).decode()
    payload = json.loads(stdout)
    assert payload["stopped"].startswith("stopped by user at epoch ")
    assert payload["epochs"] < 40
    card = checkpoints.read_card(out)
    assert card.notes.startswith(f"partial run: {payload['stopped']}")
    assert len(card.history) == payload["epochs"]
    assert card.metrics["test_accuracy"] == payload["test_accuracy"]


def test_model_options_are_typed_in_the_card_and_rebuild_the_model(
    capsys, shared_datasets, tmp_path
):
    out = tmp_path / "lenet"
    argv = [
        "train", "--model", "lenet5", "--dataset", "mnist", "--epochs", "1",
        "--limit-train", "257", "--limit-test", "100", "--option", "batch_norm=true",
        "--option", "activation=tanh", "--data-root", str(shared_datasets), "--out", str(out),
    ]  # fmt: skip
    # 257 images in batches of 64 would end in a batch of one, which BatchNorm1d cannot train.
    assert cli.main(argv) == 0, capsys.readouterr().err
    card = checkpoints.read_card(out)
    assert card.model_args["options"] == {"batch_norm": True, "activation": "tanh"}
    assert "--option batch_norm=true --option activation=tanh" in card.command
    assert card.history[0]["steps"] == 4
    model = checkpoints.load_checkpoint(out).model
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"BatchNorm1d", "Tanh"} <= kinds


def test_a_file_that_is_not_a_checkpoint_is_one_line(capsys, tmp_path):
    garbage = tmp_path / "notes.safetensors"
    garbage.write_bytes(b"these are not weights\n" * 10)
    assert cli.main(["evaluate", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "notes.safetensors" in err


def test_without_out_the_run_goes_to_runs_with_a_timestamp(
    capsys, monkeypatch, shared_datasets, tmp_path
):
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path)
    argv = [*TRAIN_ARGS, "--limit-train", "128", "--limit-test", "64"]
    assert cli.main(["train", *argv, "--data-root", str(shared_datasets)]) == 0
    payload = json.loads(capsys.readouterr().out)
    saved = Path(payload["checkpoint"])
    assert saved.parent == tmp_path
    assert re.fullmatch(r"course-net-mnist-\d{8}-\d{6}\.safetensors", saved.name)
    assert saved.with_suffix(".json").is_file()
