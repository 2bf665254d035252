"""Training dynamics on real MNIST: what fit() samples, what the checkpoint keeps, true numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from dashboard import data, models, training
from dashboard.analysis import probe
from dashboard.base.errors import CheckpointError, LensError
from dashboard.models import checkpoints, dynamics
from dashboard.models.dynamics import DynamicsEvent
from dashboard.training import EpochEvent, StepEvent, TrainConfig, loop, runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVERY = 5


def first_images(root: Path, split: str, count: int) -> data.Split:
    return data.take_first(data.load_split("mnist", split, data_root=root, download=False), count)


@pytest.fixture(scope="module")
def mnist_train(shared_datasets: Path) -> data.Split:
    return first_images(shared_datasets, "train", 1000)  # 16 steps of 64 (the last one 40)


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return first_images(shared_datasets, "test", 200)


def lenet5(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("lenet5", in_channels=1, num_classes=10, input_size=28)


@pytest.fixture(scope="module")
def run(mnist_train, mnist_test) -> tuple[torch.nn.Module, training.FitResult, list]:
    """Two epochs of LeNet-5 sampled every 5 steps."""
    model = lenet5()
    events: list = []
    config = TrainConfig(epochs=2, dynamics_every=EVERY, dead_window=4, snapshot_layers=None)
    result = training.fit(model, mnist_train, mnist_test, config, on_event=events.append)
    return model, result, events


def test_samples_come_every_k_steps_and_at_each_epochs_end(run):
    _, result, events = run
    samples = [e for e in events if isinstance(e, DynamicsEvent)]
    assert [e.global_step for e in samples] == [5, 10, 15, 16, 20, 25, 30, 32]
    assert [(e.epoch, e.step) for e in samples][3] == (1, 16)
    # four batches before each sample are watched; the first sample of all sees only those
    assert [e.window for e in samples] == [4] * len(samples)
    names = [n for n, _ in result.model.named_parameters()]
    for event in samples:
        assert list(event.tensors) == names
        assert len(event.weight_norm) == len(event.grad_norm) == len(event.update_ratio) == 10
        assert event.activations == (
            "features.relu1",
            "features.relu2",
            "classifier.relu1",
            "classifier.relu2",
        )
        assert event.units == (6, 16, 120, 84)
    # the other events are untouched: the curves still get every step event and epoch
    assert [e.step for e in events if isinstance(e, StepEvent)] == [16, 16]
    assert len([e for e in events if isinstance(e, EpochEvent)]) == 2
    assert result.dynamics is not None
    assert result.dynamics.steps == [e.global_step for e in samples]


def test_recording_does_not_change_the_training(run, mnist_train, mnist_test):
    model, _, _ = run
    plain = lenet5()
    config = TrainConfig(epochs=2, dynamics_every=0, snapshot_layers=None)
    result = training.fit(plain, mnist_train, mnist_test, config)
    assert result.dynamics is None
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_weight_norms_equal_the_weights_and_sgd_updates_equal_lr_times_gradient(mnist_train):
    """Plain SGD moves w by −lr·∇w, so ‖Δw‖ = lr‖∇w‖, and ‖Δw‖ / ‖w_before‖ = ratio; the
    weight norm after the step differs from the one before by at most ‖Δw‖."""
    lr = 0.05
    model = lenet5()
    events: list = []
    config = TrainConfig(epochs=1, optimizer="sgd", lr=lr, dynamics_every=4)
    training.fit(model, mnist_train, None, config, on_event=events.append)
    samples = [e for e in events if isinstance(e, DynamicsEvent)]
    assert len(samples) == 4
    for event in samples:
        for name, w, g, ratio in zip(
            event.tensors, event.weight_norm, event.grad_norm, event.update_ratio, strict=True
        ):
            assert ratio > 0, name
            assert ratio * w == pytest.approx(lr * g, rel=ratio + 1e-5), name
    last = samples[-1]  # the epoch's last step: nothing moved the weights after it
    params = dict(model.named_parameters())
    for name, w in zip(last.tensors, last.weight_norm, strict=True):
        assert w == pytest.approx(_norm(params[name]), rel=1e-6)


def _norm(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor.detach().double()))


def test_gradient_norms_equal_a_plain_backward_on_the_same_batch(mnist_train):
    """64 images in batches of 64: every step's batch is all of them (shuffled, which leaves
    the mean loss as it is). The oracle replays the run by hand on a twin of the model: one
    plain forward and backward, torch.linalg's norms, then the SGD step w ← w − lr·∇w."""
    lr = 0.05
    images = data.take_first(mnist_train, 64)
    model, twin = lenet5(), lenet5()
    events: list = []
    config = TrainConfig(epochs=2, optimizer="sgd", lr=lr, dynamics_every=1, dead_window=1)
    training.fit(model, images, None, config, on_event=events.append)
    samples = [e for e in events if isinstance(e, DynamicsEvent)]
    assert [s.global_step for s in samples] == [1, 2]
    x = data.normalize(images.images, images.info.mean, images.info.std)
    twin.train()
    for sample in samples:
        params = dict(twin.named_parameters())
        twin.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(twin(x), images.labels).backward()
        before = {name: _norm(p) for name, p in params.items()}
        grads = {name: _norm(p.grad) for name, p in params.items()}
        with torch.no_grad():
            for p in params.values():
                p -= lr * p.grad
        for i, name in enumerate(sample.tensors):
            assert sample.grad_norm[i] == pytest.approx(grads[name], rel=1e-4), name
            assert sample.weight_norm[i] == pytest.approx(_norm(params[name]), rel=1e-5), name
            ratio = lr * grads[name] / before[name]
            assert sample.update_ratio[i] == pytest.approx(ratio, rel=1e-3, abs=1e-6), name
    # and the run's weights are the replay's
    for name, p in twin.named_parameters():
        torch.testing.assert_close(dict(model.named_parameters())[name], p, rtol=1e-4, atol=1e-6)


