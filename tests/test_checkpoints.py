"""Checkpoints: round trips on real MNIST images, atomic saves, and broken or hostile files
refused with one clear line (and without running a byte of their code)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import random
import re
import shlex
import signal
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dashboard import data, models
from dashboard.base.errors import CheckpointError, LensError, UnknownNameError
from dashboard.models import checkpoints
from dashboard.models.checkpoints import (
    Card,
    MismatchError,
    list_checkpoints,
    load_checkpoint,
    read_card,
    save_checkpoint,
    validate_name,
)

MNIST_ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 28, "options": {}}


class TrappedModel(nn.Module):
    """A whole model whose unpickling writes a marker file: proof that a load ran its code."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled")
        super().__setstate__(state)


class ShellExploit:
    """The classic malicious pickle: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(scope="module")
def mnist_batch(shared_datasets: Path) -> torch.Tensor:
    split = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    return data.normalize(split.images[:32], split.info.mean, split.info.std)  # (32, 1, 28, 28)


def built(architecture: str = "course-net", seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return models.build_model(architecture, **kwargs)


def mnist_card(architecture: str = "course-net", **changes) -> Card:
    card = Card(
        name=f"{architecture}-mnist",
        architecture=architecture,
        model_args=dict(MNIST_ARGS),
        input_shape=(1, 28, 28),
        dataset="mnist",
        dataset_source="MNIST full set, 60,000 train / 10,000 test images",
        classes=[str(i) for i in range(10)],
        normalization={"mean": [0.1307], "std": [0.3081]},
        training={"optimizer": "adam", "lr": 0.001, "epochs": 2, "batch_size": 64, "seed": 0},
        history=[
            {"epoch": 1, "train_loss": 0.2, "test_accuracy": 0.97, "seconds": 12.0},
            {"epoch": 2, "train_loss": 0.1, "test_accuracy": 0.98, "seconds": 11.5},
        ],
        metrics={"test_accuracy": 0.9871, "test_loss": 0.04},
        command=f"python -m dashboard train --model {architecture} --dataset mnist",
        notes="written by the tests",
    )
    return replace(card, **changes)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same_weights(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert list(state) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


# --- round trip --------------------------------------------------------------------------------


def test_round_trip_restores_weights_card_and_outputs(tmp_path: Path, mnist_batch: torch.Tensor):
    model = built("bn-cnn")
    with torch.no_grad():
        model(mnist_batch)  # train mode: real BatchNorm running statistics to carry over
    model.eval()
    card = mnist_card("bn-cnn")

    path = save_checkpoint(model, card, tmp_path / "bn-cnn-mnist")

    assert path == tmp_path / "bn-cnn-mnist.safetensors"
    assert list(files_in(tmp_path)) == ["bn-cnn-mnist.json", "bn-cnn-mnist.safetensors"]
    loaded = load_checkpoint(path)
    assert_same_weights(loaded.model, model.state_dict())
    assert int(loaded.model.state_dict()["features.bn1.num_batches_tracked"]) == 1
    with torch.no_grad():
        assert torch.equal(loaded.model(mnist_batch), model(mnist_batch))
    assert not loaded.model.training
    assert all(p.requires_grad for p in loaded.model.parameters())
    assert loaded.path == path
    assert loaded.filter_history == {}
    assert loaded.mismatch is None
    stamped = loaded.card
    assert stamped == replace(card, created=stamped.created, versions=stamped.versions)
    assert stamped.path == path
    assert datetime.fromisoformat(stamped.created).utcoffset() is not None
    assert stamped.versions["torch"] == torch.__version__
    assert stamped.versions["cnn_lens"] == "0.1.0"


@pytest.mark.parametrize("given", ["net", "net.safetensors", "net.json"])
def test_checkpoint_is_found_by_name_weights_or_card(tmp_path: Path, given: str):
    model = built()
    save_checkpoint(model, mnist_card(name=""), tmp_path / "net.safetensors")
    assert read_card(tmp_path / given).name == "net"  # an empty name becomes the file's
    assert_same_weights(load_checkpoint(tmp_path / given).model, model.state_dict())


# --- the card ----------------------------------------------------------------------------------


def test_card_json_round_trip_keeps_unknown_keys():
    card = mnist_card()
    stored = json.loads(card.to_json())
    assert list(stored)[:4] == ["format", "name", "architecture", "model_args"]
    assert stored["format"] == "cnn-lens/1"
    assert stored["input_shape"] == [1, 28, 28]
    stored["future_field"] = {"kept": True}

    again = Card.from_json(json.dumps(stored))

    assert again.extra == {"future_field": {"kept": True}}
    assert json.loads(again.to_json()) == stored
    assert replace(again, extra={}) == card


def test_card_defaults_missing_optional_keys():
    card = Card.from_json('{"format": "cnn-lens/1", "name": "n", "architecture": "lenet5"}')
    assert card == Card(name="n", architecture="lenet5")
    assert (card.history, card.metrics, card.classes) == ([], {}, [])
    assert (card.input_shape, card.test_accuracy, card.num_classes) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"name": "n", "architecture": "lenet5"}', "no 'format' key"),
        ('{"format": "other/2", "name": "n", "architecture": "a"}', "format 'other/2'"),
        ("[1, 2]", "a JSON object was expected"),
        ('{"format": "cnn-lens/1", "architecture": "lenet5"}', "has no 'name'"),
        ('{"format": "cnn-lens/1", "name": "n", "architecture": 5}', "should be text"),
        ('{"format": "cnn-lens/1", "name": "n", "architecture": "a", "input_shape": [1, 28]}',
         "three positive integers"),
        ('{"format": "cnn-lens/1", "name": "n", "architecture": "a", "history": 1}',
         "'history' should be a list"),
        ('{"format": "cnn-lens/1", "name": "n"', "not valid JSON"),
    ],
)  # fmt: skip
def test_card_that_is_not_ours_is_refused(text: str, reason: str):
    with pytest.raises(CheckpointError, match=re.escape(reason)) as caught:
        Card.from_json(text, source="x.json")
    assert str(caught.value).startswith("x.json")


def test_card_naming_an_unknown_architecture_says_so(tmp_path: Path):
    save_checkpoint(built(), mnist_card(), tmp_path / "net")
    card_path = tmp_path / "net.json"
    card_path.write_text(card_path.read_text().replace('"course-net"', '"no-such-net"'))
    with pytest.raises(UnknownNameError, match="unknown model 'no-such-net'"):
        load_checkpoint(tmp_path / "net")


# --- saving: overwrite and atomicity -----------------------------------------------------------


def test_existing_checkpoint_is_replaced_only_when_asked(tmp_path: Path):
    first, second = built(seed=0), built(seed=1)
    path = save_checkpoint(first, mnist_card(), tmp_path / "net")
    before = files_in(tmp_path)

    with pytest.raises(CheckpointError, match=r"net\.safetensors exists; pass overwrite"):
        save_checkpoint(second, mnist_card(), tmp_path / "net.safetensors")

    assert files_in(tmp_path) == before
    save_checkpoint(second, mnist_card(notes="second"), path, overwrite=True)
    assert_same_weights(load_checkpoint(path).model, second.state_dict())
    assert read_card(path).notes == "second"


def test_saving_as_pt_is_refused(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"saved as NAME\.safetensors"):
        save_checkpoint(built(), mnist_card(), tmp_path / "net.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="file-size limits are POSIX")
@pytest.mark.parametrize("failing", ["weights", "card"])
def test_write_failing_midway_keeps_old_checkpoint_and_no_temp_files(tmp_path: Path, failing: str):
    import resource

    path = save_checkpoint(built(seed=0), mnist_card(), tmp_path / "net")
    before = files_in(tmp_path)
    weights_size = len(before["net.safetensors"])
    # A card four times the weights' size, so a limit between the two stops the card's write.
    new_card = mnist_card(notes="x" * (4 * weights_size))
    limit = weights_size // 2 if failing == "weights" else 2 * weights_size
    # The kernel stops the write part-way (EFBIG), as a full disk would (ENOSPC).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(CheckpointError, match=r"^could not save .*net\.safetensors: File too"):
            save_checkpoint(built(seed=1), new_card, path, overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)

    assert files_in(tmp_path) == before


def test_crash_between_renames_never_leaves_a_card_beside_other_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = save_checkpoint(built(seed=0), mnist_card(), tmp_path / "net")
    new = built(seed=1)
    real_replace = os.replace

    def disk_full_at_card(src, dst):  # the one failure a test cannot provoke for real
        if str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full_at_card)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(new, mnist_card(), path, overwrite=True)
    monkeypatch.undo()

    assert list(files_in(tmp_path)) == ["net.safetensors"]  # no stale card, no temp files
    with pytest.raises(CheckpointError, match=r"no card beside net\.safetensors"):
        load_checkpoint(path)
    assert_same_weights(load_checkpoint(path, architecture="course-net").model, new.state_dict())


# --- users' files: .pt, wrappers, bare safetensors ---------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module.", "_orig_mod.module."])
def test_pt_state_dict_loads(tmp_path: Path, layout: str):
    model = built(seed=3)
    state = model.state_dict()
    if layout == "state_dict":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        payload = {"state_dict": state, "optimizer": optimizer.state_dict(), "epoch": 3}
    elif layout == "model":
        payload = {"model": state, "best_accuracy": 0.98}
    elif layout == "plain":
        payload = state
    else:
        payload = {layout + key: value for key, value in state.items()}
    path = tmp_path / "user.pt"
    torch.save(payload, path)

    loaded = load_checkpoint(path, architecture="course-net")

    assert_same_weights(loaded.model, state)
    assert not loaded.model.training
    assert loaded.card.name == "user"
    assert loaded.card.architecture == "course-net"
    assert loaded.card.model_args == MNIST_ARGS
    assert loaded.card.input_shape == (1, 28, 28)
    assert (loaded.card.history, loaded.card.metrics) == ([], {})


def test_bare_safetensors_with_dataparallel_prefix_loads(tmp_path: Path):
    model = built(seed=4)
    save_file(
        {"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "ddp.safetensors"
    )
    loaded = load_checkpoint(tmp_path / "ddp.safetensors", architecture="course-net")
    assert_same_weights(loaded.model, model.state_dict())


def test_bare_file_without_architecture_asks_for_one(tmp_path: Path):
    save_file(built().state_dict(), tmp_path / "mine.safetensors")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "mine.safetensors")
    assert str(caught.value) == (
        "no card beside mine.safetensors: say which architecture it is (--model NAME)"
    )


@pytest.mark.parametrize(
    ("architecture", "args"),
    [
        ("lenet5", {"num_classes": 100}),
        ("lenet5", {"in_channels": 3, "input_size": 32}),
        ("lenet5", {"options": {"batch_norm": True}}),
        ("course-net", {"input_size": 32}),
    ],
)
def test_bare_state_dict_sizes_are_inferred(tmp_path: Path, architecture: str, args: dict):
    build_args = {k: v for k, v in args.items() if k != "options"}
    model = built(architecture, **build_args, **args.get("options", {}))
    save_file(model.state_dict(), tmp_path / "mine.safetensors")

    loaded = load_checkpoint(tmp_path / "mine.safetensors", architecture=architecture)

    expected = {**MNIST_ARGS, **args}
    assert loaded.card.model_args == expected
    side = expected["input_size"]
    assert loaded.card.input_shape == (expected["in_channels"], side, side)
    assert_same_weights(loaded.model, model.state_dict())


# --- hostile files -----------------------------------------------------------------------------


def test_whole_pickled_model_is_refused_without_running_its_code(tmp_path: Path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "whole.pt"
    torch.save(TrappedModel(marker), path)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, architecture="course-net")

    assert str(caught.value) == (
        "whole.pt holds a pickled Python object, not a state dict; it was not loaded (that could "
        "run code). Save a state dict instead: torch.save(model.state_dict(), 'whole.pt')"
    )
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the trap is live: an unsafe load runs the class's code
    assert marker.read_text() == "unpickled"


@pytest.mark.parametrize(
    ("writer", "name"),
    [
        ("zip", "evil.pt"),
        ("legacy", "evil.pth"),
        ("raw pickle", "evil.pt"),
        ("zip", "evil.safetensors"),
    ],
)
def test_malicious_pickle_is_never_executed(tmp_path: Path, writer: str, name: str):
    marker = tmp_path / "pwned"
    payload = {"features.conv1.weight": torch.zeros(10, 1, 5, 5), "x": ShellExploit(marker)}
    path = tmp_path / name
    if writer == "zip":
        torch.save(payload, path)
    elif writer == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))

    with pytest.raises(CheckpointError, match=f"^{re.escape(name)} holds a pickled Python object"):
        load_checkpoint(path, architecture="course-net")

    assert not marker.exists()
    pickle.loads(pickle.dumps(ShellExploit(marker)))  # the payload is live when unpickled
    assert marker.exists()


def png_bytes(image: torch.Tensor, path: Path) -> bytes:
    Image.fromarray(image.squeeze(0).numpy()).save(path, format="PNG")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("truncated", "n.safetensors", r"n\.safetensors is not a valid safetensors file \(.+\); "
                                        r"it may be truncated or damaged$"),
        ("random", "n.safetensors", r"n\.safetensors is not a valid safetensors file \(header too"),
        ("random", "n.pt", r"n\.pt is not a checkpoint: neither a safetensors file nor a PyTorch "
                           r"state dict$"),
        ("text", "n.pt", r"n\.pt is not a checkpoint: neither"),
        ("png", "n.safetensors", r"n\.safetensors is not a valid safetensors file"),
        ("png", "n.pth", r"n\.pth is not a checkpoint: neither"),
        ("empty", "n.safetensors", r"n\.safetensors is empty \(0 bytes\); it is not a checkpoint$"),
        ("cut pt", "n.pt", r"n\.pt is not a readable PyTorch file \(.+\); it may be truncated"),
        ("folder", "n.safetensors", r".*/n\.safetensors is a folder, not a checkpoint file$"),
        ("missing", "n.safetensors", r"no checkpoint file at .*/n\.safetensors$"),
        ("tensors", "n.pt", r"n\.pt holds a Tensor, not a state dict$"),
        ("wrapped", "n.pt", r"n\.pt holds a dict without a state dict in it \(keys: epoch, optim"),
    ],
)  # fmt: skip
def test_broken_files_give_one_clear_line(
    tmp_path: Path, mnist_batch: torch.Tensor, kind: str, name: str, message: str
):
    path = tmp_path / name
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if kind == "truncated":
        whole = save_checkpoint(built(), mnist_card(), scratch / "whole").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "cut pt":
        torch.save(built().state_dict(), scratch / "whole.pt")
        whole = (scratch / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "text":
        path.write_text("epoch 1: loss 0.31\nepoch 2: loss 0.12\n")
    elif kind == "png":
        path.write_bytes(
            png_bytes((mnist_batch[0] * 60 + 100).clamp(0, 255).byte(), scratch / "a.png")
        )
    elif kind == "empty":
        path.touch()
    elif kind == "folder":
        path.mkdir()
    elif kind == "tensors":
        torch.save(torch.zeros(3), path)
    elif kind == "wrapped":
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, architecture="course-net")

    assert re.match(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_file_over_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = save_checkpoint(built(), mnist_card(), tmp_path / "net")
    size = path.stat().st_size
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", size)
    assert load_checkpoint(path).card.name == "course-net-mnist"  # exactly at the limit: read

    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", size - 1)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"net.safetensors is {size / 1024:.1f} kB, over the {(size - 1) / 1024:.1f} kB limit "
        "for a checkpoint; it was not read"
    )


# --- files that do not fit the architecture ----------------------------------------------------


def test_wrong_architecture_reports_missing_and_unexpected_keys(tmp_path: Path):
    course = built("course-net")
    path = save_checkpoint(course, mnist_card(), tmp_path / "net")

    with pytest.raises(MismatchError) as caught:
        load_checkpoint(path, architecture="simple-convnet")

    report = caught.value.report
    ours, theirs = course.state_dict(), built("simple-convnet").state_dict()
    assert report.missing == [k for k in theirs if k not in ours]
    assert set(report.unexpected) == set(ours) - set(theirs)
    assert report.missing == ["classifier.fc1.weight", "classifier.fc1.bias",
                              "classifier.fc2.weight", "classifier.fc2.bias"]  # fmt: skip
    assert report.shape_mismatches == [
        ("features.conv1.weight", (10, 1, 5, 5), (30, 1, 5, 5)),
        ("features.conv1.bias", (10,), (30,)),
    ]
    assert isinstance(caught.value, CheckpointError)
    assert str(caught.value) == (
        "net.safetensors does not fit simple-convnet: 4 missing keys (classifier.fc1.weight, "
        "classifier.fc1.bias, classifier.fc2.weight, …), 4 unexpected keys (classifier.fc.bias, "
        "classifier.fc.weight, features.conv2.bias, …), 2 shape mismatches (features.conv1.weight: "
        "file 10×1×5×5, model 30×1×5×5; features.conv1.bias: file 10, model 30)"
    )


@pytest.mark.parametrize("how", ["caller asks for 10", "card says 10"])
def test_wrong_number_of_classes_names_both_counts(tmp_path: Path, how: str):
    args = {**MNIST_ARGS, "num_classes": 100}
    path = save_checkpoint(
        built("lenet5", num_classes=100), mnist_card("lenet5", model_args=args), tmp_path / "lenet"
    )
    override = None
    if how == "card says 10":
        card_path = tmp_path / "lenet.json"
        card_path.write_text(
            card_path.read_text().replace('"num_classes": 100', '"num_classes": 10')
        )
    else:
        override = {"num_classes": 10}

    with pytest.raises(MismatchError) as caught:
        load_checkpoint(path, model_args=override)

    assert caught.value.report.shape_mismatches == [
        ("classifier.fc3.weight", (100, 84), (10, 84)),
        ("classifier.fc3.bias", (100,), (10,)),
    ]
    assert caught.value.report.class_counts == (100, 10)
    assert str(caught.value) == (
        "lenet.safetensors does not fit lenet5: 2 shape mismatches (classifier.fc3.weight: file "
        "100×84, model 10×84; classifier.fc3.bias: file 100, model 10) — the file has 100 "
        "classes, the model 10"
    )


def test_non_strict_load_keeps_what_fits_and_reports_the_rest(tmp_path: Path):
    model = built("lenet5", num_classes=100)
    path = save_checkpoint(
        model, mnist_card("lenet5", model_args={**MNIST_ARGS, "num_classes": 100}), tmp_path / "l"
    )

    loaded = load_checkpoint(path, model_args={"num_classes": 10}, strict=False)

    assert loaded.mismatch is not None
    assert loaded.mismatch.class_counts == (100, 10)
    state, saved = loaded.model.state_dict(), model.state_dict()
    assert state["classifier.fc3.weight"].shape == (10, 84)
    assert all(torch.equal(state[k], saved[k]) for k in saved if not k.startswith("classifier.fc3"))


# --- filter history ----------------------------------------------------------------------------


def test_filter_history_round_trip_stays_out_of_the_weights(tmp_path: Path):
    model = built()
    live = model.features.conv1.weight  # shares memory with the state dict: must still save
    generator = torch.Generator().manual_seed(0)
    transposed = torch.randn(5, 5, 1, 10, generator=generator).permute(3, 2, 0, 1)  # not contiguous
    history = {
        0: {"features.conv1.weight": torch.randn(10, 1, 5, 5, generator=generator)},
        1: {"features.conv1.weight": transposed},
        3: {"features.conv1.weight": live},
    }

    path = save_checkpoint(model, mnist_card(), tmp_path / "net", filter_history=history)

    with safe_open(path, framework="pt") as stored:
        names = list(stored.keys())
    snapshot_keys = sorted(k for k in names if k.startswith("lens_history/"))
    assert snapshot_keys == [f"lens_history/epoch{e}/features.conv1.weight" for e in (0, 1, 3)]
    loaded = load_checkpoint(path)
    assert list(loaded.filter_history) == [0, 1, 3]
    for epoch, layers in history.items():
        assert list(loaded.filter_history[epoch]) == ["features.conv1.weight"]
        assert torch.equal(
            loaded.filter_history[epoch]["features.conv1.weight"], layers["features.conv1.weight"]
        )
    assert_same_weights(loaded.model, model.state_dict())


# --- names and listings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "file"),
    [
        ("lenet5-mnist", "lenet5-mnist.safetensors"),
        ("bn_cnn.v2", "bn_cnn.v2.safetensors"),
        ("run1.safetensors", "run1.safetensors"),
        ("  padded ", "padded.safetensors"),
        ("x" * 100, "x" * 100 + ".safetensors"),
    ],
)
def test_validate_name_accepts_plain_names(tmp_path: Path, typed: str, file: str):
    assert validate_name(typed, tmp_path) == tmp_path / file


@pytest.mark.parametrize(
    "typed",
    ["", "   ", "..", "../x", "/abs", "/etc/passwd", "a/b", "a\\b", "a\x00b", ".hidden",
     "x" * 101, "my model", "naïve", "con", "ends.", "-flag", "~user"],
)  # fmt: skip
def test_validate_name_rejects_paths_and_odd_names(tmp_path: Path, typed: str):
    with pytest.raises(LensError):
        validate_name(typed, tmp_path)


def test_list_checkpoints_sorts_lists_invalid_cards_last_and_skips_orphans(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    model = built()
    for name, dataset, accuracy in [
        ("c10", "cifar10", 0.71),
        ("m-low", "mnist", 0.97),
        ("m-high", "mnist", 0.99),
        ("fashion", "fashion-mnist", 0.9),
    ]:
        card = mnist_card(name=name, dataset=dataset, metrics={"test_accuracy": accuracy})
        save_checkpoint(model, card, tmp_path / name)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "c10.safetensors").read_bytes())
    (tmp_path / "foreign.json").write_text('{"format": "someone-else/3"}')
    (tmp_path / "orphan.json").write_text((tmp_path / "m-low.json").read_text())

    with caplog.at_level(logging.WARNING, logger="dashboard.models.checkpoints"):
        cards = list_checkpoints(tmp_path)

    # An invalid card beside weights is listed (its weights stay usable), after the valid ones;
    # a card without weights beside it is skipped.
    assert [c.name for c in cards] == ["m-high", "m-low", "fashion", "c10", "broken"]
    assert [c.path for c in cards] == [tmp_path / f"{c.name}.safetensors" for c in cards]
    assert cards[-1].problem.startswith("broken.json is not valid JSON")
    assert [c.problem for c in cards[:-1]] == ["", "", "", ""]
    warned = sorted(Path(r.args[0]).name for r in caplog.records)
    assert warned == ["broken.json", "foreign.json", "orphan.json"]
    assert list_checkpoints(tmp_path / "absent") == []
