"""The live view of a training run (dashboard/training/live.py): copies of the weights taken
between steps on real MNIST, and what the view computes from them checked against the final
model, `F.conv2d` and a plain forward pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from dashboard import data, models
from dashboard.base.errors import UnknownNameError
from dashboard.training import TrainConfig, live, runs

TRAIN_IMAGES = 2000  # 32 steps of 64
TEST_IMAGES = 500


@pytest.fixture(scope="module")
def finished(shared_datasets: Path) -> tuple[runs.TrainingRun, list[live.Snapshot]]:
    """One epoch of lenet5, a copy of the weights at every logged step (every 4 steps)."""
    train = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    spec = runs.RunSpec(
        "lenet5",
        "mnist",
        TrainConfig(epochs=1, seed=0, log_every=4),
        limit_train=TRAIN_IMAGES,
        limit_test=TEST_IMAGES,
    )
    run = runs.start_run(spec, train, test, heartbeat_timeout=120, live_every_s=0.0)
    assert run.live is not None
    seen: dict[int, live.Snapshot] = {}
    while not run.done:  # the page's reads, racing the thread's copies
        snapshot = run.live.latest()
        if snapshot is not None:
            seen[snapshot.number] = snapshot
        time.sleep(0.005)
    assert run.join(120)
    assert run.status == runs.FINISHED
    final = run.live.latest()
    assert final is not None
    seen[final.number] = final
    return run, [seen[n] for n in sorted(seen)]


def test_copies_are_taken_between_steps_and_the_last_is_the_final_model(finished):
    run, snapshots = finished
    numbers = [s.number for s in snapshots]
    assert numbers == sorted(set(numbers))
    assert len(snapshots) >= 3
    assert [(s.epoch, s.step) for s in snapshots] == sorted((s.epoch, s.step) for s in snapshots)
    final = snapshots[-1]
    assert (final.epoch, final.step, final.steps_per_epoch) == (1, 32, 32)
    assert final.where == "epoch 1, step 32/32"
    trained = run.result.model.state_dict()
    assert final.state.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(final.state[key], value.cpu()), key
    # Copies, not views of the training tensors: an early copy kept its early weights.
    first = snapshots[0].state["features.conv1.weight"]
    assert not torch.equal(first, trained["features.conv1.weight"])


def test_the_view_matches_conv2d_and_the_model_on_the_same_image(finished, shared_datasets):
    run, snapshots = finished
    weights = run.live
    assert weights.convs == ["features.conv1", "features.conv2"]
    assert weights.layers[:3] == ["features.conv1", "features.relu1", "features.pool1"]
    snapshot = snapshots[len(snapshots) // 2]
    view = weights.view(snapshot, 5, "features.conv1", "features.conv2")

    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    assert torch.equal(torch.from_numpy(view.image), test.images[5])
    assert view.label == int(test.labels[5])
    x = data.normalize(test.images[5:6], test.info.mean, test.info.std)
    w, b = snapshot.state["features.conv1.weight"], snapshot.state["features.conv1.bias"]
    torch.testing.assert_close(torch.from_numpy(view.maps), F.conv2d(x, w, b, padding=2)[0])
    assert torch.equal(torch.from_numpy(view.first_filters), w)
    assert torch.equal(
        torch.from_numpy(view.later_filters), snapshot.state["features.conv2.weight"]
    )
    model = models.build_model("lenet5", in_channels=1, num_classes=10, input_size=28).eval()
    model.load_state_dict(snapshot.state)
    with torch.no_grad():
        expected = torch.softmax(model(x)[0], dim=0)
    torch.testing.assert_close(torch.from_numpy(view.probabilities), expected)
    assert abs(view.probabilities.sum() - 1) < 1e-5


def test_a_bad_choice_is_refused_and_a_run_can_go_without_the_view(finished, shared_datasets):
    run, snapshots = finished
    with pytest.raises(UnknownNameError, match="live image 99 out of range: 0 … 31"):
        run.live.view(snapshots[-1], 99, "features.conv1", None)
    with pytest.raises(UnknownNameError, match=r"layer 'classifier\.fc1' has no maps"):
        run.live.view(snapshots[-1], 0, "classifier.fc1", None)
    with pytest.raises(UnknownNameError, match=r"'features\.relu1' is not a conv layer"):
        run.live.view(snapshots[-1], 0, "features.conv1", "features.relu1")

    train = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    spec = runs.RunSpec("course-net", "mnist", TrainConfig(epochs=1), limit_train=256)
    quiet = runs.start_run(spec, train, None, heartbeat_timeout=120, live_every_s=None)
    assert quiet.join(120)
    assert quiet.status == runs.FINISHED
    assert quiet.live is None
    assert quiet.live_error == ""
