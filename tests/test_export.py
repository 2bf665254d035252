"""ONNX export: the shipped LeNet-5 and ResNet-18 (CIFAR-10) written as ONNX files, run by
onnxruntime on 32 real test images each and compared with PyTorch's logits (max difference
≤ 1e-4); the command line's JSON and its refusals; the Model page's download."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dashboard import data
from dashboard.base.errors import LensError
from dashboard.models import checkpoints, export
from tests.conftest import REPO_ROOT
from tests.test_cli_train import run_cli
from tests.test_report import open_page

TRAINED = REPO_ROOT / "trained"
IMAGES = 32


def run(model_file: bytes | Path, images: np.ndarray) -> np.ndarray:
    """onnxruntime's logits for float32 images."""
    source = str(model_file) if isinstance(model_file, Path) else model_file
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: images})[0]


def normalized(split: data.Split, card: checkpoints.Card) -> torch.Tensor:
    """The first test images as the model takes them, normalized by hand with the card's
    numbers."""
    norm = card.normalization
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    return (split.images[:IMAGES].float() / 255 - mean) / std


@pytest.mark.parametrize(
    ("name", "dataset"), [("lenet5-mnist", "mnist"), ("resnet18-small-cifar10", "cifar10")]
)
def test_onnxruntime_gives_pytorchs_logits(
    name: str, dataset: str, shared_datasets: Path, tmp_path: Path, one_torch_thread
) -> None:
    loaded = checkpoints.load_checkpoint(TRAINED / f"{name}.safetensors")
    card = loaded.card
    split = data.load_split(dataset, "test", data_root=shared_datasets, download=False)
    x = normalized(split, card)
    with torch.no_grad():
        expected = loaded.model.eval()(x).numpy()
    shape = checkpoints.card_input_shape(card)
    done = export.export_onnx(
        loaded.model,
        shape,
        tmp_path / f"{name}.onnx",
        mean=card.normalization["mean"],
        std=card.normalization["std"],
        classes=card.classes,
    )
    got = run(done.path, x.numpy())
    assert got.shape == expected.shape == (IMAGES, len(card.classes))
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    # any batch size: one image alone gives the same logits as in the batch
    np.testing.assert_allclose(run(done.path, x[:1].numpy()), got[:1], atol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(done.path)).metadata_props}
    assert json.loads(props["cnn_lens.input_shape"]) == list(shape)
    assert json.loads(props["cnn_lens.classes"]) == list(card.classes)
    assert json.loads(props["cnn_lens.mean"]) == card.normalization["mean"]
    assert done.size == done.path.stat().st_size
    assert loaded.model.training is False  # left as it was given (eval)


def export_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("export", *args)


def test_the_command_writes_the_file_and_prints_its_json(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "lenet5.onnx"
    done = export_cli(str(TRAINED / "lenet5-mnist.safetensors"), "--onnx", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # the one JSON object, all of stdout
    assert record["onnx"] == str(out)
    assert record["input_shape"] == [1, 28, 28]
    assert record["opset"] == export.OPSET
    assert record["bytes"] == out.stat().st_size
    images = np.zeros((3, 1, 28, 28), dtype=np.float32)
    assert run(out, images).shape == (3, 10)


def test_the_command_refuses_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    before = sorted(p.name for p in TRAINED.iterdir())
    shipped = TRAINED / "lenet5-mnist.onnx"
    for target, says in (
        (shipped, "inside trained/"),
        (tmp_path / "lenet5.txt", "should end in .onnx"),
        (tmp_path, "should end in .onnx"),
    ):
        done = export_cli(str(TRAINED / "lenet5-mnist.safetensors"), "--onnx", str(target))
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert says in lines[0]
    assert sorted(p.name for p in TRAINED.iterdir()) == before
    assert list(tmp_path.iterdir()) == []
    missing = export_cli(str(tmp_path / "nothing.safetensors"), "--onnx", str(tmp_path / "a.onnx"))
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_folder_given_as_the_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    model = checkpoints.load_checkpoint(TRAINED / "lenet5-mnist.safetensors").model
    with pytest.raises(LensError, match="is a folder"):
        export.export_onnx(model, (1, 28, 28), folder)


def test_the_model_page_downloads_the_onnx_file(deferred: dict) -> None:
    app = open_page("pages/1_Model.py", "ckpt:trained/lenet5-mnist.safetensors")
    (button,) = [b for b in app.get("download_button") if b.proto.label == "ONNX"]
    assert button.proto.deferred_file_id  # made on click, not with the page
    build, mime = deferred["lenet5-mnist.onnx"]
    assert mime == "application/octet-stream"
    content = build()
    loaded = checkpoints.load_checkpoint(TRAINED / "lenet5-mnist.safetensors")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = loaded.model.eval()(x).numpy()
    assert np.abs(run(content, x.numpy()) - expected).max() <= 1e-4
