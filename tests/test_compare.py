"""training/compare.py on the shipped seed-study checkpoints: every number checked against an
independent torch computation from the raw safetensors files, real forward passes, real cards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dashboard import data, figures, models, training
from dashboard.analysis import inputs
from dashboard.base import paths
from dashboard.base.errors import LensError, ShapeError
from dashboard.models import checkpoints
from dashboard.training import compare, runs

STUDY = ("batchnorm", "avgpool", "sgd", "batch128", "base", "sigmoid")
LENET5_LAYERS = (
    "features.conv1",
    "features.conv2",
    "classifier.fc1",
    "classifier.fc2",
    "classifier.fc3",
)


def weights_file(name: str) -> Path:
    return paths.TRAINED_DIR / f"{name}.safetensors"


@pytest.fixture(scope="module")
def loaded() -> dict[str, checkpoints.LoadedCheckpoint]:
    names = [f"study-lenet5-{s}" for s in STUDY] + ["course-net-mnist"]
    return {name: checkpoints.load_checkpoint(weights_file(name)) for name in names}


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


# --------------------------------------------------------------------------- weights


def test_layer_distances_match_a_hand_computation_from_the_files(loaded, one_torch_thread):
    a, b = loaded["study-lenet5-base"].model, loaded["study-lenet5-sgd"].model
    rows = compare.layer_distances(a, b)
    raw_a = load_file(str(weights_file("study-lenet5-base")))
    raw_b = load_file(str(weights_file("study-lenet5-sgd")))
    assert [r.layer for r in rows] == [*LENET5_LAYERS]  # A's definition order
    model_weights = {k for k in raw_a if k.endswith(".weight") and "/" not in k}  # not history
    assert {f"{r.layer}.weight" for r in rows} == model_weights
    assert [r.kind for r in rows] == ["Conv2d", "Conv2d", "Linear", "Linear", "Linear"]
    for row in rows:
        wa = raw_a[f"{row.layer}.weight"].double()
        wb = raw_b[f"{row.layer}.weight"].double()
        assert row.shape == tuple(wa.shape)
        assert row.norm_a == pytest.approx(torch.linalg.vector_norm(wa).item(), rel=1e-12)
        assert row.norm_b == pytest.approx(torch.linalg.vector_norm(wb).item(), rel=1e-12)
        assert row.distance == pytest.approx(torch.dist(wa, wb).item(), rel=1e-12)
        cos = F.cosine_similarity(wa.flatten(), wb.flatten(), dim=0).item()
        assert row.cosine == pytest.approx(cos, rel=1e-12)
        assert row.relative == pytest.approx(torch.dist(wa, wb).item() / wa.norm().item())
    # a model against itself: distance 0, cosine 1
    same = compare.layer_distances(a, a)
    assert all(r.distance == 0 and r.cosine == pytest.approx(1.0) for r in same)


def test_batch_norm_variant_compares_the_layers_both_have(loaded):
    a, b = loaded["study-lenet5-batchnorm"].model, loaded["study-lenet5-base"].model
    rows = compare.layer_distances(a, b)
    # BatchNorm layers exist only in A; the convs and linears are compared
    assert [r.layer for r in rows] == [*LENET5_LAYERS]
    found = compare.match(compare.state_shapes(a), compare.state_shapes(b))
    assert found.comparable
    assert found.left_out() == (
        "features.bn1, features.bn2, classifier.bn1, classifier.bn2 only in A"
    )
    assert found.shared_filters == ("features.conv1.weight", "features.conv2.weight")


def test_filter_similarity_is_torch_cosine_per_filter(loaded):
    raw_a = load_file(str(weights_file("study-lenet5-base")))["features.conv2.weight"]
    raw_b = load_file(str(weights_file("study-lenet5-sigmoid")))["features.conv2.weight"]
    cosines, changes = compare.filter_similarity(raw_a.numpy(), raw_b.numpy())
    a, b = raw_a.double().flatten(1), raw_b.double().flatten(1)
    np.testing.assert_allclose(cosines, F.cosine_similarity(a, b, dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(changes, ((b - a).norm(dim=1) / a.norm(dim=1)).numpy(), rtol=1e-12)
    assert cosines.shape == (16,)
    with pytest.raises(ShapeError):
        compare.filter_similarity(raw_a.numpy(), raw_a[:8].numpy())


def test_same_seed_runs_keep_their_first_filters_aligned(loaded):
    """The study's runs start from the same seed-0 filters: filter k of the SGD run is much
    closer to filter k of the base run than to any other filter of it."""
    a = load_file(str(weights_file("study-lenet5-base")))["features.conv1.weight"]
    b = load_file(str(weights_file("study-lenet5-sgd")))["features.conv1.weight"]
    cosines, _ = compare.filter_similarity(a.numpy(), b.numpy())
    a, b = a.double().flatten(1), b.double().flatten(1)
    every_pair = F.cosine_similarity(a[:, None], b[None], dim=2).numpy()
    np.testing.assert_allclose(np.diag(every_pair), cosines, rtol=1e-12)
    assert list(every_pair.argmax(axis=1)) == list(range(6))  # the diagonal wins each row
    assert cosines.mean() > 0.5


def test_shared_limit_covers_both_grids(loaded):
    a = load_file(str(weights_file("study-lenet5-batchnorm")))["features.conv2.weight"].numpy()
    b = load_file(str(weights_file("study-lenet5-base")))["features.conv2.weight"].numpy()
    mean_a, mean_b = np.abs(a.mean(axis=1)).max(), np.abs(b.mean(axis=1)).max()
    assert compare.shared_limit(a, b, None) == pytest.approx(max(mean_a, mean_b))
    assert compare.shared_limit(a, b, 3) == pytest.approx(
        max(np.abs(a[:, 3]).max(), np.abs(b[:, 3]).max())
    )
    # both grids drawn with it share one colour range
    limit = compare.shared_limit(a, b, None)
    for w in (a, b):
        heat = figures.filter_grid(w, limit=limit).data[0]
        assert (heat.zmin, heat.zmax) == (-limit, limit)
        assert np.nanmax(np.abs(heat.z)) <= limit
    title = figures.filter_grid(a, limit=limit).layout.title.subtitle.text
    assert f"scale ±{limit:.3g}" in title


# --------------------------------------------------------------------------- which pairs fit


def test_match_refuses_the_same_architecture_with_other_shapes(loaded):
    mnist = compare.state_shapes(loaded["study-lenet5-base"].model)
    torch.manual_seed(0)
    cifar = models.build_model("lenet5", in_channels=3, num_classes=10, input_size=32)
    found = compare.match(mnist, compare.state_shapes(cifar))
    assert not found.comparable
    assert found.why_not().startswith("features.conv1.weight is 6×1×5×5 in A but 6×3×5×5 in B")
    assert "and 1 more tensor" in found.why_not()  # fc1 sees 16×5×5 or 16×6×6 features
    other = compare.match(mnist, compare.state_shapes(loaded["course-net-mnist"].model))
    assert not other.comparable  # different conv sizes: 10 filters against 6


def test_partners_loads_only_the_same_architecture(loaded):
    shapes = {name: compare.state_shapes(c.model) for name, c in loaded.items()}
    asked: list[str] = []

    def shapes_of(key: str):
        asked.append(key)
        if key == "broken":
            raise LensError("broken.safetensors is not a checkpoint")
        return shapes[key]

    candidates = {name: c.card.architecture for name, c in loaded.items()}
    candidates.pop("study-lenet5-base")
    candidates["broken"] = "lenet5"
    found = compare.partners("lenet5", shapes["study-lenet5-base"], candidates, shapes_of)
    assert found.comparable == tuple(f"study-lenet5-{s}" for s in STUDY if s != "base")
    assert found.refused == {"broken": "broken.safetensors is not a checkpoint"}
    assert found.matches["study-lenet5-sigmoid"].left_out() == ""  # same tensors, other function
    assert "features.bn1" in found.matches["study-lenet5-batchnorm"].only_b[0]
    assert "course-net-mnist" not in asked


def test_default_partner_prefers_the_studys_baseline():
    names = {"k1": "lenet5-mnist", "k2": "study-lenet5-sgd", "k3": "study-lenet5-base"}
    assert compare.default_partner("study-lenet5-batchnorm", names) == "k3"
    assert compare.default_partner("lenet5-mnist", {"k2": "study-lenet5-sgd"}) == "k2"
    assert compare.default_partner("course-net-mnist", names) == "k1"


def test_same_start_reads_the_seeds(loaded):
    base, sgd = loaded["study-lenet5-base"].card, loaded["study-lenet5-sgd"].card
    assert compare.same_start(base, sgd) is True
    other = checkpoints.Card(name="x", architecture="lenet5", training={"seed": 1})
    assert compare.same_start(base, other) is False
    assert compare.same_start(base, None) is None
    assert "same seed" in compare.start_note(base, sgd)


def test_the_same_seed_with_other_options_is_checked_not_assumed(loaded):
    """study-lenet5-batchnorm and -base share seed 0 but not their options: the note says so,
    and whether their common tensors started equal is read from both models rebuilt."""
    base, batchnorm = loaded["study-lenet5-base"].card, loaded["study-lenet5-batchnorm"].card
    assert compare.different_options(batchnorm, base) == "batch_norm: True vs default"
    note = compare.start_note(batchnorm, base)
    assert "differ in their options (batch_norm: True vs default)" in note
    assert "were trained from the same seed, so they started" not in note
    torch.manual_seed(0)
    plain = models.build_model("lenet5").state_dict()
    torch.manual_seed(0)
    normed = models.build_model("lenet5", batch_norm=True).state_dict()
    common = [k for k in plain if k in normed]
    assert common
    assert all(torch.equal(plain[k], normed[k]) for k in common)
    assert compare.same_start(batchnorm, base) is True
    other = checkpoints.Card(
        name="y",
        architecture="course-net",
        model_args={"options": {}},
        training={"seed": 0},
    )  # the same seed, another architecture: no tensor in common started equal
    assert compare.same_start(base, other) is False
    assert "different random weights" in compare.start_note(base, other)


# --------------------------------------------------------------------------- one image


def test_forward_is_the_models_own_softmax_and_conv(loaded, mnist_test, one_torch_thread):
    item = inputs.test_image(mnist_test, 3)
    x = inputs.model_input(item.pixels, mnist_test.info)
    a = compare.forward(loaded["study-lenet5-base"].model, x)
    b = compare.forward(loaded["study-lenet5-sigmoid"].model, x)
    # independently: normalize by hand, conv with the file's tensors
    pixels = torch.from_numpy(item.pixels).double()[None] / 255.0
    normalized = (pixels - 0.1307) / 0.3081
    raw = load_file(str(weights_file("study-lenet5-base")))
    conv = loaded["study-lenet5-base"].model.features.conv1
    expected = F.conv2d(
        normalized, raw["features.conv1.weight"].double(), raw["features.conv1.bias"].double(),
        padding=conv.padding,
    )[0]  # fmt: skip
    np.testing.assert_allclose(a.maps["features.conv1"], expected.numpy(), atol=2e-5)
    with torch.no_grad():
        logits = loaded["study-lenet5-base"].model(x)[0].double()
    np.testing.assert_allclose(a.probabilities, torch.softmax(logits, 0).numpy(), atol=1e-6)
    assert a.probabilities.sum() == pytest.approx(1.0)
    # ReLU and sigmoid layers have different names: only the shared ones are offered
    common = compare.common_layers(a, b)
    assert {"features.conv1", "classifier.fc3"} <= set(common)
    assert not any("relu" in k or "sigmoid" in k for k in common)
    low, high = compare.shared_range(a.maps["features.conv1"], b.maps["features.conv1"])
    both = np.concatenate([a.maps["features.conv1"].ravel(), b.maps["features.conv1"].ravel()])
    assert (low, high) == (both.min(), both.max())
    assert compare.cosine(a.maps["features.conv1"], a.maps["features.conv1"]) == pytest.approx(1)


def test_activation_grid_fits_a_smaller_side():
    maps = np.random.default_rng(0).normal(size=(6, 28, 28))
    small = figures.activation_grid(maps, max_side=380).layout
    large = figures.activation_grid(maps).layout
    assert (small.width, small.height) < (large.width, large.height)
    assert small.height < large.height


# --------------------------------------------------------------------------- runs and cards


def test_curves_and_table_of_the_study_cards():
    cards = checkpoints.list_checkpoints(paths.TRAINED_DIR)
    available = compare.entries(cards, [])
    chosen = compare.default_keys(available)
    assert [available[k].name for k in chosen] == [
        c.name for c in cards if c.name.startswith("study-lenet5-")
    ]
    assert len(chosen) == 6
    base = available["card:trained/study-lenet5-base"]
    card = json.loads((paths.TRAINED_DIR / "study-lenet5-base.json").read_text())
    test_only = compare.curve(base, "test accuracy")
    assert list(test_only.epochs) == [r["epoch"] for r in card["history"]]
    assert list(test_only.test) == [r["test_accuracy"] for r in card["history"]]
    assert list(test_only.train) == []
    both = compare.curve(base, "loss, train and test")
    assert list(both.train) == [r["train_loss"] for r in card["history"]]
    with pytest.raises(ValueError, match="unknown curve 'learning rate'"):
        compare.curve(base, "learning rate")

    rows = [available[k].row for k in chosen]
    table, differing = compare.hyperparameter_table(rows)
    assert list(table.index) == [available[k].name for k in chosen]
    by_hand = [c for c in rows[0] if c != "Run" and len({str(r[c]) for r in rows}) > 1]
    assert set(differing) == set(by_hand) == {"Model", "Optimizer", "Batch", "Test acc. (%)"}
    assert differing[0] == "Test acc. (%)"  # the outcome ahead of the settings
    assert list(table.columns[: len(differing)]) == differing
    accuracy = table.loc["study-lenet5-sgd", "Test acc. (%)"]
    sgd = json.loads((paths.TRAINED_DIR / "study-lenet5-sgd.json").read_text())
    assert accuracy == round(100 * sgd["metrics"]["test_accuracy"], 2)


def test_a_session_run_joins_the_overlay(shared_datasets: Path, one_torch_thread):
    train = data.take_first(data.load_split("mnist", "train", data_root=shared_datasets), 600)
    test = data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 300)
    spec = runs.RunSpec("course-net", "mnist", config=training.TrainConfig(epochs=1, batch_size=64))
    run = runs.start_run(spec, train, test, label="quick course-net")
    assert run.join(120)
    assert run.status == runs.FINISHED
    entry = compare.entries([], [run])[f"run:{run.id}"]
    assert entry.name == entry.row["Run"] == f"run {run.id}"
    assert compare.default_keys({entry.key: entry}) == [entry.key]
    curve = compare.curve(entry, "test accuracy")
    assert list(curve.test) == [e.test_accuracy for e in run.history]


def test_overlay_choice_keeps_the_users_choice_and_lets_new_runs_join():
    cards = checkpoints.list_checkpoints(paths.TRAINED_DIR)
    available = compare.entries(cards, [])
    base = available["card:trained/study-lenet5-base"]
    first, second = (dataclasses.replace(base, key=f"run:{i}") for i in (1, 2))
    available = {first.key: first, **available}
    study = compare.default_keys(available)
    assert study[0] == "run:1"  # this session's run, then the six study cards
    # the first look: the default, the run marked as seen
    chosen, seen = compare.overlay_choice(None, study, available, set())
    assert (chosen, seen) == (study, {"run:1"})
    # the user keeps one card only, and a card that has gone is dropped
    kept = ["card:trained/study-lenet5-sgd", "card:trained/no-longer-there"]
    chosen, seen = compare.overlay_choice(kept, study, available, seen)
    assert chosen == ["card:trained/study-lenet5-sgd"]
    # a run trained since joins; the run the user took out stays out
    available = {second.key: second, **available}
    chosen, seen = compare.overlay_choice(chosen, study, available, seen)
    assert chosen == ["card:trained/study-lenet5-sgd", "run:2"]
    assert seen == {"run:1", "run:2"}
    # without a default (the Train page) every unseen run joins, each once
    chosen, _ = compare.overlay_choice(None, [], available, set())
    assert chosen == ["run:2", "run:1"]


def test_saved_signature_changes_when_a_card_is_saved(tmp_path: Path):
    folders = (paths.TRAINED_DIR, tmp_path)
    before = compare.saved_signature(folders)
    shipped = sorted(paths.TRAINED_DIR.glob("*.json"))
    assert [Path(name) for name, _ in before] == shipped
    torch.manual_seed(0)
    card = checkpoints.Card(name="mine", architecture="lenet5")
    checkpoints.save_checkpoint(models.build_model("lenet5"), card, tmp_path / "mine")
    after = compare.saved_signature(folders)
    assert after[:-1] == before
    assert after[-1] == (str(tmp_path / "mine.json"), (tmp_path / "mine.json").stat().st_mtime)
    assert compare.saved_signature((tmp_path / "missing",)) == ()
