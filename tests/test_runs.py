"""Background training runs (dashboard/training/runs.py) on real MNIST: events, Stop latency, the
heartbeat timeout, a cached model left untouched, two runs at once, saving with its card."""

from __future__ import annotations

import dataclasses
import shlex
import threading
import time
from pathlib import Path

import pytest
import torch

from dashboard import cli, data, models, training
from dashboard.base import paths, work
from dashboard.base.errors import LensError
from dashboard.models import checkpoints
from dashboard.training import EpochEvent, StepEvent, TrainConfig, runs

TRAIN_IMAGES = 2000  # 32 steps of 64 (the last one 16 images)
TEST_IMAGES = 1000


@pytest.fixture(scope="module")
def mnist_train(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "train", data_root=shared_datasets, download=False)


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets, download=False)


def spec(architecture: str = "course-net", **config) -> runs.RunSpec:
    options = config.pop("options", {})
    return runs.RunSpec(
        architecture,
        "mnist",
        TrainConfig(**{"epochs": 1, "seed": 0} | config),
        options=options,
        limit_train=TRAIN_IMAGES,
        limit_test=TEST_IMAGES,
    )


def start(train: data.Split, test: data.Split, run_spec: runs.RunSpec, **kwargs):
    # One heartbeat, then none: give a loaded machine time to train before the run counts its
    # tab as closed (10 s by default); a run a failed test leaves behind still ends by itself.
    kwargs.setdefault("heartbeat_timeout", 120)
    run = runs.start_run(run_spec, train, test, **kwargs)
    run.heartbeat()
    return run


def finish(run: runs.TrainingRun, timeout: float = 120) -> runs.TrainingRun:
    assert run.join(timeout), f"{run.label} did not end in {timeout} s"
    return run