def test_dead_units_are_the_ones_that_never_fire(mnist_train):
    """A window as long as the epoch sees every training image once; with lr = 0 the weights
    stay as they are, so the oracle is one plain forward pass over the images: a unit is dead
    when its output is ≤ 0 at every position of every image. Units made unable to fire (a bias
    of −10⁴ before their ReLU) are among them."""
    model = lenet5()
    with torch.no_grad():
        model.features.conv1.bias[:2] = -1e4  # 2 of 6 channels
        model.classifier.fc1.bias[:30] = -1e4  # 30 of 120 features
    events: list = []
    config = TrainConfig(epochs=1, lr=0.0, dynamics_every=16, dead_window=16)
    training.fit(model, mnist_train, None, config, on_event=events.append)
    (sample,) = [e for e in events if isinstance(e, DynamicsEvent)]
    assert sample.window == 16
    layers, info = list(sample.activations), mnist_train.info
    outputs = probe.activations(
        model, data.normalize(mnist_train.images, info.mean, info.std), layers
    )
    expected = {
        name: float(
            (out.transpose(0, 1).reshape(out.shape[1], -1).amax(dim=1) <= 0).double().mean()
        )
        for name, out in outputs.items()
    }
    shares = dict(zip(sample.activations, sample.dead_share, strict=True))
    assert shares == pytest.approx(expected, abs=1e-7)
    assert shares["features.relu1"] == pytest.approx(2 / 6)
    assert shares["classifier.relu1"] >= 30 / 120


