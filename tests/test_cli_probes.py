"""`python -m dashboard probes`: strict JSON in forward order with the library's numbers, a
table otherwise, and one-line failures."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dashboard import cli, data
from dashboard.analysis import representations as rep
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.test_hostile_cli import cli_run  # in this process: no interpreter start per case

LENET5 = "trained/lenet5-mnist.safetensors"


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CNN_LENS_CACHE": str(tmp_path / "cache"),
        "CNN_LENS_CONFIG": str(tmp_path / "config"),
        "CNN_LENS_RUNS": str(tmp_path / "runs"),
    }
    return subprocess.run(
        [sys.executable, "-m", "dashboard", "probes", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_probes_json_equals_the_library_in_forward_order(
    shared_datasets: Path, tmp_path: Path
) -> None:
    result = run_cli(
        LENET5,
        "--data-root",
        str(shared_datasets),
        "--train-images",
        "600",
        "--test-images",
        "400",
        "--json",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    payload = _strict(result.stdout)
    assert list(payload) == ["layers", "model_accuracy", "train_images", "test_images"]
    assert (payload["train_images"], payload["test_images"]) == (600, 400)
    assert all(
        list(layer) == ["layer", "features", "probe_accuracy", "knn_accuracy", "silhouette"]
        for layer in payload["layers"]
    )
    loaded = checkpoints.load_checkpoint(REPO_ROOT / LENET5)
    blocks = rep.model_blocks(loaded.model, (1, 28, 28))
    assert [layer["layer"] for layer in payload["layers"]] == [b.name for b in blocks]
    assert [layer["features"] for layer in payload["layers"]] == [6, 6, 16, 16, 120, 84, 10]
    # The same numbers as the library on the same seeded samples (first, middle, last block)
    checked = [blocks[0], blocks[3], blocks[-1]]
    sets = {}
    for split, count in (("train", 600), ("test", 400)):
        images = _as_trained(data.load_split("mnist", split, data_root=shared_datasets), loaded)
        chosen = rep.sample_indices(len(images), count)
        sets[split] = rep.extract_features(loaded.model, images, checked, indices=chosen)
    expected = rep.probe_layers(sets["train"], sets["test"]).to_json()
    assert payload["model_accuracy"] == pytest.approx(expected["model_accuracy"])
    printed = [payload["layers"][i] for i in (0, 3, -1)]
    for got, want in zip(printed, expected["layers"], strict=True):
        assert got["layer"] == want["layer"]
        assert got["probe_accuracy"] == pytest.approx(want["probe_accuracy"])
        assert got["knn_accuracy"] == pytest.approx(want["knn_accuracy"])
        assert got["silhouette"] == pytest.approx(want["silhouette"], abs=1e-6)
    # …and the model's own accuracy is its accuracy on those test images
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    chosen = torch.as_tensor(rep.sample_indices(len(test), 400))
    with torch.no_grad():
        logits = loaded.model(data.normalize(test.images[chosen], *_stats(loaded.card)))
    own = (logits.argmax(1) == test.labels[chosen]).double().mean().item()
    assert payload["model_accuracy"] == pytest.approx(own)
    assert "train features" in result.stderr  # progress went to stderr


def _stats(card: checkpoints.Card) -> tuple[list[float], list[float]]:
    return card.normalization["mean"], card.normalization["std"]


def _as_trained(split: data.Split, loaded: checkpoints.LoadedCheckpoint) -> data.Split:
    """The split normalized with the statistics on the checkpoint's card."""
    mean, std = _stats(loaded.card)
    info = dataclasses.replace(split.info, mean=tuple(mean), std=tuple(std))
    return dataclasses.replace(split, info=info)


def _cifar_folder(shared_datasets: Path, root: Path, train: int, test: int) -> Path:
    """A user's image folder: the first real CIFAR-10 JPEGs of each class, copied (links out
    of a folder are not followed)."""
    for split, count in (("train", train), ("test", test)):
        for source in sorted((shared_datasets / "cifar10-jpg" / split).iterdir()):
            folder = root / split / source.name
            folder.mkdir(parents=True)
            for image in sorted(source.iterdir())[:count]:
                shutil.copyfile(image, folder / image.name)
    return root


def test_probes_table_for_a_resnet_on_an_image_folder(
    shared_datasets: Path, tmp_path: Path
) -> None:
    folder = _cifar_folder(shared_datasets, tmp_path / "pictures", train=10, test=5)
    result = run_cli(
        "trained/resnet18-small-cifar10.safetensors",
        "--dataset",
        f"folder:{folder}",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "features", "probe", "%", "k-NN", "%", "silhouette"]
    assert [line.split()[0] for line in lines[1:-1]] == [
        "conv1",
        *[f"layer{s}.{i}" for s in range(1, 5) for i in range(2)],
        "avgpool",
        "fc",
    ]
    assert lines[-1].startswith("the model itself: ")
    assert lines[-1].endswith("on the same 50 test images (probes trained on 100)")
    assert "train: 100 images of image folder pictures" in result.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["trained/no-such.safetensors"], "no-such"),
        ([LENET5, "--dataset", "imagenet"], "unknown dataset"),
        ([LENET5, "--dataset", "cifar10"], "1-channel images but cifar10 has 3"),
        ([LENET5, "--train-images", "0"], "expected a number ≥ 1"),
    ],
)
def test_probes_fail_in_one_line(
    args: list[str],
    reason: str,
    shared_datasets: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the paths above are the repository's
    code, out, err = cli_run(capsys, "probes", *args, "--data-root", str(shared_datasets), "--json")
    assert code == cli.EXIT_BAD_INPUT
    assert out == ""
    message = err.strip()
    assert "\n" not in message
    assert "Traceback" not in message
    assert reason in message
