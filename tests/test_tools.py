"""The scripts in tools/ that make the data the tests read: the shipped CIFAR-10 sample is what
its script draws from the full set, and the JPEG copy of CIFAR-10 can be written from the
official archive with the settings of the copy the tests use."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dashboard import data
from dashboard.base import paths

SAMPLE = paths.CIFAR10_SAMPLE_DIR
CLASSES = data.dataset_info("cifar10").classes


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *args]
    return subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=300)


def tree(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.full_set("CIFAR-10")
def test_cifar10_sample_is_what_its_script_draws_from_the_full_set(
    tmp_path: Path, shared_datasets: Path
) -> None:
    out = tmp_path / "sample"
    source = shared_datasets / "cifar10-jpg"
    result = run_tool("tools/make_cifar10_sample.py", "--source", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    shipped = tree(SAMPLE)
    assert tree(out) == shipped  # the README with its digest included
    jpegs = [p for p in shipped if p.suffix == ".jpg"]
    assert len(jpegs) == 3000
    for relative in jpegs:  # each is the full set's file of the same name, byte for byte
        assert (source / relative).read_bytes() == shipped[relative]


def test_the_cifar10_sample_is_balanced_and_says_where_it_comes_from() -> None:
    for split, per_class in (("train", 200), ("test", 100)):
        counts = [len(list((SAMPLE / split / name).glob("*.jpg"))) for name in CLASSES]
        assert counts == [per_class] * 10
    readme = " ".join((SAMPLE / "README.md").read_text().split())
    for words in ("Krizhevsky", "License", "tools/make_cifar10_sample.py", "every 25th"):
        assert words in readme


def _cifar_batches(folder: Path, train: list[tuple[np.ndarray, int]], test: list) -> None:
    """CIFAR-10's python archive layout: five train batches, a test batch, the class names."""
    folder.mkdir(parents=True)

    def dump(name: str, entry: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    def batch(images: list[tuple[np.ndarray, int]]) -> dict:
        pixels = np.stack([image.reshape(-1) for image, _ in images])  # (N, 3072): R, G, B planes
        return {"data": pixels, "labels": [label for _, label in images]}

    for i in range(5):
        dump(f"data_batch_{i + 1}", batch(train[i::5]))
    dump("test_batch", batch(test))
    dump("batches.meta", {"label_names": list(CLASSES)})


def test_cifar10_to_jpeg_writes_the_archive_as_the_image_folder_the_tests_read(
    tmp_path: Path,
) -> None:
    # Real photos: the shipped sample's, in an archive of 40 training and 20 test images.
    loaded = {
        s: data.load_split("cifar10", s, data_root=tmp_path / "none") for s in ("train", "test")
    }
    pick = {"train": range(0, 2000, 50), "test": range(0, 1000, 50)}
    images = {
        s: [(loaded[s].images[i].numpy(), int(loaded[s].labels[i])) for i in pick[s]] for s in pick
    }
    root = tmp_path / "data"
    _cifar_batches(root / "cifar-10-batches-py", images["train"], images["test"])

    result = run_tool("tools/cifar10_to_jpeg.py", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{root / 'cifar10-jpg'}: 40 train and 20 test images"
    for split in ("train", "test"):
        # the archive's order: batch 1, batch 2, … for train
        in_order = (
            images[split]
            if split == "test"
            else [item for i in range(5) for item in images[split][i::5]]
        )
        seen = [0] * 10
        for pixels, label in in_order:
            name = CLASSES[label]
            path = root / "cifar10-jpg" / split / name / f"{seen[label]:04d}.jpg"
            seen[label] += 1
            # oracle: Pillow's own default JPEG of the same pixels
            expected = io.BytesIO()
            PIL.Image.fromarray(pixels.transpose(1, 2, 0)).save(expected, format="JPEG")
            assert path.read_bytes() == expected.getvalue()
        written = sorted((root / "cifar10-jpg" / split).rglob("*.jpg"))
        assert len(written) == len(in_order)
    # the settings of the JPEG copy the tests use: its quantization tables and subsampling
    ours = PIL.Image.open(next((root / "cifar10-jpg" / "test").rglob("*.jpg")))
    theirs = PIL.Image.open(SAMPLE / "test" / "cat" / "0000.jpg")
    assert ours.quantization == theirs.quantization
    assert ours.layer == theirs.layer  # (component, h, v sampling, table) per channel
    # and the app reads it as CIFAR-10
    (root / "cifar-10-batches-py").rename(tmp_path / "archive-moved-away")
    copy = data.load_split("cifar10", "test", data_root=root, download=False)
    assert copy.source.startswith("CIFAR-10 (JPEG copy), 20 test images")
    assert torch.bincount(copy.labels, minlength=10).tolist() == seen


def test_cifar10_to_jpeg_refuses_in_one_line(tmp_path: Path) -> None:
    result = run_tool("tools/cifar10_to_jpeg.py", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'cifar-10-batches-py'} not found: download CIFAR-10 there first (see --help)"
    ]
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar10-jpg").mkdir()
    result = run_tool("tools/cifar10_to_jpeg.py", str(tmp_path))
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