def test_a_reused_activation_counts_each_call_apart(mnist_train):
    """torchvision's ResNet calls one `relu` module many times: each call is its own layer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    relu = torch.nn.ReLU()
    model.add_module("conv", torch.nn.Conv2d(1, 4, 3))
    model.add_module("relu", relu)
    model.add_module("conv2", torch.nn.Conv2d(4, 8, 3))
    model.add_module("again", relu)
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(8 * 24 * 24, 10))
    events: list = []
    training.fit(
        model, data.take_first(mnist_train, 128), None, TrainConfig(epochs=1, dynamics_every=1),
        on_event=events.append,
    )  # fmt: skip
    last = [e for e in events if isinstance(e, DynamicsEvent)][-1]
    assert last.activations == ("relu", "relu#1")
    assert last.units == (4, 8)


def test_histograms_count_every_value_in_fixed_bins(run):
    model, result, _ = run
    log = result.dynamics
    assert sorted(log.histograms) == [0, 1, 2]
    params = dict(model.named_parameters())
    for name, edges in log.edges.items():
        assert edges.shape == (65,)
        assert edges[0] == -edges[-1]
        for epoch, counts in log.histograms.items():
            assert counts[name].dtype == torch.int32
            assert int(counts[name].sum()) == params[name].numel(), (name, epoch)
        # the oracle: numpy's histogram of the final weights with the same edges, plus the
        # values outside them
        values = params[name].detach().double().numpy().ravel()
        inside, _ = np.histogram(values, bins=edges.double().numpy())
        expected = [int((values < float(edges[0])).sum()), *inside.tolist()]
        expected.append(int((values >= float(edges[-1])).sum()))
        # numpy's last bin is closed; ours is half-open with the top edge in the overflow
        expected[-2] -= int((values == float(edges[-1])).sum())
        assert log.histograms[2][name].tolist() == expected, name


def test_a_zero_bias_borrows_its_weights_range():
    model = lenet5()
    with torch.no_grad():
        model.classifier.fc1.bias.zero_()
    edges = dynamics.initial_edges(model, 8)
    largest = float(model.classifier.fc1.weight.detach().abs().max())
    assert float(edges["classifier.fc1.bias"][-1]) == pytest.approx(2 * largest)
    nan = torch.tensor([math.nan, 1.0, -5.0])
    counts = dynamics.histogram_counts(nan, torch.tensor([-1.0, 0.0, 1.0]))
    assert counts.tolist() == [1, 0, 0, 2]  # −5 under; 1.0 and NaN over


def test_the_checkpoint_keeps_the_dynamics_and_the_card_their_epochs(run, tmp_path):
    model, result, _ = run
    info = data.dataset_info("mnist")
    card = runs.result_card(
        name="dyn",
        architecture="lenet5",
        options={},
        info=info,
        dataset_source="train: MNIST",
        facts={},
        result=result,
        command="",
    )
    path = checkpoints.save_checkpoint(
        model, card, tmp_path / "dyn", filter_history=result.filter_history,
        dynamics=result.dynamics,
    )  # fmt: skip
    stored = safetensors.torch.load_file(path)
    keys = [k for k in stored if k.startswith("lens_history/dynamics/")]
    assert "lens_history/dynamics/histogram/epoch2/features.conv1.weight" in keys
    assert "lens_history/dynamics/steps/update_ratio/classifier.fc3.weight" in keys
    loaded = checkpoints.load_checkpoint(path)
    assert not loaded.warnings
    log = loaded.dynamics
    original = result.dynamics
    assert log.tensors == original.tensors
    assert log.activations == original.activations
    assert log.units == [6, 16, 120, 84]
    assert log.steps == original.steps
    for epoch, counts in original.histograms.items():
        for name, tensor in counts.items():
            assert torch.equal(log.histograms[epoch][name], tensor)
    series, expected = log.series(), original.series()
    for stat, by_name in expected.values.items():
        for name, values in by_name.items():
            np.testing.assert_allclose(series.values[stat][name], values, rtol=1e-6)
    # the filter slider gets every conv layer of LeNet-5 at every epoch
    assert {e: sorted(v) for e, v in loaded.filter_history.items()} == {
        e: ["features.conv1", "features.conv2"] for e in (0, 1, 2)
    }
    # True numbers: the last epoch's weight norms in the card are the saved weights' norms.
    record = json.loads(path.with_suffix(".json").read_text())["dynamics"]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    saved = safetensors.torch.load_file(path)
    for name, norm in zip(record["tensors"], record["epochs"][-1]["weight_norm"], strict=True):
        assert norm == pytest.approx(_norm(saved[name]), rel=1e-6), name
    assert loaded.dynamics.summaries[-1].weight_norm == record["epochs"][-1]["weight_norm"]


def test_cards_with_malformed_dynamics_are_refused(run):
    _, result, _ = run
    good = {"format": checkpoints.FORMAT, "name": "x", "architecture": "lenet5"}
    record = result.dynamics.card_record()
    assert checkpoints.Card.from_dict({**good, "dynamics": record}).dynamics == record
    # a card without dynamics stays valid and writes no key for them
    plain = checkpoints.Card.from_dict(good)
    assert plain.dynamics == {}
    assert "dynamics" not in plain.to_dict()
    # null stands for a number not measured (a tensor without gradient, a layer not seen yet)
    unmeasured = json.loads(json.dumps(record))
    unmeasured["epochs"][0]["grad_norm"][0] = None
    unmeasured["epochs"][0]["dead_share"][0] = None
    assert checkpoints.Card.from_dict({**good, "dynamics": unmeasured}).dynamics == unmeasured
    short = json.loads(json.dumps(record))
    short["epochs"][0]["grad_norm"].pop()
    negative = json.loads(json.dumps(record))
    negative["epochs"][1]["update_ratio"][0] = -1.0
    words = json.loads(json.dumps(record))
    words["epochs"][0]["dead_share"][0] = "dead"
    stray = json.loads(json.dumps(record))
    stray["epochs"][0]["loss"] = 1.0
    share = json.loads(json.dumps(record))
    share["epochs"][0]["dead_share"][0] = 1.5
    for bad, says in (
        (short, "'dynamics.epochs[0].grad_norm' has 9 values for 10 tensors"),
        (negative, "dynamics.epochs[1].update_ratio[0]"),
        (words, "dynamics.epochs[0].dead_share[0]"),
        (stray, "unexpected key 'loss'"),
        (share, "a number from 0 to 1"),
        ({**record, "units": [1]}, "one count per activation"),
        ([record], "'dynamics' should be an object"),
    ):
        with pytest.raises(CheckpointError, match=r"^card: .*" + says.replace("[", r"\[")):
            checkpoints.Card.from_dict({**good, "dynamics": bad})


def test_damaged_dynamics_in_a_file_are_skipped_with_a_warning(run, tmp_path):
    model, _, _ = run
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["lens_history/dynamics/steps/step"] = torch.zeros(3, 2)  # not a vector
    path = tmp_path / "damaged.safetensors"
    safetensors.torch.save_file(tensors, path)
    loaded = checkpoints.load_checkpoint(path, architecture="lenet5")
    assert loaded.dynamics is None
    assert loaded.warnings == [
        "damaged.safetensors: its training dynamics are damaged and were skipped"
    ]


def test_ema_is_tensorboards_debiased_average():
    assert dynamics.ema([5.0], 0.9).tolist() == [5.0]
    assert dynamics.ema([2.0, 2.0, 2.0], 0.6).tolist() == pytest.approx([2.0, 2.0, 2.0])
    # last = 0.5·0 + 0.5·0 = 0 → 0; last = 0.5·0 + 0.5·10 = 5 → 5 / (1 − 0.25)
    assert dynamics.ema([0.0, 10.0], 0.5).tolist() == pytest.approx([0.0, 20 / 3])
    smoothed = dynamics.ema([1.0, math.nan, 3.0], 0.0)
    assert [smoothed[0], smoothed[2]] == [1.0, 3.0]
    assert math.isnan(smoothed[1])
    with pytest.raises(ValueError, match="smoothing"):
        dynamics.ema([1.0], 1.0)


def test_every_conv_layer_is_snapshotted_while_the_budget_allows():
    torch.manual_seed(0)
    resnet = models.build_model("resnet18-small")
    convs = [(n, m) for n, m in resnet.named_modules() if isinstance(m, torch.nn.Conv2d)]
    sizes = [m.weight.numel() * 4 * 9 for _, m in convs]  # 8 epochs: 9 snapshots, float32
    budget = 2 * 1024**2
    fits = next(i for i in range(len(sizes) + 1) if sum(sizes[: i + 1]) > budget)
    kept, note = loop._snapshot_convs(
        resnet, TrainConfig(epochs=8, snapshot_layers=None, snapshot_budget=budget)
    )
    assert [n for n, _ in kept] == [n for n, _ in convs[:fits]]
    rest = sum(sizes[fits:]) / 1024**2
    assert note == (
        f"filter snapshots per epoch cover the first {fits} of 20 conv layers: the others "
        f"would add {rest:.1f} MB to the checkpoint"
    )
    kept, note = loop._snapshot_convs(lenet5(), TrainConfig(epochs=8, snapshot_layers=None))
    assert [n for n, _ in kept] == ["features.conv1", "features.conv2"]
    assert note is None
    with pytest.raises(LensError, match="histogram_bins"):
        training.check_config(TrainConfig(histogram_bins=1))
