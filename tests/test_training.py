"""fit() on real MNIST slices: learning, determinism, stopping, NaN, schedules, snapshots."""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from dashboard import data, models, training
from dashboard.base.errors import LensError, UnknownNameError
from dashboard.training import EpochEvent, StepEvent, TrainConfig

# Tiny models: on 2 shared, busy cores a second torch thread mostly waits at barriers.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist_train(shared_datasets: Path) -> data.Split:
    split = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    return data.take_first(split, 2000)


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    split = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    return data.take_first(split, 1000)


def course_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)


def manual_accuracy(model: torch.nn.Module, split: data.Split) -> tuple[float, float]:
    """The oracle: the whole split in one forward pass, normalized by hand."""
    mean, std = split.info.mean[0], split.info.std[0]
    x = (split.images.float() / 255 - mean) / std
    model.eval()
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits, split.labels).item()
    return loss, (logits.argmax(1) == split.labels).sum().item() / len(split)


def test_one_epoch_learns_and_reports_the_test_accuracy_it_reached(mnist_train, mnist_test):
    model = course_net()
    before_loss, before_accuracy = manual_accuracy(model, mnist_test)
    events: list[StepEvent | EpochEvent] = []
    result = training.fit(
        model, mnist_train, mnist_test, TrainConfig(epochs=1, log_every=8), on_event=events.append
    )
    steps = [e for e in events if isinstance(e, StepEvent)]
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [e.step for e in steps] == [8, 16, 24, 32]  # 2,000 / 64 → 32 steps, last one partial
    assert steps[-1].loss < steps[0].loss
    assert epochs == result.history
    assert result.stopped is None
    after_loss, after_accuracy = manual_accuracy(model, mnist_test)
    assert after_loss < before_loss
    assert after_accuracy > max(0.5, before_accuracy + 0.3)
    # The history's test numbers are those of the returned model, computed independently.
    assert result.final_test_accuracy == pytest.approx(after_accuracy, abs=1e-9)
    assert result.final_test_loss == pytest.approx(after_loss, rel=1e-5)
    assert training.evaluate_model(model, mnist_test, batch_size=300) == pytest.approx(
        (after_loss, after_accuracy), rel=1e-5
    )
    assert result.history[0].train_accuracy > 0.3
    assert (steps[-1].eta, result.device) == (0, "cpu")


