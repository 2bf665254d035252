"""Whether a map can be trusted, checked against independent computations on the shipped
LeNet-5 and real MNIST test digits: the cascading-randomization sanity check (the weights it
says it changes, and only those; maps of the randomized model by torch.autograd.grad; Spearman
from ranks by hand), deletion/insertion curves (end points and a step by a plain forward pass,
areas by the trapezoid rule), and `python -m dashboard explain`'s record and picture."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import rankdata
from torch import nn

from dashboard import cli, data
from dashboard.analysis import attribution, faithfulness, inputs, sanity
from dashboard.models import checkpoints

REPO = Path(__file__).resolve().parent.parent
LENET5 = REPO / "trained" / "lenet5-mnist.safetensors"
LENET5_LAYERS = [
    "features.conv1",
    "features.conv2",
    "classifier.fc1",
    "classifier.fc2",
    "classifier.fc3",
]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return checkpoints.load_checkpoint(LENET5).model


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 16)


def softmax_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(copy.deepcopy(model).eval()(x).double(), dim=1)


def input_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.eval()(x)[0, target], x)
    return grad[0]


def hand_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of the average ranks."""
    return float(np.corrcoef(rankdata(a.ravel()), rankdata(b.ravel()))[0, 1])


def test_the_cascade_changes_exactly_the_layers_it_names(model) -> None:
    assert sanity.parametrized_layers(model, (1, 28, 28)) == LENET5_LAYERS
    original = {k: v.clone() for k, v in model.state_dict().items()}
    changed_so_far: set[str] = set()
    for step, (layer, changed, own) in enumerate(sanity.cascade(model, (1, 28, 28), seed=3)):
        assert own is not model
        if step == 0:
            assert layer == sanity.ORIGINAL
            assert changed == ()
        else:
            assert layer == LENET5_LAYERS[-step]  # output first
            assert set(changed) == {f"{layer}.weight", f"{layer}.bias"}
            fresh = copy.deepcopy(dict(model.named_modules())[layer])
            torch.manual_seed(3 + step)
            fresh.reset_parameters()  # PyTorch's own initialization from that seed
            for name, value in fresh.state_dict().items():
                torch.testing.assert_close(own.state_dict()[f"{layer}.{name}"], value)
        changed_so_far |= set(changed)
        now = own.state_dict()
        differ = {k for k in original if not torch.equal(original[k], now[k])}
        assert differ == changed_so_far  # every layer above stays randomized, none below moved
    assert changed_so_far == set(original)  # in the end every parameter was re-initialized
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())


def test_the_sanity_check_explains_the_randomized_model(model, mnist_test) -> None:
    x = inputs.model_input(mnist_test.images[0].numpy(), mnist_test.info)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = sanity.sanity_check(model, x, mnist_test.info, ("saliency", "grad-cam"), seed=3)
    assert check.layers == [sanity.ORIGINAL, *reversed(LENET5_LAYERS)]
    assert check.target == int(softmax_of(model, x).argmax()) == 7
    randomized = list(sanity.cascade(model, (1, 28, 28), seed=3))[-1][2]  # the whole cascade
    last = check.steps[-1]
    expected = input_gradient(randomized, x, check.target)
    np.testing.assert_allclose(last.maps["saliency"].values, expected.numpy(), atol=1e-6)
    assert last.predicted == int(softmax_of(randomized, x).argmax())
    first = check.steps[0].maps["saliency"]
    np.testing.assert_allclose(first.values, input_gradient(model, x, 7).numpy(), atol=1e-6)
    for step in check.steps:
        for method in check.methods:
            a, b = check.steps[0].maps[method], step.maps[method]
            if np.ptp(b.ranking) > 0:
                assert step.spearman[method] == pytest.approx(
                    hand_spearman(a.ranking, b.ranking), abs=1e-9
                )
                assert step.spearman_signed[method] == pytest.approx(
                    hand_spearman(a.signed, b.signed), abs=1e-9
                )
            else:
                assert step.spearman[method] == 0.0  # a constant map shares no ranking
    assert check.correlations("saliency")[0] == pytest.approx(1.0)
    for method, flagged in check.flagged.items():
        assert flagged == (last.spearman[method] >= sanity.FLAG_THRESHOLD)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(sum((y[i] + y[i + 1]) / 2 * (x[i + 1] - x[i]) for i in range(len(x) - 1)))


