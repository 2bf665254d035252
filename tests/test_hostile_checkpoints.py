"""Saving under hostile conditions: a real full disk (a tiny tmpfs), a process killed with
SIGKILL in the middle of its saves, and uploads over the size limit. Nothing shipped is ever
touched, no temporary file is left, and every failure is one line a user can act on."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dashboard import models
from dashboard.base import paths
from dashboard.base.errors import CheckpointError
from dashboard.models import checkpoints, uploads
from dashboard.models.checkpoints import Card, load_checkpoint, save_checkpoint
from tests.conftest import REPO_ROOT

MNIST_ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 28, "options": {}}
PAGE = 4096  # tmpfs counts whole pages


@contextmanager
def tiny_disk(folder: Path, size_kib: int) -> Iterator[Path]:
    """A real file system of `size_kib` KiB mounted at `folder` (a tmpfs; needs root)."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a tiny tmpfs")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the disk under `folder` until about `leave` bytes are free; → the filler file."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    filler.write_bytes(b"\0" * ((free - leave) // PAGE * PAGE))
    return filler


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` (trained/: the shipped checkpoints)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "filler.bin"}


def card(architecture: str, notes: str = "") -> Card:
    return Card(
        name=f"{architecture}-mnist",
        architecture=architecture,
        model_args=dict(MNIST_ARGS),
        input_shape=(1, 28, 28),
        dataset="mnist",
        classes=[str(i) for i in range(10)],
        notes=notes,
    )


def same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = model.state_dict()
    return list(mine) == list(state) and all(torch.equal(mine[k], v) for k, v in state.items())


def built(architecture: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model(architecture)


def test_a_full_disk_fails_the_save_in_one_line_and_keeps_the_old_checkpoint(tmp_path: Path):
    shipped = tree_digest(paths.TRAINED_DIR)
    with tiny_disk(tmp_path / "disk", 512) as disk:
        old = built("course-net")
        path = save_checkpoint(old, card("course-net", "old"), disk / "net")
        before = files_in(disk)
        filler = fill(disk, leave=64 * 1024)
        lenet = built("lenet5")  # 247 kB of weights: more than the disk has left
        assert checkpoints.state_bytes(lenet) > free_bytes(disk)

        for target in (path, disk / "other"):  # over an existing run, and a new name
            with pytest.raises(CheckpointError) as caught:
                save_checkpoint(lenet, card("lenet5"), target, overwrite=True)
            weights = target if target.suffix else target.with_suffix(".safetensors")
            assert str(caught.value) == (
                f"disk full while saving {weights} (No space left on device): "
                "free some space and save again"
            )
            assert files_in(disk) == before  # the old run intact, no temporary file left

        loaded = load_checkpoint(path)
        assert loaded.card.notes == "old"
        assert same_weights(loaded.model, old.state_dict())
        with pytest.raises(CheckpointError) as caught:
            checkpoints.ensure_free_space(disk / "runs", checkpoints.state_bytes(lenet))
        assert str(caught.value).startswith(
            f"disk full: the checkpoint needs at least 241.0 kB in {disk / 'runs'} but "
        )
        assert str(caught.value).endswith(" kB is free; free some space first")

        filler.unlink()  # free some space and save again: it works
        save_checkpoint(lenet, card("lenet5", "new"), path, overwrite=True)
        assert load_checkpoint(path).card.notes == "new"
        checkpoints.ensure_free_space(disk / "runs", checkpoints.state_bytes(lenet))
    assert tree_digest(paths.TRAINED_DIR) == shipped


def test_a_path_inside_the_repository_is_shown_relative_to_it(tmp_path: Path):
    inside = paths.REPO_ROOT / "runs" / "x.safetensors"
    assert checkpoints._shown(inside) == "runs/x.safetensors"
    assert checkpoints._shown(tmp_path / "x.safetensors") == str(tmp_path / "x.safetensors")


# A child that saves two different models in turn, forever, until it is killed.
SAVER = textwrap.dedent(
    """
    import sys, torch
    from dashboard.models import checkpoints
    from dashboard import models
    from tests.test_hostile_checkpoints import card, built
    target = sys.argv[1]
    pair = [built("lenet5", seed=0), built("lenet5", seed=1)]
    i = 0
    while True:
        checkpoints.save_checkpoint(pair[i % 2], card("lenet5", f"seed {i % 2}"), target,
                                    overwrite=True)
        if i == 1:
            print("saving", flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("delay_ms", [0, 5, 13, 29])
def test_a_process_killed_while_saving_never_leaves_a_corrupt_checkpoint(
    tmp_path: Path, delay_ms: int
):
    """SIGKILL at some instant of a save loop: the checkpoint on disk is always whole, and its
    card always describes the weights beside it (write to a temporary file, then rename)."""
    target = tmp_path / "net"
    child = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(target)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert child.stdout.readline() == b"saving\n"
        time.sleep(delay_ms / 1000)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    expected = {f"seed {seed}": built("lenet5", seed).state_dict() for seed in (0, 1)}
    weights = target.with_suffix(".safetensors")
    if weights.with_suffix(".json").exists():
        loaded = load_checkpoint(weights)
        state = expected[loaded.card.notes]  # the card names the weights beside it
    else:  # killed between the two renames: bare weights, whole, and no card claiming them
        loaded = load_checkpoint(weights, architecture="lenet5")
        found = [name for name, state in expected.items() if same_weights(loaded.model, state)]
        assert len(found) == 1
        state = expected[found[0]]
    assert same_weights(loaded.model, state)
    # A temporary file the kill left behind is hidden and never listed as a checkpoint.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers), leftovers
    assert [c.path for c in checkpoints.list_checkpoints(tmp_path)] in ([weights], [])


def test_an_upload_over_the_size_limit_is_refused_before_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(models.build_model("lenet5").state_dict(), buffer)
    content = buffer.getvalue()
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 2**20)
    big = content + b"\0" * (2**20 - len(content) + 2**17)  # 1.125 MB
    with pytest.raises(CheckpointError) as caught:
        uploads.store_upload(big, "huge.pt", folder=tmp_path)
    assert str(caught.value) == "huge.pt is 1.1 MB; the limit is 1 MB"
    assert list(tmp_path.iterdir()) == []
    stored = uploads.store_upload(content, "fits.pt", folder=tmp_path)  # under it: stored
    assert stored.read_bytes() == content


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/cron.d/evil.pt", "evil.pt"),
        ("/root/.ssh/authorized_keys.pth", "authorized_keys.pth"),
        ("C:\\Users\\me\\..\\..\\model.safetensors", "model.safetensors"),
        ("..pt", "upload.pt"),
        (".bashrc.pt", "bashrc.pt"),
    ],
)
def test_an_uploaded_file_name_never_becomes_a_path(tmp_path: Path, sent: str, stored: str):
    content = b"the bytes of an upload"
    path = uploads.store_upload(content, sent, folder=tmp_path / "uploads")
    digest = hashlib.sha256(content).hexdigest()[: uploads.HASH_CHARS]
    assert path == tmp_path / "uploads" / digest / stored
    assert path.read_bytes() == content
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == [
        path.relative_to(tmp_path)
    ]