def test_same_seed_gives_the_same_run_and_another_seed_does_not(mnist_train, mnist_test):
    config = TrainConfig(epochs=1, batch_size=100, seed=3, log_every=5)
    train = data.take_first(mnist_train, 1000)
    runs = [training.fit(course_net(3), train, mnist_test, config) for _ in range(2)]
    other = training.fit(course_net(3), train, mnist_test, dataclasses.replace(config, seed=4))

    def numbers(result: training.FitResult) -> list[tuple[float, ...]]:
        return [
            (e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy, e.lr, e.steps)
            for e in result.history
        ]

    assert numbers(runs[0]) == numbers(runs[1])
    a, b, c = (r.model.state_dict() for r in (*runs, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed drives the batch order
    assert numbers(runs[0]) != numbers(other)


def test_stop_flag_ends_the_run_after_the_current_step(mnist_train, mnist_test):
    calls = 0

    def stop_on_seventh_call() -> bool:
        nonlocal calls
        calls += 1
        return calls == 7

    result = training.fit(
        course_net(),
        mnist_train,
        mnist_test,
        TrainConfig(epochs=3),
        should_stop=stop_on_seventh_call,
    )
    assert result.stopped == "stopped by user at epoch 1, step 7"
    assert (calls, len(result.history)) == (7, 1)
    partial = result.history[0]
    assert (partial.steps, partial.steps_per_epoch, partial.partial) == (7, 32, True)
    # The stopped model is still tested, and the snapshots hold the state it stopped in.
    assert partial.test_accuracy is not None
    assert result.final_test_accuracy == partial.test_accuracy
    assert sorted(result.filter_history) == [0, 1]

    # A threading.Event set from the progress callback (the app's stop button) in epoch 2.
    stop = threading.Event()

    def on_event(event: StepEvent | EpochEvent) -> None:
        if isinstance(event, StepEvent) and (event.epoch, event.step) == (2, 5):
            stop.set()

    result = training.fit(
        course_net(),
        mnist_train,
        None,
        TrainConfig(epochs=3, log_every=1),
        on_event=on_event,
        should_stop=stop,
    )
    assert result.stopped == "stopped by user at epoch 2, step 5"
    assert [(e.epoch, e.steps) for e in result.history] == [(1, 32), (2, 5)]
    assert result.final_test_accuracy is None  # no test split given


def test_adam_took_exactly_the_steps_the_history_reports(mnist_train):
    model = course_net()
    calls = iter(range(1, 100))
    result = training.fit(
        model, mnist_train, None, TrainConfig(epochs=1), should_stop=lambda: next(calls) == 4
    )
    # Rebuild the optimizer's view independently: 4 Adam steps from the same start.
    reference = course_net()
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    x = (mnist_train.images[order].float() / 255 - 0.1307) / 0.3081
    y = mnist_train.labels[order]
    reference.train()
    for step in range(4):
        loss = F.cross_entropy(
            reference(x[64 * step : 64 * (step + 1)]), y[64 * step : 64 * (step + 1)]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert result.history[0].steps == 4
    for (name, got), want in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_a_huge_learning_rate_stops_with_the_reason_before_applying_the_bad_step(mnist_train):
    model = course_net()
    events: list[StepEvent | EpochEvent] = []
    weights_after_last_good_step: dict[str, torch.Tensor] = {}

    def on_event(event: StepEvent | EpochEvent) -> None:
        events.append(event)
        if isinstance(event, StepEvent):
            weights_after_last_good_step.update(
                {k: v.clone() for k, v in model.state_dict().items()}
            )

    result = training.fit(
        model,
        mnist_train,
        None,
        TrainConfig(epochs=2, lr=1e4, optimizer="sgd", log_every=1),
        on_event=on_event,
    )
    assert result.stopped is not None
    match = re.fullmatch(
        r"loss became (NaN|infinite) at epoch (\d), step (\d+): "
        r"lower the learning rate \(now 10000\)",
        result.stopped,
    )
    assert match, result.stopped
    epoch, step = int(match[2]), int(match[3])
    # Every step before the bad one was reported, with a finite loss; the bad one was not.
    steps = [e for e in events if isinstance(e, StepEvent) and e.epoch == epoch]
    assert [e.step for e in steps] == list(range(1, step))
    assert all(math.isfinite(e.loss) for e in steps)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights_after_last_good_step.items())


@pytest.mark.parametrize("optimizer", training.OPTIMIZERS)
def test_every_optimizer_trains_a_short_epoch(mnist_train, optimizer):
    model = course_net()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lr = 0.05 if optimizer in ("sgd", "momentum", "nesterov") else 1e-3
    result = training.fit(
        model,
        data.take_first(mnist_train, 640),
        None,
        TrainConfig(epochs=1, lr=lr, optimizer=optimizer, weight_decay=1e-4),
    )
    assert result.stopped is None
    assert math.isfinite(result.history[0].train_loss)
    assert all(not torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_optimizers_are_configured_as_named() -> None:
    params = list(course_net().parameters())
    made = {
        name: training.make_optimizer(iter(params), TrainConfig(optimizer=name, weight_decay=0.1))
        for name in training.OPTIMIZERS
    }
    kinds = {name: type(o).__name__ for name, o in made.items()}
    assert kinds == {
        "sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adam": "Adam", "adamw": "AdamW"
    }  # fmt: skip
    momentum = {
        n: (o.defaults.get("momentum"), o.defaults.get("nesterov")) for n, o in made.items()
    }
    assert momentum == {
        "sgd": (0, False), "momentum": (0.9, False), "nesterov": (0.9, True),
        "adam": (None, None), "adamw": (None, None),
    }  # fmt: skip
    assert all(o.defaults["weight_decay"] == 0.1 for o in made.values())


def _lrs(mnist_train: data.Split, schedule: str, epochs: int = 3) -> list[float]:
    steps: list[float] = []
    training.fit(
        course_net(),
        data.take_first(mnist_train, 256),  # 4 steps of 64 per epoch
        None,
        TrainConfig(epochs=epochs, lr=0.1, optimizer="momentum", schedule=schedule, log_every=1),
        on_event=lambda e: steps.append(e.lr) if isinstance(e, StepEvent) else None,
    )
    return steps


def _torch_lrs(make: type, per_step: bool, steps: int, epochs: int, **kwargs) -> list[float]:
    """The same schedule on a lone parameter, stepped by hand."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = make(optimizer, **kwargs)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step()
    return lrs


def test_learning_rate_schedules_follow_torch_and_their_formulas(mnist_train):
    sched = torch.optim.lr_scheduler
    assert _lrs(mnist_train, "constant") == [0.1] * 12

    step = _lrs(mnist_train, "step", epochs=6)  # a tenfold drop every 2 epochs
    assert step == pytest.approx([0.1] * 8 + [0.01] * 8 + [0.001] * 8)
    assert step == _torch_lrs(sched.StepLR, False, 4, 6, step_size=2, gamma=0.1)

    cosine = _lrs(mnist_train, "cosine")
    assert cosine == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 12)) for t in range(12)])
    assert cosine == _torch_lrs(sched.CosineAnnealingLR, True, 4, 3, T_max=12)

    onecycle = _lrs(mnist_train, "onecycle")
    assert onecycle == _torch_lrs(sched.OneCycleLR, True, 4, 3, max_lr=0.1, total_steps=12)
    # Warm-up from lr/25 to near the peak at 30 % of the run, then down far below the start.
    peak = onecycle.index(max(onecycle))
    assert peak == 3
    assert onecycle[0] == pytest.approx(0.1 / 25)
    assert 0.09 < onecycle[peak] <= 0.1
    assert onecycle[: peak + 1] == sorted(onecycle[: peak + 1])
    assert onecycle[peak:] == sorted(onecycle[peak:], reverse=True)
    assert onecycle[-1] < 0.1 / 25 / 10


def test_filter_snapshots_cover_every_epoch_from_the_initial_weights(mnist_train):
    model = course_net()
    initial = model.features.conv1.weight.detach().clone()
    result = training.fit(model, data.take_first(mnist_train, 256), None, TrainConfig(epochs=3))
    history = result.filter_history
    assert sorted(history) == [0, 1, 2, 3]
    shapes = {name: tuple(t.shape) for name, t in history[2].items()}
    assert shapes == {"features.conv1": (10, 1, 5, 5), "features.conv2": (20, 10, 5, 5)}
    assert torch.equal(history[0]["features.conv1"], initial)
    assert torch.equal(history[3]["features.conv2"], model.features.conv2.weight.detach())
    assert not torch.equal(history[1]["features.conv1"], history[2]["features.conv1"])
    assert history[3]["features.conv1"].device.type == "cpu"
    assert history[3]["features.conv1"].data_ptr() != model.features.conv1.weight.data_ptr()

    one = training.fit(
        course_net(), data.take_first(mnist_train, 64), None, TrainConfig(snapshot_layers=1)
    )
    assert [list(layers) for layers in one.filter_history.values()] == [["features.conv1"]] * 6


def test_a_batch_larger_than_the_data_shrinks_to_it_and_says_so(mnist_train):
    result = training.fit(
        course_net(),
        data.take_first(mnist_train, 300),
        None,
        TrainConfig(batch_size=5000, epochs=1),
    )
    assert (result.batch_size, result.history[0].steps_per_epoch) == (300, 1)
    assert result.notes == ["batch size 5000 is larger than the 300 training images; using 300"]


def test_batch_plans_share_every_epoch_evenly_between_processes() -> None:
    assert training.plan_batches(2000, 64) == (2000, 64, 64, 32, [])
    assert training.plan_batches(2001, 64, 2) == (2000, 64, 32, 32, [])  # one image sits out
    assert training.plan_batches(2000, 64, 2).per_process == 32
    assert training.plan_batches(129, 64) == (128, 64, 64, 2, [])  # no batch of a single image
    with pytest.raises(LensError, match="does not split evenly over 2 processes"):
        training.plan_batches(2000, 65, 2)


def test_bad_settings_are_refused_in_one_line(mnist_train):
    def fit(**changes) -> training.FitResult:
        return training.fit(
            course_net(), data.take_first(mnist_train, 64), None, TrainConfig(**changes)
        )

    with pytest.raises(LensError, match="epochs must be at least 1"):
        fit(epochs=0)
    with pytest.raises(LensError, match="learning rate must be a number ≥ 0"):
        fit(lr=-0.1)
    with pytest.raises(UnknownNameError, match="sgd, momentum, nesterov, adam, adamw"):
        fit(optimizer="rmsprop")
    with pytest.raises(UnknownNameError, match="constant, step, cosine, onecycle"):
        fit(schedule="linear")
    with pytest.raises(LensError, match="the training split is empty"):
        training.fit(course_net(), data.take_first(mnist_train, 0), None, TrainConfig())
    # lr 0 runs (a baseline) but says the weights will not move, and they do not.
    model = course_net()
    start = model.features.conv1.weight.detach().clone()
    result = training.fit(
        model, data.take_first(mnist_train, 64), None, TrainConfig(lr=0.0, epochs=1)
    )
    assert result.notes == ["learning rate is 0: the weights will not change"]
    assert torch.equal(model.features.conv1.weight, start)


def test_a_model_that_does_not_fit_the_data_is_one_clear_error(mnist_train):
    cifar_model = models.build_model("course-net", in_channels=3, num_classes=10, input_size=32)
    with pytest.raises(LensError, match=r"does not take this dataset's \(1, 28, 28\) images"):
        training.fit(cifar_model, data.take_first(mnist_train, 64), None, TrainConfig())
    five_classes = models.build_model("course-net", in_channels=1, num_classes=5, input_size=28)
    with pytest.raises(LensError, match="the dataset has 10 classes"):
        training.fit(five_classes, data.take_first(mnist_train, 64), None, TrainConfig())


def test_evaluate_model_restores_the_mode_and_matches_the_oracle(mnist_test):
    model = course_net()
    model.train()
    loss, accuracy = training.evaluate_model(model, mnist_test, batch_size=333)
    assert model.training
    expected_loss, expected_accuracy = manual_accuracy(model, mnist_test)
    assert accuracy == pytest.approx(expected_accuracy, abs=1e-12)
    assert loss == pytest.approx(expected_loss, rel=1e-5)


def test_devices_resolve_to_what_this_machine_has() -> None:
    assert training.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert training.resolve_device("auto").type == expected
    with pytest.raises(UnknownNameError, match="auto, cpu, cuda, mps"):
        training.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LensError, match="no CUDA GPU"):
            training.resolve_device("cuda")


def test_augmented_runs_are_seeded_too_and_differ_from_plain_ones(mnist_train):
    def weights(**changes) -> torch.Tensor:
        model = course_net()
        training.fit(
            model, data.take_first(mnist_train, 256), None, TrainConfig(epochs=1, **changes)
        )
        return model.features.conv1.weight.detach()

    augmented = weights(augment=True)
    assert torch.equal(augmented, weights(augment=True))
    assert not torch.equal(augmented, weights(augment=False))
    assert torch.equal(weights(augment=None), weights(augment=False))  # MNIST's default: none


def test_threads_apply_during_the_run_and_are_restored(mnist_train):
    seen = []
    torch.set_num_threads(1)
    training.fit(
        course_net(),
        data.take_first(mnist_train, 64),
        None,
        TrainConfig(threads=2),
        on_event=lambda event: seen.append(torch.get_num_threads()),
    )
    assert set(seen) == {2}
    assert torch.get_num_threads() == 1