def test_deletion_and_insertion_curves_by_a_plain_forward_pass(model, mnist_test) -> None:
    chosen = [0, 3, 5]
    result = faithfulness.faithfulness(model, mnist_test, ("saliency",), images=chosen, steps=4)
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75, 1])
    assert result.methods == ("saliency", faithfulness.RANDOM)
    assert result.indices.tolist() == chosen
    info = mnist_test.info
    for row, index in enumerate(chosen):
        x = inputs.model_input(mnist_test.images[index].numpy(), info)
        target = int(softmax_of(model, x)[0].argmax())
        assert result.targets[row] == target
        black = (torch.zeros_like(x) - info.mean[0]) / info.std[0]
        blurred = attribution.blur(x)
        ends = softmax_of(model, torch.cat([x, black, blurred]))[:, target].tolist()
        for method in result.methods:
            deletion, insertion = result.deletion[method][row], result.insertion[method][row]
            assert [deletion[0], deletion[-1]] == pytest.approx(ends[:2], abs=1e-5)
            assert [insertion[0], insertion[-1]] == pytest.approx([ends[2], ends[0]], abs=1e-5)
        # A quarter of the way: the 196 pixels of largest |gradient| black, the rest as they are.
        magnitude = input_gradient(copy.deepcopy(model), x, target).abs().sum(0).flatten()
        ordered = torch.sort(magnitude, descending=True).values
        assert ordered[195] > ordered[196]  # no tie at the cut: the top 196 are one set
        top = torch.zeros(784, dtype=torch.bool)
        top[torch.argsort(magnitude, descending=True)[:196]] = True
        deleted = torch.where(top.view(1, 1, 28, 28), black, x)
        inserted = torch.where(top.view(1, 1, 28, 28), x, blurred)
        quarter = softmax_of(model, torch.cat([deleted, inserted]))[:, target]
        assert result.deletion["saliency"][row][1] == pytest.approx(float(quarter[0]), abs=1e-5)
        assert result.insertion["saliency"][row][1] == pytest.approx(float(quarter[1]), abs=1e-5)
    both = ((result.deletion, result.deletion_auc), (result.insertion, result.insertion_auc))
    for curves, areas in both:
        for method, rows in curves.items():
            by_hand = np.mean([trapezoid(r, result.fractions) for r in rows])
            assert areas[method] == pytest.approx(by_hand, abs=1e-9)
    table = result.table()
    assert table["images"].tolist() == [3, 3]
    assert table["deletion AUC ↓"].tolist() == [result.deletion_auc[m] for m in result.methods]


def card_input(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 1, 28, 28) normalized with the card's statistics, as the command reads the image."""
    return (pixels[None].float() / 255 - 0.1307) / 0.3081


def explain(capsys, shared_datasets, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["explain", str(LENET5), "--data-root", str(shared_datasets), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_prints_integrated_gradients_record_and_writes_the_picture(
    model, mnist_test, shared_datasets, capsys, tmp_path
) -> None:
    out = tmp_path / "ig.png"
    args = ("--image", "3", "--method", "integrated-gradients", "--json", "--out", str(out))
    code, stdout, stderr = explain(capsys, shared_datasets, *args)
    assert code == 0, stderr
    record = json.loads(stdout)
    x = card_input(mnist_test.images[3])
    with torch.no_grad():
        logits = copy.deepcopy(model).eval()(x)[0]
        black = (torch.zeros_like(x) - 0.1307) / 0.3081  # the card's normalization
        base = copy.deepcopy(model).eval()(black)[0]
    target = int(logits.argmax())
    assert record["image"] == 3
    assert record["method"] == "integrated-gradients"
    assert record["target"] == target
    assert record["shape"] == [1, 28, 28]
    assert record["logit"] == pytest.approx(float(logits[target]), abs=1e-5)
    assert record["baseline_logit"] == pytest.approx(float(base[target]), abs=1e-5)
    difference = record["logit"] - record["baseline_logit"]
    assert record["attribution_sum"] - difference == pytest.approx(
        record["convergence_delta"], abs=1e-4
    )
    assert abs(record["convergence_delta"]) < 0.01 * abs(difference)
    picture = Image.open(out)
    assert picture.format == "PNG"
    assert picture.mode == "RGB"
    assert picture.width > 2 * picture.height - 1  # the digit and its map side by side
    # Plain text for a person; another class; the numbers of Saliency are not IG's.
    code, stdout, _ = explain(capsys, shared_datasets, "--image", "0", "--method", "saliency",
                              "--target", "2")  # fmt: skip
    assert code == 0
    gradient = input_gradient(copy.deepcopy(model), card_input(mnist_test.images[0]), 2)
    assert stdout.startswith("Saliency of class 2 (index 2) for test image 0: sum ")
    assert float(stdout.split("sum ")[1].split(",")[0]) == pytest.approx(
        float(gradient.sum()), rel=1e-4
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (("--image", "0", "--method", "saliency", "--out", "map.jpg"), "give a .png file name"),
        (("--image", "10000000", "--method", "saliency"), "does not exist: the test split"),
        (("--image", "0", "--method", "grad-cam", "--layer", "classifier.fc1"), "no spatial"),
        (("--image", "0", "--method", "occlusion", "--target", "10"), "out of range"),
    ],
)
def test_explain_refuses_bad_requests_in_one_line(argv, reason, shared_datasets, capsys) -> None:
    code, stdout, stderr = explain(capsys, shared_datasets, *argv)
    lines = [line for line in stderr.splitlines() if line.strip() and "explaining" not in line]
    assert code == cli.EXIT_BAD_INPUT
    assert stdout == ""
    assert len(lines) == 1, stderr
    assert reason in lines[0]
    assert not Path("map.jpg").exists()