def wait_for_first_event(run: runs.TrainingRun, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not run.events_since(0):
        assert time.monotonic() < deadline, "no event arrived"
        assert not run.done, run.reason
        time.sleep(0.01)


def test_a_run_trains_in_the_background_and_sends_every_event(mnist_train, mnist_test):
    run = finish(start(mnist_train, mnist_test, spec(epochs=2)))
    assert run.status == runs.FINISHED
    assert run.reason == "finished: 2 epochs trained"
    assert run.train_images == TRAIN_IMAGES
    assert run.test_images == TEST_IMAGES
    # log_every=20 over 32 steps: steps 20 and 32, then the epoch, twice.
    events = run.events_since(0)
    kinds = [
        (type(e).__name__, e.epoch, e.steps if isinstance(e, EpochEvent) else e.step)
        for e in events
    ]
    # The layers' statistics are sampled every 50 steps (the 50th is the second epoch's 18th)
    # and at each epoch's last step.
    assert kinds == [
        ("StepEvent", 1, 20), ("DynamicsEvent", 1, 32), ("StepEvent", 1, 32), ("EpochEvent", 1, 32),
        ("DynamicsEvent", 2, 18), ("StepEvent", 2, 20), ("DynamicsEvent", 2, 32),
        ("StepEvent", 2, 32), ("EpochEvent", 2, 32),
    ]  # fmt: skip
    assert run.events_since(4) == events[4:]
    assert run.history == [e for e in events if isinstance(e, EpochEvent)]
    # The reported test accuracy is the trained model's on the 1,000 test images (oracle).
    loss, accuracy = training.evaluate_model(
        run.result.model, data.take_first(mnist_test, TEST_IMAGES)
    )
    assert run.history[-1].test_accuracy == accuracy
    assert run.history[-1].test_loss == pytest.approx(loss, rel=1e-6)
    progress = run.progress()
    assert (progress.fraction, progress.epoch, progress.step) == (1.0, 2, 32)
    assert progress.test_accuracy == accuracy


def test_live_curve_puts_steps_at_fractional_epochs_and_tests_at_epoch_ends():
    step = StepEvent(1, 8, 32, 0.9, 0.7, 1e-3, 100.0, 1.0, 3.0)
    end = dataclasses.replace(step, step=32, loss=0.5, accuracy=0.8)
    epoch = EpochEvent(1, 0.6, 0.75, 0.4, 0.85, 1e-3, 2.0, 100.0, 32, 32)
    partial = EpochEvent(2, 0.3, 0.9, 0.35, 0.88, 1e-3, 1.0, 100.0, 8, 32)
    later = dataclasses.replace(step, epoch=2)
    curve = runs.live_curve([step, end, epoch, later, partial], "r", "accuracy")
    assert list(curve.epochs) == [0.25, 1.0, 1.25]
    assert list(curve.train) == [0.7, 0.8, 0.7]
    assert list(curve.test) == [None, 0.85, 0.88]
    loss = runs.live_curve([step, end, epoch], "r", "loss")
    assert (list(loss.train), list(loss.test)) == ([0.9, 0.5], [None, 0.4])
    # The same events by global step (32 a epoch) and by seconds since the start: a test value
    # sits where its epoch's last logged step does.
    by_step = runs.live_curve([step, end, epoch, later, partial], "r", "accuracy", "step")
    assert list(by_step.epochs) == [8.0, 32.0, 40.0]
    assert list(by_step.test) == [None, 0.85, 0.88]
    timed = [dataclasses.replace(step, elapsed=1.5), dataclasses.replace(end, elapsed=4.0), epoch]
    by_time = runs.live_curve(timed, "r", "loss", "seconds")
    assert (list(by_time.epochs), list(by_time.test)) == ([1.5, 4.0], [None, 0.4])
    with pytest.raises(ValueError, match="unknown axis 'batch'"):
        runs.live_curve([step], "r", "loss", "batch")
    card_curve = runs.history_curve([runs.epoch_record(epoch), runs.epoch_record(partial)], "c")
    assert list(card_curve.epochs) == [1.0, 1.25]
    assert list(card_curve.test) == [0.85, 0.88]
    assert list(card_curve.train) == [0.75, None]  # a few batches of a stopped epoch: left out


def test_stop_ends_the_run_within_a_second(mnist_train, mnist_test):
    run = start(mnist_train, mnist_test, spec(epochs=500))
    wait_for_first_event(run)
    asked = time.monotonic()
    run.stop()
    assert run.status in (runs.STOPPING, runs.STOPPED)
    finish(run, timeout=30)
    latency = run.ended - asked
    print(f"Stop latency: {latency * 1000:.0f} ms (the step, then the partial epoch's test)")
    assert latency < 2.0
    assert run.status == runs.STOPPED
    assert run.reason.startswith("stopped by user at epoch 1, step ")
    assert not run.abandoned
    assert run.history[-1].partial
    assert run.history[-1].test_accuracy is not None  # the partial epoch was tested
    progress = run.progress()  # where it stopped, also between two logged steps
    assert (progress.epoch, progress.step) == (1, run.history[-1].steps)


def test_a_run_without_heartbeats_stops_itself(mnist_train, mnist_test):
    timeout = 1.0
    run = runs.start_run(spec(epochs=500), mnist_train, mnist_test, heartbeat_timeout=timeout)
    finish(run, timeout=30)  # nobody calls heartbeat(): the tab is "closed"
    assert run.abandoned
    assert run.status == runs.STOPPED
    assert "its browser tab was gone for 1 s" in run.reason
    assert timeout <= run.ended - run.started < timeout + 10
    assert run.result is not None  # a stopped run keeps its weights


def test_heartbeats_or_a_live_session_keep_a_run_going(mnist_train, mnist_test):
    alive = {"value": True}
    timeout = 1.5  # generous: the test thread's 0.2 s sleeps stretch on busy cores
    beating = start(mnist_train, mnist_test, spec(epochs=500), heartbeat_timeout=timeout)
    watched = start(
        mnist_train,
        mnist_test,
        spec(epochs=500, seed=1),
        heartbeat_timeout=timeout,
        alive=lambda: alive["value"],
        owner="another tab",
    )
    try:
        for _ in range(20):  # 4 s: over twice the timeout
            beating.heartbeat()
            time.sleep(0.2)
        assert not beating.done, beating.reason
        assert not watched.done, watched.reason  # no heartbeat, but its session is connected
        beating.stop()
        alive["value"] = False  # the tab closes
        finish(watched, timeout=30)
        assert watched.abandoned
    finally:
        beating.stop()
        watched.stop()
    finish(beating)
    assert not beating.abandoned


def test_the_cached_model_passed_in_is_never_modified(mnist_train, mnist_test):
    torch.manual_seed(5)
    cached = models.build_model("course-net").eval()
    before = {k: v.clone() for k, v in cached.state_dict().items()}
    run = finish(start(mnist_train, mnist_test, spec(), initial=cached))
    assert run.status == runs.FINISHED
    after = cached.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not cached.training
    assert run.result.model is not cached
    # The run started from the cached weights (its snapshot before step 1), then moved on.
    start_filters = run.result.filter_history[0]["features.conv1"]
    assert torch.equal(start_filters, before["features.conv1.weight"])
    trained = run.result.model.state_dict()["features.conv1.weight"]
    assert not torch.equal(trained, before["features.conv1.weight"])
    assert "started from the weights of the selected model (6 of 6 tensors copied)" in run.notes


def test_two_runs_at_once_stay_isolated(mnist_train, mnist_test):
    a_spec = spec("course-net", epochs=2, seed=0)
    b_spec = spec("lenet5", epochs=2, seed=1, options={"pooling": "avg"})
    a = start(mnist_train, mnist_test, a_spec, owner="session a")
    b = start(mnist_train, mnist_test, b_spec, owner="session b")
    assert {a, b} <= set(runs.active_runs())
    finish(a)
    finish(b)
    assert (a.status, b.status) == (runs.FINISHED, runs.FINISHED)
    assert {type(a.result.model.features.pool1), type(b.result.model.features.pool1)} == {
        torch.nn.MaxPool2d,
        torch.nn.AvgPool2d,
    }
    assert a.history != b.history
    # Oracle: each equals the same run trained alone afterwards, weight for weight.
    for together, run_spec in ((a, a_spec), (b, b_spec)):
        alone = finish(start(mnist_train, mnist_test, run_spec))
        assert [e.test_accuracy for e in alone.history] == [
            e.test_accuracy for e in together.history
        ]
        for key, value in alone.result.model.state_dict().items():
            torch.testing.assert_close(together.result.model.state_dict()[key], value)


def test_a_seed_set_in_another_thread_waits_for_a_seeded_block():
    # The race behind a flaky run: one run's thread seeded the global generator while the next
    # run's model was being built from its own seed, so that model's weights were neither seed's.
    with work.seeded(0):
        expected = torch.rand(4)
    inside, reseeded = threading.Event(), threading.Event()

    def reseed() -> None:
        inside.wait(10)
        with work.seeded(99, keep_global=False):
            reseeded.set()

    other = threading.Thread(target=reseed)
    other.start()
    with work.seeded(0):
        first = torch.rand(2)
        inside.set()
        assert not reseeded.wait(0.5)  # held off while this block draws
        drawn = torch.cat([first, torch.rand(2)])
    other.join(10)
    assert reseeded.is_set()
    torch.testing.assert_close(drawn, expected)


def test_one_run_per_session_and_a_cap_per_server(mnist_train, mnist_test):
    run = start(mnist_train, mnist_test, spec(epochs=500), owner="tab")
    try:
        with pytest.raises(LensError, match="is still training: stop it before starting another"):
            runs.start_run(spec(), mnist_train, mnist_test, owner="tab")
        with pytest.raises(LensError, match=r"training on this server already \(the limit is 1\)"):
            runs.start_run(spec(), mnist_train, mnist_test, owner="other tab", max_active=1)
    finally:
        run.stop()
    finish(run)
    assert run not in runs.active_runs()


def test_bad_settings_fail_before_a_thread_starts_and_errors_in_the_thread_are_reported(
    mnist_train, mnist_test
):
    with pytest.raises(LensError, match="epochs must be at least 1"):
        runs.start_run(spec(epochs=0), mnist_train, mnist_test)
    with pytest.raises(LensError, match="lenet5 has no option 'width'"):
        runs.start_run(spec("lenet5", options={"width": 2}), mnist_train, mnist_test)
    broken = dataclasses.replace(spec(), limit_test=0)  # an empty test split fails inside fit
    run = finish(runs.start_run(broken, mnist_train, mnist_test))
    assert run.status == runs.FAILED
    assert run.reason == "failed: the test split is empty"
    assert run not in runs.active_runs()


def test_a_saved_run_has_its_card_and_the_command_that_repeats_it(
    mnist_train, mnist_test, tmp_path
):
    run_spec = spec("lenet5", epochs=1, lr=0.002, options={"batch_norm": True})
    run = finish(start(mnist_train, mnist_test, run_spec))
    saved = runs.save_run(run, "bn-run", folder=tmp_path)
    assert saved == tmp_path / "bn-run.safetensors"
    assert run.saved_as == saved
    loaded = checkpoints.load_checkpoint(saved)
    card = loaded.card
    assert card.architecture == "lenet5"
    assert card.model_args["options"] == {"batch_norm": True}
    assert card.history == [runs.epoch_record(e) for e in run.history]
    assert card.metrics["test_accuracy"] == run.result.final_test_accuracy
    assert card.training["train_images"] == TRAIN_IMAGES
    assert "first 2,000 used" in card.dataset_source
    assert set(loaded.filter_history) == {0, 1}
    # The weights on disk give the card's accuracy (oracle: evaluate the loaded model).
    _, accuracy = training.evaluate_model(loaded.model, data.take_first(mnist_test, TEST_IMAGES))
    assert accuracy == card.metrics["test_accuracy"]
    # The command parses with the real command line into the run's own settings.
    words = shlex.split(card.command)
    assert words[:4] == ["python", "-m", "dashboard", "train"]
    args = cli.build_parser().parse_args(words[3:])
    config = run_spec.config
    assert (args.model, args.dataset, args.epochs, args.lr, args.seed) == (
        "lenet5", "mnist", 1, config.lr, config.seed,
    )  # fmt: skip
    assert (args.limit_train, args.limit_test, args.option) == (2000, 1000, [("batch_norm", True)])
    assert args.threads == 1  # a run in the app trains on one thread unless told otherwise
    assert Path(args.out) == tmp_path / "bn-run"


def test_saving_never_overwrites_silently_nor_leaves_runs(mnist_train, mnist_test, tmp_path):
    run = finish(start(mnist_train, mnist_test, spec()))
    saved = runs.save_run(run, "taken", folder=tmp_path)
    before = saved.read_bytes(), saved.with_suffix(".json").read_bytes()
    with pytest.raises(LensError, match=r"exists in .*: tick “overwrite the existing run”"):
        runs.save_run(run, "taken", folder=tmp_path)
    assert (saved.read_bytes(), saved.with_suffix(".json").read_bytes()) == before
    runs.save_run(run, "taken", folder=tmp_path, overwrite=True)
    for name in ("../escape", "/abs/path", "a/b", ".hidden", "", "con"):
        with pytest.raises(LensError):
            runs.save_run(run, name, folder=tmp_path)
    with pytest.raises(LensError, match="trained/ holds the shipped checkpoints"):
        runs.save_run(run, "x", folder=paths.TRAINED_DIR)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(LensError, match="could not save") as caught:
        runs.save_run(run, "x", folder=blocked / "runs")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file",
        "taken.json",
        "taken.safetensors",
    ]


def test_a_diverged_run_says_why_and_is_not_saved(mnist_train, mnist_test, tmp_path):
    run = finish(start(mnist_train, mnist_test, spec(optimizer="sgd", lr=1e6)))
    assert run.status == runs.DIVERGED
    assert run.reason.startswith("loss became ")
    assert "lower the learning rate" in run.reason
    with pytest.raises(LensError, match="a diverged run is not saved"):
        runs.save_run(run, "nan-run", folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_runs_label_names_its_model_options_optimizer_rate_and_batch():
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=128)
    spec = runs.RunSpec("lenet5", "mnist", config, {"activation": "tanh", "pool": "avg"})
    assert spec.label == "lenet5 (activation=tanh, pool=avg) · sgd lr 0.05 · batch 128"
    assert runs.RunSpec("alexnet", "cifar10").label == "alexnet · adam lr 0.001 · batch 64"
