"""Uploaded checkpoints on the server's disk: a refused upload (a pickle that would run code, a
file of the wrong architecture) is deleted at once, what is kept is bounded (count and bytes,
least recently stored first), and a valid file named like a Windows device (CON.pt) is renamed,
not refused. Real files, the real Model page under AppTest."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from dashboard import models
from dashboard.base import paths
from dashboard.models import checkpoints, uploads
from tests.pages import run_page
from tests.test_hostile_cli import Exploit
from tests.test_hostile_pages import model_upload


def state_bytes(architecture: str, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(models.build_model(architecture).state_dict(), buffer)
    return buffer.getvalue()


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_pickle_that_would_run_code_is_deleted_when_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    raw = uploads.store_upload(pickle.dumps(Exploit(marker)), "evil.pt", folder=tmp_path / "up")
    assert raw.is_file()
    with pytest.raises(checkpoints.CheckpointError, match="holds a pickled Python object"):
        uploads.register_upload(raw, "lenet5")
    assert not marker.exists()
    assert stored_files(tmp_path / "up") == []  # the file and its folder are gone


def test_a_file_refused_as_one_architecture_keeps_what_another_made_from_it(tmp_path: Path):
    content = state_bytes("lenet5")
    raw = uploads.store_upload(content, "mine.pt", folder=tmp_path)
    made = uploads.register_upload(raw, "lenet5")
    again = uploads.store_upload(content, "mine.pt", folder=tmp_path)
    with pytest.raises(checkpoints.MismatchError):
        uploads.register_upload(again, "course-net")
    assert not again.exists()  # the refused upload is gone ...
    assert made.path.is_file()  # ... the checkpoint made from it earlier stays, and loads
    assert checkpoints.load_checkpoint(made.path).card.architecture == "lenet5"
    # sent again and named rightly, it is stored and registered as before
    third = uploads.store_upload(content, "mine.pt", folder=tmp_path)
    assert uploads.register_upload(third, "lenet5").path == made.path


def test_kept_uploads_are_bounded_in_count_and_bytes_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(uploads, "MAX_KEPT_UPLOADS", 3)
    folders = []
    for seed in range(5):
        raw = uploads.store_upload(state_bytes("course-net", seed), f"net{seed}.pt", tmp_path)
        os.utime(raw.parent, (1_000_000 + seed, 1_000_000 + seed))  # stored a second apart
        folders.append(raw.parent)
    kept = sorted(p.name for p in tmp_path.iterdir())
    # the fifth store removed the two oldest beyond three: 0 and 1
    assert kept == sorted(f.name for f in folders[2:])
    # used again, an upload becomes the newest: storing another then removes the oldest other
    uploads.store_upload(state_bytes("course-net", 2), "net2.pt", tmp_path)
    uploads.store_upload(state_bytes("course-net", 9), "net9.pt", tmp_path)
    assert folders[3].name not in {p.name for p in tmp_path.iterdir()}
    assert folders[2].is_dir()

    size = len(state_bytes("course-net"))
    monkeypatch.setattr(uploads, "MAX_KEPT_BYTES", 2 * size + size // 2)  # room for two
    uploads.store_upload(state_bytes("course-net", 10), "net10.pt", tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 2.5 * size


def test_the_upload_just_stored_is_kept_even_when_over_the_byte_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(uploads, "MAX_KEPT_BYTES", 10)
    raw = uploads.store_upload(state_bytes("course-net"), "net.pt", tmp_path)
    assert raw.is_file()


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("CON.pt", "CON_.pt"),
        ("nul.safetensors", "nul_.safetensors"),
        ("com1.v2.pth", "com1_.v2.pth"),
        ("console.pt", "console.pt"),
    ],
)
def test_a_windows_device_name_is_renamed_not_refused(tmp_path: Path, sent: str, stored: str):
    raw = uploads.store_upload(state_bytes("lenet5"), sent, folder=tmp_path)
    assert raw.name == stored
    registered = uploads.register_upload(raw, "lenet5")
    assert checkpoints.load_checkpoint(registered.path).card.architecture == "lenet5"


def test_the_model_page_deletes_refused_uploads_and_loads_con_pt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    app = run_page("pages/1_Model.py", lens_model="ckpt:trained/lenet5-mnist.safetensors")
    model_upload(app, "evil.pt", pickle.dumps(Exploit(marker)), "lenet5")
    assert next(e.value for e in app.error).startswith("evil.pt holds a pickled Python object")
    model_upload(app, "wrong.pt", state_bytes("course-net"), "lenet5")
    assert not marker.exists()
    assert stored_files(uploads.uploads_dir()) == []

    model_upload(app, "CON.pt", state_bytes("lenet5"), "lenet5")
    assert not app.error
    [loaded] = [s.value for s in app.success]
    assert loaded.startswith("CON.pt loaded as lenet5: now selected on every page. Dataset MNIST")
    assert Path(app.session_state["lens_model"].removeprefix("ckpt:")).name.startswith("CON_-")
