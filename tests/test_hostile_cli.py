"""The command line handed hostile input: every bad checkpoint, training setting, folder, name
and a real full disk ends in a non-zero exit with one line on stderr (never a traceback), and
what does run says what it did. Real MNIST, real training, real files."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dashboard import cli, models
from dashboard.base import paths
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.test_hostile_checkpoints import (
    card,
    fill,
    free_bytes,
    same_weights,
    tiny_disk,
    tree_digest,
)
from tests.test_images import REPORTED_PNG, short_png

QUICK = ["--epochs", "1", "--limit-train", "512", "--limit-test", "200"]


class Exploit:
    """Unpickling this creates `marker` (if anything ever unpickled it unsafely)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def cli_run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`python -m dashboard ARGV` in this process → (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's own checks exit from parse_args
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_failure(capsys: pytest.CaptureFixture, *argv: str, trained: bool = False) -> str:
    """Exit 2, nothing on stdout, and the reason as stderr's one line (its last one after
    the progress lines of a run that `trained`)."""
    code, out, err = cli_run(capsys, *argv)
    assert code == cli.EXIT_BAD_INPUT, err
    assert out == ""
    assert "Traceback" not in err
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    if trained:
        # an epoch's progress line and its layers' dynamics line
        assert all(line.startswith(("epoch 1/1", "layers:")) for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    return lines[-1]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Decoded folders go to a temporary cache, saved runs to a temporary runs/."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")


@pytest.fixture(scope="module")
def course_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    return checkpoints.save_checkpoint(
        models.build_model("course-net"), card("course-net"), folder / "course"
    )


# --- checkpoints -------------------------------------------------------------------------------


def test_a_pickle_that_would_run_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"features.conv1.weight": torch.zeros(6, 1, 5, 5), "x": Exploit(marker)}, evil)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"w": Exploit(marker)}))
    for path in (evil, raw):
        line = one_line_failure(capsys, "evaluate", str(path), "--model", "lenet5")
        assert f"{path.name} holds a pickled Python object, not a state dict" in line
        # `summary` reads a checkpoint's card only: shapes do not depend on the weights.
        line = one_line_failure(capsys, "summary", str(path))
        assert line.endswith(f"no card {path.stem}.json beside {path.name}")
        code, out, _ = cli_run(capsys, "summary", str(path), "--model", "lenet5")
        assert code == 0
        assert out.startswith(f"{path.name} — input 1×28×28\n")  # lenet5's table; not unpickled
    assert not marker.exists()
    # In a process of its own too: the exit code and the one line are the command's own.
    result = subprocess.run(
        [sys.executable, "-m", "dashboard", "evaluate", str(evil), "--model", "lenet5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused_with_how_to_save_a_state_dict(tmp_path, capsys):
    whole = tmp_path / "whole.pt"
    torch.save(models.build_model("lenet5"), whole)
    line = one_line_failure(capsys, "evaluate", str(whole), "--model", "lenet5")
    assert line.endswith(
        "whole.pt holds a pickled Python object, not a state dict; it was not loaded (that "
        "could run code). Save a state dict instead: torch.save(model.state_dict(), 'whole.pt')"
    )


def test_truncated_corrupt_and_foreign_files_are_one_line(course_checkpoint, tmp_path, capsys):
    whole = course_checkpoint.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "cut.json").write_bytes(course_checkpoint.with_suffix(".json").read_bytes())
    line = one_line_failure(capsys, "evaluate", str(cut))
    assert "cut.safetensors is not a valid safetensors file (" in line
    assert line.endswith("it may be truncated or damaged")

    image = tmp_path / "photo.safetensors"
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    assert "photo.safetensors is not a valid safetensors file" in one_line_failure(
        capsys, "evaluate", str(image), "--model", "lenet5"
    )
    notes = tmp_path / "notes.pt"
    notes.write_text("epoch 1: loss 0.31\n")
    assert one_line_failure(capsys, "evaluate", str(notes), "--model", "lenet5").endswith(
        "notes.pt is not a checkpoint: neither a safetensors file nor a PyTorch state dict"
    )


def test_the_wrong_architecture_gets_the_mismatch_report(course_checkpoint, capsys):
    line = one_line_failure(capsys, "evaluate", str(course_checkpoint), "--model", "lenet5")
    assert line.startswith("python -m dashboard evaluate: course.safetensors does not fit lenet5: ")
    assert "missing key" in line
    assert "unexpected key" in line


def test_the_wrong_number_of_classes_names_both_counts(tmp_path, capsys, shared_datasets):
    torch.manual_seed(0)
    hundred = models.build_model("lenet5", num_classes=100)
    wide = card("lenet5")
    wide.model_args = {**wide.model_args, "num_classes": 100}
    wide.classes = [str(i) for i in range(100)]
    path = checkpoints.save_checkpoint(hundred, wide, tmp_path / "hundred")
    # The checkpoint is whole, but MNIST has 10 classes, not its 100.
    line = one_line_failure(
        capsys, "evaluate", str(path), "--limit", "100", "--data-root", str(shared_datasets)
    )
    assert line.endswith("hundred.safetensors has 100 outputs but mnist has 10 classes")
    # A card that says 10 classes beside weights with 100.
    card_path = path.with_suffix(".json")
    card_path.write_text(card_path.read_text().replace('"num_classes": 100', '"num_classes": 10'))
    line = one_line_failure(capsys, "evaluate", str(path))
    assert line.endswith(
        "hundred.safetensors does not fit lenet5: 2 shape mismatches (classifier.fc3.weight: "
        "file 100×84, model 10×84; classifier.fc3.bias: file 100, model 10) — the file has 100 "
        "classes, the model 10"
    )


def test_a_file_over_the_size_limit_is_not_read(course_checkpoint, capsys, monkeypatch):
    size = course_checkpoint.stat().st_size
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", size - 1)
    line = one_line_failure(capsys, "evaluate", str(course_checkpoint))
    assert line.endswith(
        f"course.safetensors is {size / 1024:.1f} kB, over the {(size - 1) / 1024:.1f} kB limit "
        "for a checkpoint; it was not read"
    )


# --- training settings -------------------------------------------------------------------------


def train_args(shared_datasets: Path, out: Path, *extra: str, model: str = "course-net"):
    return [
        "train", "--model", model, "--dataset", "mnist", *QUICK, "--seed", "0",
        "--data-root", str(shared_datasets), "--out", str(out), *extra,
    ]  # fmt: skip


def test_a_nan_loss_fails_in_one_line_and_saves_nothing(tmp_path, capsys, shared_datasets):
    out = tmp_path / "nan"
    argv = train_args(shared_datasets, out, "--optimizer", "sgd", "--lr", "1e9")
    line = one_line_failure(capsys, *argv, trained=True)
    assert re.fullmatch(
        r"python -m dashboard train: loss became (NaN|infinite) at epoch 1, step \d+: "
        r"lower the learning rate \(now 1e\+09\)",
        line,
    ), line
    assert list(tmp_path.glob("nan*")) == []


def test_learning_rate_zero_trains_leaving_the_weights_as_seeded(tmp_path, capsys, shared_datasets):
    out = tmp_path / "still"
    code, stdout, err = cli_run(capsys, *train_args(shared_datasets, out, "--lr", "0"))
    assert code == 0, err
    assert "note: learning rate is 0: the weights will not change" in err.splitlines()
    torch.manual_seed(0)
    seeded = models.build_model("course-net")  # oracle: the same seed, never trained
    assert same_weights(checkpoints.load_checkpoint(out).model, seeded.state_dict())
    assert json.loads(stdout)["checkpoint"] == str(out) + ".safetensors"


def test_a_batch_larger_than_the_dataset_uses_the_whole_set(tmp_path, capsys, shared_datasets):
    out = tmp_path / "big-batch"
    argv = train_args(shared_datasets, out, "--batch-size", "5000")
    code, _, err = cli_run(capsys, *argv)
    assert code == 0, err
    assert "note: batch size 5000 is larger than the 512 training images; using 512" in err
    saved = checkpoints.read_card(out)
    assert saved.training["batch_size"] == 512
    assert saved.history[0]["steps"] == 1


def test_zero_epochs_and_other_impossible_numbers_are_refused(tmp_path, capsys, shared_datasets):
    out = tmp_path / "zero"
    base = ["train", "--model", "course-net", "--dataset", "mnist", "--out", str(out)]
    assert one_line_failure(capsys, *base, "--epochs", "0").endswith(
        "argument --epochs: expected a number ≥ 1, got 0"
    )
    assert "expected a number ≥ 1, got 0" in one_line_failure(capsys, *base, "--batch-size", "0")
    assert "learning rate must be a number ≥ 0, got -0.1" in one_line_failure(
        capsys, *base, "--lr", "-0.1"
    )
    assert "learning rate must be a number ≥ 0, got nan" in one_line_failure(
        capsys, *base, "--lr", "nan"
    )
    assert list(tmp_path.iterdir()) == []


# --- image folders -----------------------------------------------------------------------------


def write_pngs(folder: Path, count: int, seed: int) -> None:
    """`count` real grayscale PNGs (random strokes) named 00.png, 01.png, …"""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = (rng.random((20, 20)) > 0.7).astype(np.uint8) * 255
        PIL.Image.fromarray(pixels, mode="L").save(folder / f"{i:02d}.png")


def test_an_empty_folder_and_a_folder_of_one_class_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_failure(
        capsys, "train", "--model", "course-net", "--dataset", f"folder:{empty}"
    )
    assert line.endswith(
        f"image folder {empty} needs at least two class subfolders (found 0): put each class's "
        "images in its own folder"
    )
    single = tmp_path / "single"
    write_pngs(single / "cats", 5, seed=0)
    line = one_line_failure(
        capsys, "train", "--model", "course-net", "--dataset", f"folder:{single}"
    )
    assert "needs at least two class subfolders (found 1)" in line
    missing = tmp_path / "nowhere"
    assert one_line_failure(
        capsys, "train", "--model", "course-net", "--dataset", f"folder:{missing}"
    ).endswith(f"image folder {missing} does not exist")
    assert not paths.RUNS_DIR.exists() or list(paths.RUNS_DIR.iterdir()) == []


def test_unreadable_images_in_a_folder_are_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "shapes"
    write_pngs(root / "a", 10, seed=1)
    write_pngs(root / "b", 10, seed=2)
    # Every 5th file of a class is held out as test (indices 4 and 9): break one of each split.
    (root / "a" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "b" / "04.png").write_text("not an image at all")
    out = tmp_path / "folder-run"
    code, stdout, err = cli_run(
        capsys, "train", "--model", "course-net", "--dataset", f"folder:{root}",
        "--epochs", "1", "--input-size", "28", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    source = json.loads(stdout)["dataset_source"]
    train_part, test_part = source.split("; test: ")
    assert train_part.endswith(
        f"15 train images ({root}), 1 unreadable files skipped (a/03.png could not be decoded "
        "(its PNG header is damaged))"
    )
    assert test_part.endswith(
        f"3 test images ({root}), 1 unreadable files skipped (b/04.png is not an image in a "
        "format read here (PNG, JPEG, GIF, BMP, TIFF, WebP or PPM))"
    )
    saved = checkpoints.read_card(out)
    assert (saved.training["train_images"], saved.training["test_images"]) == (15, 3)
    # the card names no folder of this machine: the last two names of the folder only
    assert saved.dataset_source == source.replace(f"({root})", f"(…/{root.parent.name}/shapes)")


def cli_process(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m dashboard ARGV` in its own process: a crash there is an exit code here."""
    env = {**os.environ, paths.CACHE_ENV: str(tmp_path / "cache"), "CNN_LENS_RUNS": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "dashboard", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_69_byte_png_is_skipped_and_counted_not_a_crash(tmp_path):
    """The report's PNG (40,000×40,000 claimed, 100 bytes of image data) and a 32×32 PNG cut
    the same way both killed the old folder decoder (libpng, SIGSEGV: exit 139)."""
    root = tmp_path / "shapes"
    write_pngs(root / "a", 10, seed=1)
    write_pngs(root / "b", 10, seed=2)
    (root / "a" / "05_bomb.png").write_bytes(REPORTED_PNG)
    (root / "b" / "05_cut.png").write_bytes(short_png(32, 32))
    out = tmp_path / "folder-run"
    ran = cli_process(
        tmp_path, "train", "--model", "course-net", "--dataset", f"folder:{root}",
        "--epochs", "1", "--input-size", "28", "--out", str(out),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    train_part = json.loads(ran.stdout)["dataset_source"].split("; test: ")[0]
    assert train_part.endswith(
        f"16 train images ({root}), 2 unreadable files skipped (a/05_bomb.png claims to be "
        "1,600,000,000 pixels: refused as too large; b/05_cut.png could not be decoded (image "
        "file is truncated (0 bytes not processed)))"
    )

    only_bad = tmp_path / "bad"  # every train image bad: one line, exit 2
    (only_bad / "a").mkdir(parents=True)
    (only_bad / "b").mkdir()
    (only_bad / "a" / "bomb.png").write_bytes(REPORTED_PNG)
    (only_bad / "b" / "cut.png").write_bytes(short_png(32, 32))
    ran = cli_process(tmp_path, "train", "--model", "course-net", "--dataset", f"folder:{only_bad}")
    assert ran.returncode == cli.EXIT_BAD_INPUT, ran.stderr
    assert ran.stderr.strip().splitlines() == [
        f"python -m dashboard train: no readable train images in {only_bad} (2 unreadable "
        "files: a/bomb.png claims to be 1,600,000,000 pixels: refused as too large)"
    ]


def test_the_root_of_the_file_system_or_a_file_is_refused_in_one_line(tmp_path, capsys):
    line = one_line_failure(capsys, "train", "--model", "course-net", "--dataset", "folder:/")
    assert line == (
        "python -m dashboard train: image folder / is the root of the file system: give the "
        "folder that holds one subfolder per class"
    )
    picture = tmp_path / "cat.png"
    write_pngs(tmp_path, 1, seed=0)
    (tmp_path / "00.png").rename(picture)
    line = one_line_failure(capsys, "evaluate", "trained/lenet5-mnist.safetensors",
                            "--dataset", f"folder:{picture}")  # fmt: skip
    assert line == (
        f"python -m dashboard evaluate: image folder {picture} is a file: give the folder that "
        "holds one subfolder per class"
    )


def test_an_empty_class_folder_trains_with_a_note(tmp_path, capsys):
    root = tmp_path / "shapes"
    write_pngs(root / "a", 10, seed=1)
    write_pngs(root / "b", 10, seed=2)
    (root / "c").mkdir()
    code, _, err = cli_run(
        capsys, "train", "--model", "course-net", "--dataset", f"folder:{root}",
        "--epochs", "1", "--input-size", "28", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: class")]
    assert notes == [
        "note: class folder c has no train images but still counts as a class",
        "note: class folder c has no test images but still counts as a class",
    ]
    assert checkpoints.read_card(tmp_path / "run").classes == ["a", "b", "c"]


# --- names and paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "/etc/evil", "a/b", ".hidden", "..", "con"])
def test_names_cannot_write_outside_the_runs_folder(name, tmp_path, capsys):
    argv = ["train", "--model", "course-net", "--dataset", "mnist", "--name", name]
    line = one_line_failure(capsys, *argv)
    assert line.startswith("python -m dashboard train: ")
    assert not paths.RUNS_DIR.exists() or list(paths.RUNS_DIR.iterdir()) == []
    assert not (tmp_path / "escape.safetensors").exists()


# --- a real full disk --------------------------------------------------------------------------


def test_a_full_disk_fails_before_training_when_the_weights_cannot_fit(tmp_path, capsys):
    shipped = tree_digest(paths.TRAINED_DIR)
    with tiny_disk(tmp_path / "disk", 256) as disk:
        fill(disk, leave=16 * 1024)
        free = free_bytes(disk)
        argv = ["train", "--model", "lenet5", "--dataset", "mnist", "--out", str(disk / "x")]
        line = one_line_failure(capsys, *argv)
        assert line == (
            f"python -m dashboard train: disk full: the checkpoint needs at least 241.0 kB in "
            f"{disk} but {free / 1024:.1f} kB is free; free some space first"
        )
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]
    assert tree_digest(paths.TRAINED_DIR) == shipped


def test_a_disk_that_fills_up_fails_the_save_in_one_line_with_no_temp_file(
    tmp_path, capsys, shared_datasets
):
    """The weights fit the free space, the weights with their filter snapshots do not: the
    run trains, then the save fails (a disk filled by something else meanwhile)."""
    shipped = tree_digest(paths.TRAINED_DIR)
    with tiny_disk(tmp_path / "disk", 256) as disk:
        fill(disk, leave=48 * 1024)
        model_bytes = checkpoints.state_bytes(models.build_model("course-net"))
        assert model_bytes < free_bytes(disk) < 2 * model_bytes
        line = one_line_failure(capsys, *train_args(shared_datasets, disk / "x"), trained=True)
        assert line == (
            f"python -m dashboard train: disk full while saving {disk / 'x.safetensors'} "
            "(No space left on device): free some space and save again"
        )
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]  # no temporary file
    assert tree_digest(paths.TRAINED_DIR) == shipped
