"""The convolution lab's arithmetic against PyTorch and against plain Python loops.

Every result is computed at least twice: by `analysis.lab` (from the definition, exact in int64
for integer inputs) and by `F.conv2d` / `F.max_pool2d` / `F.avg_pool2d` / `F.unfold` in float64
or a loop written here; the neuron arithmetic is held against the activation the model computes,
read by a hook registered in the test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dashboard import data, models
from dashboard.analysis import filters, lab, probe
from dashboard.analysis.lab import inputs as lab_inputs
from dashboard.base.errors import LensError
from dashboard.figures import lab as lab_display

PRESET_X = [
    [3, 4, 6, 5, 7],
    [2, 4, 6, 8, 2],
    [1, 6, 7, 8, 4],
    [9, 7, 4, 6, 2],
    [3, 7, 5, 4, 1],
]
PRESET_K = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
PRESET_OUT = [
    [91, 168, 224, 215, 127],
    [114, 211, 295, 262, 149],
    [192, 259, 282, 214, 122],
    [194, 251, 253, 169, 86],
    [96, 112, 110, 68, 31],
]


def loop_conv(x, k, padding=0, stride=1, dilation=1, bias=0):
    """Cross-correlation by the definition, in plain Python lists."""
    h, w, kh, kw = len(x), len(x[0]), len(k), len(k[0])

    def at(r, c):
        r, c = r - padding, c - padding
        return x[r][c] if 0 <= r < h and 0 <= c < w else 0

    out_h = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    return [
        [
            sum(
                at(y * stride + i * dilation, xx * stride + j * dilation) * k[i][j]
                for i in range(kh)
                for j in range(kw)
            )
            + bias
            for xx in range(out_w)
        ]
        for y in range(out_h)
    ]


def torch_conv(x, k, **kwargs) -> np.ndarray:
    xt = torch.tensor(np.asarray(x), dtype=torch.float64)
    kt = torch.tensor(np.asarray(k), dtype=torch.float64)
    while xt.dim() < 4:
        xt = xt[None]
    while kt.dim() < 4:
        kt = kt[None]
    return F.conv2d(xt, kt, **kwargs)[0].numpy()


# ---------------------------------------------------------------------------------------------
# The worked example


def test_preset_output_is_exact_and_agrees_with_conv2d_and_a_loop() -> None:
    worked = lab.conv2d_worked(
        lab_inputs.parse_matrix(lab_inputs.PRESET_INPUT),
        lab_inputs.parse_matrix(lab_inputs.PRESET_KERNEL),
        padding=1,
    )
    by_torch = torch_conv(PRESET_X, PRESET_K, padding=1)[0]
    by_loop = loop_conv(PRESET_X, PRESET_K, padding=1)
    assert worked.output.dtype == np.int64
    assert worked.output.tolist() == by_loop == PRESET_OUT
    assert np.array_equal(by_torch, np.array(PRESET_OUT, dtype=np.float64))
    assert worked.padded.shape == (7, 7)
    assert worked.padded[0].tolist() == [0] * 7
    assert worked.padded[1].tolist() == [0, 3, 4, 6, 5, 7, 0]
    assert worked.formula == "H_out = W_out = ⌊(5 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 5"
    assert worked.sizes[0].formula == "⌊(5 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 5"
    assert worked.problems == []
    assert worked.message == ""


def test_steps_write_out_every_position() -> None:
    x, k = np.array(PRESET_X), np.array(PRESET_K)
    worked = lab.conv2d_worked(x, k, padding=1)
    all_steps = lab.steps(worked)
    assert len(all_steps) == 25
    assert [s.value for s in all_steps] == [v for row in PRESET_OUT for v in row]
    first = all_steps[0]
    assert (first.y, first.x, first.top, first.left) == (0, 0, 0, 0)
    assert first.rows == (0, 1, 2)
    assert first.cols == (0, 1, 2)
    assert first.text == "0·1 + 0·2 + 0·3 + 0·4 + 3·5 + 4·6 + 0·7 + 2·8 + 4·9 = 91"
    padded = np.pad(x, 1)
    for step in all_steps:  # the text's terms are the padded window times the kernel
        window = padded[step.y : step.y + 3, step.x : step.x + 3]
        terms = " + ".join(f"{a}·{b}" for a, b in zip(window.ravel(), k.ravel(), strict=True))
        assert step.text == f"{terms} = {int((window * k).sum())}"
        assert np.array_equal(step.products, window * k)
    with_bias = lab.step_at(lab.conv2d_worked(x, k, padding=1, bias=-5), 0, 0)
    assert with_bias.text.endswith("+ 4·9 + (−5) = 86")
    assert with_bias.value == 86


def test_dilation_leaves_gaps_in_the_window() -> None:
    x = np.arange(49).reshape(7, 7)
    worked = lab.conv2d_worked(x, np.ones((3, 3), dtype=np.int64), stride=2, dilation=2)
    assert worked.output.shape == (2, 2)
    step = lab.step_at(worked, 1, 1)
    assert step.rows == (2, 4, 6)
    assert step.cols == (2, 4, 6)
    assert step.value == sum(int(x[r, c]) for r in (2, 4, 6) for c in (2, 4, 6))
    assert worked.sizes[0].formula == "⌊(7 + 2·0 − 2·(3 − 1) − 1) / 2⌋ + 1 = 2"


def test_inexact_division_lists_the_rows_never_covered() -> None:
    worked = lab.conv2d_worked(np.array(PRESET_X), np.array(PRESET_K), stride=3)
    rows = worked.sizes[0]
    assert rows.formula == "⌊(5 + 2·0 − 1·(3 − 1) − 1) / 3⌋ + 1 = 1"
    assert (rows.exact, rows.remainder, rows.uncovered, rows.lost) == (False, 2, (3, 4), (3, 4))
    assert worked.output.tolist() == loop_conv(PRESET_X, PRESET_K, stride=3) == [[211]]
    assert worked.problems == [
        "rows (and columns alike): 2 / 3 = 0 remainder 2 is not whole, so the size is rounded "
        "down and the last window stops 2 rows short of the padded edge; padded rows 3, 4 are "
        "never covered: input rows 3, 4 never reach the output"
    ]
    tall = lab.conv2d_worked(np.ones((6, 5), int), np.array(PRESET_K), stride=3)
    assert len(tall.problems) == 1  # 6 rows: (6 − 3) / 3 is exact; 5 columns are not
    assert tall.problems[0].startswith("columns: 2 / 3 = 0 remainder 2")
    assert "input columns 3, 4 never reach the output" in tall.problems[0]

    # exact division, but a 1×1 kernel with stride 2 skips every other row
    skipping = lab.conv2d_worked(np.array(PRESET_X), [[1]], stride=2)
    assert skipping.sizes[0].exact
    assert skipping.sizes[0].uncovered == (1, 3)
    assert "stride 2 jumps over rows" in skipping.problems[0]

    # (5 + 2·1 − 3) / 2 = 2 exactly: every padded row is read
    padded_only = lab.conv2d_worked(np.array(PRESET_X), np.ones((3, 3), int), padding=1, stride=2)
    assert padded_only.sizes[0].uncovered == ()
    assert padded_only.problems == []
    even = lab.conv2d_worked(np.ones((4, 4), int), np.ones((3, 3), int), padding=1, stride=2)
    # (4 + 2·1 − 3) / 2 = 1 remainder 1: the last padded row is skipped, but it is padding
    assert even.sizes[0].uncovered == (5,)
    assert even.sizes[0].lost == ()
    assert "padding: no input value is lost" in even.problems[0]


def test_output_size_zero_is_a_report_not_an_error() -> None:
    worked = lab.conv2d_worked(np.ones((3, 3), int), np.ones((5, 5), int))
    assert worked.output.shape == (0, 0)
    assert worked.sizes[0].formula == "⌊(3 + 2·0 − 1·(5 − 1) − 1) / 1⌋ + 1 = −1"
    assert "no output" in worked.message
    assert "spans 5" in worked.message
    assert lab.steps(worked) == []
    with pytest.raises(LensError, match="stride must be at least 1"):
        lab.conv2d_worked(np.ones((3, 3), int), np.ones((1, 1), int), stride=0)


def test_float_inputs_and_negative_numbers_are_written_readably() -> None:
    worked = lab.conv2d_worked([[1.5, -2.0], [0.25, 1.0]], [[-1, 2], [0.5, 1]])
    assert worked.output.dtype == np.float64
    assert lab.steps(worked)[0].text == "1.5·(−1) + (−2)·2 + 0.25·0.5 + 1·1 = −4.375"
    assert worked.output[0, 0] == pytest.approx(-4.375)


# ---------------------------------------------------------------------------------------------
# Random oracles


def random_conv_config(rng: np.random.Generator) -> dict:
    groups = int(rng.choice([1, 1, 2, 3]))
    c_in = groups * int(rng.integers(1, 3))
    c_out = groups * int(rng.integers(1, 3))
    kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    h = int(rng.integers(dilation[0] * (kh - 1) + 1, 11))
    w = int(rng.integers(dilation[1] * (kw - 1) + 1, 11))
    return {
        "groups": groups,
        "x": rng.integers(-9, 10, size=(c_in, h, w)),
        "kernels": rng.integers(-5, 6, size=(c_out, c_in // groups, kh, kw)),
        "bias": rng.integers(-3, 4, size=c_out),
        "padding": padding,
        "stride": stride,
        "dilation": dilation,
    }


def conv_kwargs(config: dict) -> dict:
    return {k: config[k] for k in ("padding", "stride", "dilation", "groups")}


def test_random_multichannel_convolutions_equal_conv2d_exactly() -> None:
    rng = np.random.default_rng(6)
    for _ in range(50):
        c = random_conv_config(rng)
        worked = lab.multichannel_worked(c["x"], c["kernels"], c["bias"], **conv_kwargs(c))
        expected = torch_conv(
            c["x"],
            c["kernels"],
            bias=torch.tensor(c["bias"], dtype=torch.float64),
            **conv_kwargs(c),
        )
        assert worked.output.dtype == np.int64
        assert worked.output.shape == expected.shape, c
        assert np.array_equal(worked.output, expected), c
        # the partial results add up to the output, channel by channel
        assert np.array_equal(worked.partials.sum(axis=1) + c["bias"][:, None, None], expected)
        assert np.allclose(
            lab.torch_conv2d(c["x"], c["kernels"], c["bias"], **conv_kwargs(c)), expected
        )


def test_random_float_single_channel_convolutions_equal_conv2d() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        c = random_conv_config(rng)
        x = rng.normal(size=c["x"].shape[1:])
        k = rng.normal(size=c["kernels"].shape[2:])
        bias = float(rng.normal())
        kwargs = {key: c[key] for key in ("padding", "stride", "dilation")}
        worked = lab.conv2d_worked(x, k, bias=bias, **kwargs)
        expected = torch_conv(x, k, bias=torch.tensor([bias], dtype=torch.float64), **kwargs)[0]
        np.testing.assert_allclose(worked.output, expected, rtol=1e-12, atol=1e-12)
        for step in lab.steps(worked)[:3]:
            assert step.products.sum() + bias == pytest.approx(step.value)


def test_partial_sums_of_the_channel_example() -> None:
    x = np.stack([np.array(PRESET_X), np.eye(5, dtype=np.int64)])
    kernels = np.array([[PRESET_K, [[1, 0, -1]] * 3]])
    worked = lab.multichannel_worked(x, kernels, [2], padding=1)
    assert worked.partials[0, 0].tolist() == PRESET_OUT
    assert worked.partials[0, 1].tolist() == loop_conv(
        np.eye(5, dtype=int).tolist(), [[1, 0, -1]] * 3, padding=1
    )
    partial_1 = worked.partials[0, 1, 0, 0]
    assert worked.sum_text(0, 0, 0) == f"91 + {lab.term(partial_1)} + 2 = {91 + partial_1 + 2}"
    assert list(worked.input_channels(0)) == [0, 1]
    with pytest.raises(LensError, match="input channels each but the input has 2"):
        lab.multichannel_worked(x, np.ones((1, 3, 3, 3), int))


def test_pointwise_mixing_is_a_matrix_times_each_pixel_vector() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-5, 6, size=(3, 4, 5))
    w = rng.integers(-3, 4, size=(2, 3))
    b = np.array([1, -1])
    mixing = lab.pointwise_mixing(x, w, b, y=2, x_pos=3)
    assert mixing.pixel.tolist() == x[:, 2, 3].tolist()
    assert mixing.mixed.tolist() == (w @ x[:, 2, 3] + b).tolist()
    expected = torch_conv(x, w[:, :, None, None], bias=torch.tensor(b, dtype=torch.float64))
    assert np.array_equal(mixing.output, expected)
    terms = " + ".join(
        f"{lab.term(v)}·{lab.term(k)}" for v, k in zip(x[:, 2, 3], w[0], strict=True)
    )
    assert mixing.lines[0] == f"out[0] = {terms} + 1 = {lab.fmt(w[0] @ x[:, 2, 3] + 1)}"


def test_bottleneck_arithmetic_is_exact() -> None:
    b = lab.bottleneck_params()
    assert b.plain[0].weights == 256 * 256 * 9 == 589_824
    assert [c.weights for c in b.bottleneck] == [16_384, 36_864, 16_384]
    assert b.total("bottleneck") == 69_632
    assert b.total("plain", "with biases") == 590_080
    assert b.total("bottleneck", "with biases") == 16_448 + 36_928 + 16_640 == 70_016
    assert b.total("plain", "mult_adds") == 589_824 * 56 * 56 == 1_849_688_064
    assert b.total("bottleneck", "mult_adds") == 69_632 * 56 * 56 == 218_365_952
    assert b.plain[0].weight_formula == "256·256·9 = 589,824"
    assert [c.weight_formula for c in b.bottleneck] == [
        "256·64·1 = 16,384",
        "64·64·9 = 36,864",
        "64·256·1 = 16,384",
    ]
    assert b.total_formula("bottleneck") == "16,384 + 36,864 + 16,384 = 69,632"
    assert b.plain[0].bias_formula == "589,824 + 256 = 590,080"
    assert b.plain[0].mult_add_formula == "589,824·56·56 = 1,849,688,064"
    assert b.ratio() == pytest.approx(589_824 / 69_632)
    # the same counts as PyTorch's own modules
    torch_plain = nn.Conv2d(256, 256, 3, padding=1)
    torch_bottleneck = nn.Sequential(
        nn.Conv2d(256, 64, 1), nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 256, 1)
    )
    assert sum(p.numel() for p in torch_plain.parameters()) == 590_080
    assert sum(p.numel() for p in torch_bottleneck.parameters()) == 70_016


# ---------------------------------------------------------------------------------------------
# Pooling


def test_pooling_preset_outputs() -> None:
    x = lab_inputs.parse_matrix(lab_inputs.PRESET_POOL)
    max_pool = lab.pool_worked(x, "max", 2)
    avg_pool = lab.pool_worked(x, "avg", 2)
    assert max_pool.output.tolist() == [[4, 8], [9, 8]]
    assert avg_pool.output.tolist() == [[3.25, 6.25], [5.75, 6.25]]
    xt = torch.tensor(x, dtype=torch.float64)[None, None]
    assert F.max_pool2d(xt, 2)[0, 0].tolist() == [[4, 8], [9, 8]]
    assert F.avg_pool2d(xt, 2)[0, 0].tolist() == [[3.25, 6.25], [5.75, 6.25]]
    assert max_pool.formula == "H_out = W_out = ⌊(4 + 2·0 − 2) / 2⌋ + 1 = 2"
    assert [s.text for s in lab.pool_steps(max_pool)] == [
        "max(3, 4, 2, 4) = 4",
        "max(6, 5, 6, 8) = 8",
        "max(1, 6, 9, 7) = 9",
        "max(7, 8, 4, 6) = 8",
    ]
    assert [s.chosen for s in lab.pool_steps(max_pool)] == [(0, 1), (1, 3), (3, 0), (2, 3)]
    assert lab.pool_steps(avg_pool)[0].text == "(3 + 4 + 2 + 4) / 4 = 13 / 4 = 3.25"


def test_random_pooling_equals_pytorch() -> None:
    """Average pooling counts padded zeros in the divisor like PyTorch's default
    (count_include_pad=True); False is checked too."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        x = rng.integers(-20, 20, size=(int(rng.integers(k[0], 9)), int(rng.integers(k[1], 9))))
        xt = torch.tensor(x, dtype=torch.float64)[None, None]
        expected, indices = F.max_pool2d(xt, k, s, p, return_indices=True)
        worked = lab.pool_worked(x, "max", k, s, p)
        assert np.array_equal(worked.output, expected[0, 0].numpy()), (k, s, p)
        for step in lab.pool_steps(worked):  # the winner is the element PyTorch picks
            r, c = step.chosen[0] - p[0], step.chosen[1] - p[1]
            assert r * x.shape[1] + c == indices[0, 0, step.y, step.x].item()
        for include in (True, False):
            avg = lab.pool_worked(x, "avg", k, s, p, count_include_pad=include)
            torch_avg = F.avg_pool2d(xt, k, s, p, count_include_pad=include)[0, 0].numpy()
            np.testing.assert_allclose(avg.output, torch_avg, rtol=1e-12)
            for step in lab.pool_steps(avg):
                assert step.total / step.count == pytest.approx(step.value)
    with pytest.raises(LensError, match="more than half"):
        lab.pool_worked(np.ones((4, 4)), "max", 2, 2, 2)


# ---------------------------------------------------------------------------------------------
# im2col


def test_im2col_equals_unfold_and_its_product_equals_conv2d() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        c = random_conv_config(rng)
        kernels = rng.integers(
            -5, 6, size=(c["kernels"].shape[0], *c["x"].shape[:1], *c["kernels"].shape[2:])
        )
        kh, kw = kernels.shape[2:]
        kwargs = {key: c[key] for key in ("padding", "stride", "dilation")}
        columns = lab.im2col(c["x"], kh, kw, **kwargs)
        unfolded = F.unfold(torch.tensor(c["x"], dtype=torch.float64)[None], (kh, kw), **kwargs)[
            0
        ].numpy()
        assert np.array_equal(columns, unfolded)
        unrolled = lab.im2col_worked(c["x"], kernels, c["bias"], **kwargs)
        expected = torch_conv(
            c["x"], kernels, bias=torch.tensor(c["bias"], dtype=torch.float64), **kwargs
        )
        assert np.array_equal(unrolled.output, expected)
        assert unrolled.kernel_matrix.shape == (kernels.shape[0], c["x"].shape[0] * kh * kw)
        y, x = unrolled.output.shape[1] - 1, unrolled.output.shape[2] - 1
        column = unrolled.column(y, x)
        assert np.array_equal(column, unfolded[:, -1])
        assert (unrolled.kernel_matrix @ column + c["bias"]).tolist() == expected[:, y, x].tolist()


def test_im2col_preset_labels_and_first_column() -> None:
    x = np.array(PRESET_X)[None]
    unrolled = lab.im2col_worked(x, np.array(PRESET_K)[None, None], padding=1)
    assert unrolled.columns.shape == (9, 25)
    assert unrolled.row_labels[:4] == ("c0 (0,0)", "c0 (0,1)", "c0 (0,2)", "c0 (1,0)")
    assert unrolled.column_labels[:3] == ("(0,0)", "(0,1)", "(0,2)")
    assert unrolled.column(0, 0).tolist() == [0, 0, 0, 0, 3, 4, 0, 2, 4]
    assert unrolled.output[0].tolist() == PRESET_OUT


# ---------------------------------------------------------------------------------------------
# Any neuron of a real model


@pytest.fixture(scope="module")
def mnist_image(shared_datasets: Path) -> torch.Tensor:
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    return data.normalize(split.images[:1], split.info.mean, split.info.std)  # (1, 1, 28, 28)


@pytest.fixture(scope="module")
def cifar_image(shared_datasets: Path) -> torch.Tensor:
    """One real CIFAR-10 test image (a cat), decoded from its JPEG and normalized."""
    pixels = torchvision.io.read_image(str(shared_datasets / "cifar10-jpg/test/cat/0000.jpg"))
    info = data.dataset_info("cifar10", data_root=shared_datasets)
    return data.normalize(pixels[None], info.mean, info.std)  # (1, 3, 32, 32)


def hooked_output(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The layer's output read by a hook of the test's own (not probe's)."""
    seen: list[torch.Tensor] = []
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0][0]


NEURON_CASES = {
    "course-net": ["features.conv1", "features.pool1", "features.conv2", "classifier.fc"],
    "lenet5": ["features.conv1", "features.conv2", "features.pool2", "classifier.fc1"],
    "bn-cnn": ["features.conv1", "features.pool1", "classifier.fc2"],
    "resnet18-small": ["conv1", "layer2.0.conv1", "layer3.0.downsample.0", "avgpool", "fc"],
    "alexnet-small": ["features.conv1", "features.pool1", "features.conv4", "classifier.fc1"],
}


@pytest.mark.parametrize("name", list(NEURON_CASES))
def test_neuron_arithmetic_equals_the_models_activation(
    name: str, mnist_image: torch.Tensor, cifar_image: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = models.build_model(name).eval()
    x = mnist_image if models.model_info(name).input_shape[0] == 1 else cifar_image
    flow = probe.shape_flow(model, tuple(x.shape[1:]))
    for layer in NEURON_CASES[name]:
        out = hooked_output(model, x, layer)
        channels = out.shape[0]
        if out.dim() == 3:
            h, w = out.shape[1:]
            positions = [(0, 0, 0), (channels - 1, h - 1, w - 1)]  # corners: padding
        else:
            positions = [(0, 0, 0), (channels - 1, 0, 0)]
        for c, y, x_pos in positions:
            a = lab.neuron_arithmetic(model, x, layer, c, y, x_pos, flow=flow)
            expected = out[c, y, x_pos].item() if out.dim() == 3 else out[c].item()
            assert a.model_value == expected, (name, layer)
            assert abs(a.computed - expected) < 1e-5, (name, layer, a.computed, expected)
            assert a.difference < 1e-5
            assert a.matches()
            assert a.source_box is not None


def test_neuron_window_reads_zero_padding_at_the_border(mnist_image: torch.Tensor) -> None:
    """lenet5's first conv pads by 2: at (0, 0) the 5×5 window hangs two rows and columns over
    the edge, so those cells are zeros, and the rest is the image's corner."""
    torch.manual_seed(0)
    model = models.build_model("lenet5").eval()
    a = lab.neuron_arithmetic(model, mnist_image, "features.conv1", 3, 0, 0)
    assert a.kind == "conv"
    assert a.window.shape == (1, 5, 5)
    assert a.rows == (-2, -1, 0, 1, 2)
    assert a.cols == (-2, -1, 0, 1, 2)
    assert a.padding[0, :2].all()
    assert a.padding[0, :, :2].all()
    assert not a.padding[0, 2:, 2:].any()
    assert (a.window[0][a.padding[0]] == 0).all()
    assert np.array_equal(a.window[0, 2:, 2:], mnist_image[0, 0, :3, :3].double().numpy())
    weight = model.features.conv1.weight[3].detach().double().numpy()
    assert np.array_equal(a.weights, weight)
    assert a.computed == pytest.approx(
        float((a.window * weight).sum()) + model.features.conv1.bias[3].item()
    )
    assert a.source_box == (0, 0, 2, 2)
    # the last position of a stride-2 conv in a ResNet block
    resnet = models.build_model("resnet18-small").eval()
    x3 = mnist_image.repeat(1, 3, 1, 1)
    b = lab.neuron_arithmetic(resnet, x3, "layer2.0.conv1", 5, 13, 13)
    assert b.rows == (25, 26, 27)
    assert b.cols == (25, 26, 27)
    assert not b.padding.any()
    assert b.window.shape == (16, 3, 3)
    edge = lab.neuron_arithmetic(resnet, x3, "layer2.0.conv1", 5, 0, 0)
    assert edge.rows == (-1, 0, 1)
    assert edge.padding[:, 0, :].all()
    assert edge.matches()
    assert b.matches()


def test_neuron_arithmetic_on_grouped_dilated_convs_and_odd_pools() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=1),
        nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(6, 4, (1, 3), stride=(1, 2), padding=(0, 1)),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.AdaptiveMaxPool2d(1),
    ).eval()
    x = torch.randn(1, 4, 13, 11)
    flow = probe.shape_flow(model, (4, 13, 11))
    for layer in ("0", "1", "2", "3", "4", "5"):
        out = hooked_output(model, x, layer)
        for c, y, xx in [(0, 0, 0), (out.shape[0] - 1, out.shape[1] - 1, out.shape[2] - 1)]:
            a = lab.neuron_arithmetic(model, x, layer, c, y, xx, flow=flow)
            assert abs(a.computed - out[c, y, xx].item()) < 1e-5, (layer, c, y, xx)
    grouped = lab.neuron_arithmetic(model, x, "0", 5, 2, 2)
    assert grouped.input_channels == (2, 3)  # output channel 5 is in the second group


def test_neuron_arithmetic_refuses_other_layers(mnist_image: torch.Tensor) -> None:
    model = models.build_model("lenet5").eval()
    with pytest.raises(LensError, match="ReLU"):
        lab.neuron_arithmetic(model, mnist_image, "features.relu1", 0, 0, 0)
    with pytest.raises(LensError, match=r"outside features\.conv1's 28×28 output"):
        lab.neuron_arithmetic(model, mnist_image, "features.conv1", 0, 28, 0)
    with pytest.raises(LensError, match="6 output channels"):
        lab.neuron_arithmetic(model, mnist_image, "features.conv1", 6, 0, 0)
    flow = probe.shape_flow(model, (1, 28, 28))
    names = [r.name for r in lab.neuron_layers(model, flow)]
    assert names == [
        "features.conv1",
        "features.pool1",
        "features.conv2",
        "features.pool2",
        "classifier.fc1",
        "classifier.fc2",
        "classifier.fc3",
    ]


# ---------------------------------------------------------------------------------------------
# Classic kernels and the first layer


def test_classic_responses_match_a_loop_and_add_magnitudes(mnist_image: torch.Tensor) -> None:
    image = mnist_image[0, 0].double().numpy()[5:15, 5:15]
    kernels = filters.edge_kernels()
    responses = lab.classic_responses(image, kernels)
    assert list(responses) == [*kernels, "Prewitt magnitude", "Sobel magnitude"]
    for name, kernel in kernels.items():
        expected = np.array(loop_conv(image.tolist(), kernel.tolist(), padding=1))
        np.testing.assert_allclose(responses[name], expected, atol=1e-12)
    gx, gy = responses["Sobel x"], responses["Sobel y"]
    np.testing.assert_allclose(responses["Sobel magnitude"], np.sqrt(gx**2 + gy**2))
    assert responses["Prewitt magnitude"].shape == image.shape


def test_first_layer_responses_are_the_first_convs_output(cifar_image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = models.build_model("alexnet-small").eval()
    first = lab.first_layer_responses(model, cifar_image)
    conv = model.features.conv1
    assert first.name == "features.conv1"
    assert first.weights.shape == (16, 3, 5, 5)
    with torch.no_grad():
        expected = F.conv2d(cifar_image, conv.weight, conv.bias, padding=2)[0].double().numpy()
    np.testing.assert_allclose(first.responses, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Typed numbers


def test_parse_matrix_accepts_what_people_type_and_paste() -> None:
    assert lab_inputs.parse_matrix(lab_inputs.PRESET_INPUT).tolist() == PRESET_X
    assert lab_inputs.parse_matrix("1, 2, 3\n4\t5\t6\n").tolist() == [[1, 2, 3], [4, 5, 6]]
    assert lab_inputs.parse_matrix("1 2 / 3 4 /").dtype == np.int64
    floats = lab_inputs.parse_matrix("0.5 −1\n2e1 -3")
    assert floats.dtype == np.float64
    assert floats.tolist() == [[0.5, -1.0], [20.0, -3.0]]
    two = lab_inputs.parse_matrix("1 2\n3 4\n\n5 6\n7 8")
    assert two.shape == (2, 2, 2)
    assert two[1].tolist() == [[5, 6], [7, 8]]
    assert np.array_equal(lab_inputs.parse_matrix("1 2 / 3 4 | 5 6 / 7 8"), two)
    assert np.array_equal(lab_inputs.parse_matrix(lab_inputs.matrix_text(two)), two)
    assert lab_inputs.matrix_text(np.array([[-1, 2]])) == "-1 2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no numbers"),
        ("  \n / ", "no numbers"),
        ("1 2 3\n4 5", "row 2 has 2 values but row 1 has 3"),
        ("1 2 x\n4 5 6", "row 1, column 3: 'x' is not a number"),
        ("1 2\n3 4\n\n1 2 3", "channel 2 is 1×3 but channel 1 is 2×2"),
        ("1 2 | 3 y", "channel 2, row 1, column 2: 'y' is not a number"),
        ("1 inf", "row 1, column 2: 'inf' is too large"),
        ("1 99999999999999999999", "row 1, column 2: '99999999999999999999' is too large"),
    ],
)
def test_parse_matrix_names_the_row_and_column_at_fault(text: str, message: str) -> None:
    with pytest.raises(LensError, match=message):
        lab_inputs.parse_matrix(text)


def test_image_patch_is_raw_pixels(shared_datasets: Path) -> None:
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    patch = lab_inputs.image_patch(split.images, 0, 10, 12)
    assert patch.shape == (8, 8)
    assert patch.dtype == np.int64
    assert np.array_equal(patch, split.images[0, 0, 10:18, 12:20].numpy())
    assert patch.max() <= 255
    assert patch.max() > 0
    with pytest.raises(LensError, match="top and left go from 0 to 20"):
        lab_inputs.image_patch(split.images, 0, 21, 0)
    with pytest.raises(LensError, match="image 10000 does not exist"):
        lab_inputs.image_patch(split.images, 10_000, 0, 0)


def test_fmt_writes_numbers_as_a_reader_would() -> None:
    assert lab.fmt(3) == "3"
    assert lab.fmt(np.int64(-3)) == "−3"
    assert lab.fmt(2.0) == "2"
    assert lab.fmt(0.1234567) == "0.123457"
    assert lab.fmt(-math.inf) == "−∞"


# ---------------------------------------------------------------------------------------------
# The lab's kept inputs (lab_inputs) and what it shows of them (lab_display)


def no_images() -> torch.Tensor:
    raise AssertionError("the test split is read only for an image patch")


def hooked_input(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The layer's input read by a hook of the test's own."""
    seen: list[torch.Tensor] = []
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0][0].double()


def shown(panel: lab_display.Panel) -> np.ndarray:
    return panel.grid.data.to_numpy()


def last_number(text: str) -> float:
    """The total a written sum ends with ("… = −0.4937")."""
    return float(text.rsplit("= ", 1)[1].replace(lab.MINUS, "-"))


def test_kept_values_are_clamped_and_labels_name_what_they_show() -> None:
    assert lab_inputs.clamped(12, 1, 0, 10) == 10
    assert lab_inputs.clamped(-1, 1, 0, 10) == 0
    assert lab_inputs.clamped(500, 256, 1) == 500
    assert lab_inputs.clamped("gone", "max", options=["max", "avg"]) == "max"
    assert lab_inputs.whole(3.0) == 3
    assert isinstance(lab_inputs.whole(3.0), int)
    assert lab_inputs.whole(-2.5) == -2.5
    assert lab_inputs.patch_box(9, 11) == (9, 11, 16, 18)
    pixels = np.array([[[0, 255]], [[30, 255]], [[60, 0]]], dtype=np.uint8)  # (3, 1, 2)
    assert lab_inputs.gray_image(pixels).tolist() == [[30 / 255, 170 / 255]]
    assert lab_display.position_label(7, 5) == "(1, 2)"
    assert [lab_display.channel_name(i, 3) for i in range(3)] == ["R", "G", "B"]
    assert lab_display.channel_name(1, 4) == "1"
    assert [lab_display.cell_text(v) for v in (3, 1.0, -0.424242, -math.inf)] == [
        "3",
        "1",
        "-0.4242",
        "-∞",
    ]


def test_the_activations_pages_neuron_is_adopted_once() -> None:
    record = {"layer": "features.conv2", "channel": 3, "y": 1, "x": 2}
    update = lab_inputs.adopted_neuron(record, None)
    assert update == {
        lab_inputs.NEURON_SEEN: record,
        "lens_neuron_layer": "features.conv2",
        "lens_neuron_channel": 3,
        "lens_neuron_y": 1,
        "lens_neuron_x": 2,
    }
    assert lab_inputs.adopted_neuron(record, dict(record)) == {}  # seen: the lab's own choice
    assert lab_inputs.adopted_neuron(None, None) == {}
    assert lab_inputs.adopted_neuron({"layer": "fc"}, None)["lens_neuron_layer"] == "fc"


def test_worked_inputs_from_the_kept_state_equal_conv2d(shared_datasets: Path) -> None:
    assert lab_inputs.worked_input({}, no_images).tolist() == PRESET_X
    assert lab_inputs.worked_kernel({}).tolist() == PRESET_K
    assert lab_inputs.worked_settings({}) == {"padding": 1, "stride": 1, "dilation": 1}
    typed = {"lab_source": lab_inputs.SOURCE_TYPED, "lab_input": "1 -2 / 3 4"}
    assert lab_inputs.worked_input(typed, no_images).tolist() == [[1, -2], [3, 4]]

    split = data.load_split("mnist", "test", data_root=shared_datasets)
    state = {
        "lab_source": lab_inputs.SOURCE_PATCH,
        "lab_patch_index": 4,
        "lab_patch_top": 6,
        "lab_patch_left": 9,
        "lab_kernel": lab_inputs.matrix_text(lab_inputs.KERNEL_FILLS["Sobel y"]),
        "lab_padding": 0,
        "lab_stride": 2,
    }
    x = lab_inputs.worked_input(state, lambda: split.images)
    assert np.array_equal(x, split.images[4, 0, 6:14, 9:17].numpy())  # raw 0..255
    worked = lab.conv2d_worked(
        x, lab_inputs.worked_kernel(state), **lab_inputs.worked_settings(state)
    )
    sobel_y = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
    assert np.array_equal(worked.output, torch_conv(x, sobel_y, stride=2)[0])
    with pytest.raises(LensError, match="the kernel is one matrix"):
        lab_inputs.worked_kernel({"lab_kernel": "1 2 | 3 4"})


def test_worked_panels_and_sentences_carry_the_steps_numbers() -> None:
    worked = lab.conv2d_worked(np.array(PRESET_X), np.array(PRESET_K), padding=1, stride=2, bias=-3)
    step = lab.step_at(worked, 1, 2)
    padded, kernel, output = lab_display.worked_panels(worked, step)
    assert (padded.title, kernel.title, output.title) == (
        "**Padded input** 7×7",
        "**Kernel**",
        "**Output** 3×3",
    )
    expected = torch_conv(
        PRESET_X, PRESET_K, padding=1, stride=2, bias=torch.tensor([-3.0], dtype=torch.float64)
    )
    assert np.array_equal(shown(output), expected[0])
    assert np.array_equal(shown(padded), np.pad(PRESET_X, 1))
    styled = output.grid.to_html()  # only output (1, 2) is coloured: the one computed
    assert re.findall(r"_row(\d)_col(\d) \{\s*background-color: #93c5fd", styled) == [("1", "2")]
    assert lab_display.worked_description(worked).startswith(
        "A **5×5** input, a **3×3** kernel, padding 1, stride 2, dilation 1, bias −3. "
    )
    assert lab_display.step_description(worked, step) == (
        "**Output (1, 2)** — the window starts at padded row 2, column 4 (= 1·2, 2·2); each "
        "input value times the kernel weight on top of it, plus the bias:"
    )
    # dilation 2: the window reads every other cell of its 5×5 span
    dilated = lab.conv2d_worked(np.array(PRESET_X), np.array(PRESET_K), padding=1, dilation=2)
    d_step = lab.step_at(dilated, 0, 0)
    css = lab_display.window_styles(dilated.padded.shape, d_step.rows, d_step.cols, (1, 1), (5, 5))
    reads = {(r, c) for r in range(7) for c in range(7) if css[r, c] == lab_display.WINDOW}
    assert reads == {(r, c) for r in (0, 2, 4) for c in (0, 2, 4)}
    assert css[1, 1] == css[1, 3] == lab_display.SKIPPED
    assert css[6, 6] == css[5, 0] == lab_display.PADDING


def test_channel_inputs_from_the_kept_state_and_their_partial_results() -> None:
    x, kernels, bias = lab_inputs.channel_arrays({})
    assert x.shape == (2, 5, 5)
    assert kernels.shape == (2, 2, 3, 3)
    assert bias.tolist() == [0, 0]
    settings = lab_inputs.channel_settings({})
    assert settings == {"padding": 1, "stride": 1, "dilation": 1}
    conv = lab.multichannel_worked(x, kernels, bias, padding=1, stride=1)
    expected = torch_conv(x, kernels, padding=1)
    assert np.array_equal(conv.output, expected)
    panels = lab_display.channel_panels(conv, 1, 2, 3)
    assert [p.title for p in panels] == [
        "**Channel 0 ∗ kernel 1[0]**",
        "**Channel 1 ∗ kernel 1[1]**",
        "**Sum + bias = output 1**",
    ]
    for c in range(2):  # each partial result is one channel convolved with one kernel slice
        assert np.array_equal(shown(panels[c]), torch_conv(x[c], kernels[1, c], padding=1)[0])
    assert np.array_equal(shown(panels[2]), expected[1])
    assert "Weights: C_out·C_in·k·k = 2·2·9 = 36, plus 2 biases." in (
        lab_display.channels_description(kernels)
    )

    three = {"lab_ch_out": 3, "lab_ch_bias": "1 -1 2"}
    x3, kernels3, bias3 = lab_inputs.channel_arrays(three)
    conv3 = lab.multichannel_worked(x3, kernels3, bias3, padding=1)
    assert np.array_equal(
        conv3.output,
        torch_conv(x3, kernels3, padding=1, bias=torch.tensor([1.0, -1, 2], dtype=torch.float64)),
    )
    for state, message in [
        ({"lab_ch_kernel1": "1 2 3\n4 5 6\n7 8 9"}, "kernel 1 has 1 channel blocks but the input"),
        ({"lab_ch_kernel1": "1 2\n3 4\n\n1 2\n3 4"}, "kernel 1 is 2×2, kernel 0 is 3×3"),
        ({"lab_ch_bias": "1 2 3"}, "3 biases for 2 output channels"),
    ]:
        with pytest.raises(LensError, match=message):
            lab_inputs.channel_arrays(state)


def test_pointwise_panels_are_the_weight_matrix_times_the_pixel() -> None:
    x, _, _ = lab_inputs.channel_arrays({})
    weights = lab_inputs.pointwise_weights(lab_inputs.pointwise_default(2))
    assert weights.tolist() == [[1, 1], [1, -1]]
    mixing = lab.pointwise_mixing(x, weights, y=2, x_pos=1)
    v, w, wv = lab_display.pointwise_panels(mixing)
    assert v.title == "**v** = input at (2, 1)"
    assert shown(v)[:, 0].tolist() == x[:, 2, 1].tolist()
    assert shown(w).tolist() == [[1, 1], [1, -1]]
    assert shown(wv)[:, 0].tolist() == torch_conv(x, weights[:, :, None, None])[:, 2, 1].tolist()
    assert "(2 → 2)" in lab_display.pointwise_description(mixing)
    assert lab_inputs.pointwise_weights(lab_inputs.pointwise_default(1)).tolist() == [[1], [2]]
    assert lab_inputs.pointwise_weights("1 2 3").shape == (1, 3)


def test_bottleneck_table_and_summary_show_the_hand_counts() -> None:
    b = lab.bottleneck_params(128, 32, 28, 14)
    frame = lab_display.bottleneck_frame(b)
    assert frame["Design"].tolist() == ["one 3×3 conv"] + ["bottleneck"] * 3
    assert frame["Weights = C_in·C_out·k²"].tolist() == [
        "128·128·9 = 147,456",
        "128·32·1 = 4,096",
        "32·32·9 = 9,216",
        "32·128·1 = 4,096",
    ]
    assert frame["With biases"].tolist()[0] == "147,456 + 128 = 147,584"
    assert frame["Multiply-adds at 28×14"].tolist()[0] == "147,456·28·14 = 57,802,752"
    assert sum(p.numel() for p in nn.Conv2d(128, 128, 3).parameters()) == 147_584
    summary = lab_display.bottleneck_summary(b).splitlines()
    assert summary[1] == "bottleneck:    4,096 + 9,216 + 4,096 = 17,408 weights"
    hand = [w * 28 * 14 for w in (4_096, 9_216, 4_096)]
    assert hand == [1_605_632, 3_612_672, 1_605_632]
    assert summary[3] == (
        "multiply-adds: 57,802,752 vs 1,605,632 + 3,612,672 + 1,605,632 = 6,823,936"
    )
    assert sum(hand) == 17_408 * 28 * 14 == 6_823_936
    assert (
        summary[4]
        == f"the bottleneck needs {147_456 / 17_408:.2f}× fewer weights (147,456 / 17,408)"
    )


def test_pool_panels_mark_the_winner_pytorch_picks() -> None:
    x = lab_inputs.pool_matrix(lab_inputs.PRESET_POOL)
    pools = {k: lab.pool_worked(x, k, 3, 1, 1, count_include_pad=False) for k in ("max", "avg")}
    xt = torch.tensor(x, dtype=torch.float64)[None, None]
    maxed, indices = F.max_pool2d(xt, 3, 1, 1, return_indices=True)
    step = lab.pool_step_at(pools["max"], 1, 2)
    padded, max_panel, avg_panel = lab_display.pool_panels(pools, "max", step)
    assert padded.title == "**Input** (padded)"
    assert np.array_equal(shown(max_panel), maxed[0, 0].numpy())
    avg = F.avg_pool2d(xt, 3, 1, 1, count_include_pad=False)[0, 0].numpy()
    np.testing.assert_allclose(shown(avg_panel), avg, rtol=1e-12)
    row, col = divmod(indices[0, 0, 1, 2].item(), x.shape[1])
    css = lab_display.pool_styles(pools["max"], step)
    assert css[row + 1, col + 1] == lab_display.WINNER  # padded coordinates
    assert (css == lab_display.WINNER).sum() == 1
    assert lab_display.pool_description(pools["max"]) == (
        "**Max pooling**, 3×3 window, stride 1, padding 1: each channel on its own, no weights. "
        "Padding counts as −∞: it never wins."
    )
    assert lab_display.pool_description(pools["avg"]).endswith(
        "the divisor counts only real cells."
    )
    with pytest.raises(LensError, match="pooling here takes one channel"):
        lab_inputs.pool_matrix("1 2 | 3 4")


@pytest.mark.parametrize(
    ("source", "state"),
    [
        ("worked", {"lab_bias": 2.0, "lab_stride": 2}),
        ("channels", {"lab_ch_out": 3, "lab_ch_bias": "1 -1 0", "lab_ch_stride": 2}),
    ],
)
def test_im2col_of_either_tab_equals_conv2d(source: str, state: dict) -> None:
    x, kernels, bias, settings = lab_inputs.im2col_arrays(state, source, no_images)
    unrolled = lab.im2col_worked(x, kernels, bias, **settings)
    expected = torch_conv(x, kernels, bias=torch.tensor(bias, dtype=torch.float64), **settings)
    assert np.array_equal(unrolled.output, expected)
    equal, message = lab_display.conv2d_agreement(
        unrolled.output, lab.torch_conv2d(x, kernels, bias, **settings)
    )
    assert equal
    assert message.endswith("(largest difference 0)")
    c_out, out_h, out_w = expected.shape
    panels = lab_display.im2col_panels(unrolled, 1, 0)
    unfolded = F.unfold(
        torch.tensor(x, dtype=torch.float64)[None],
        kernels.shape[2:],
        padding=settings["padding"],
        stride=settings["stride"],
    )[0].numpy()
    assert np.array_equal(shown(panels.columns), unfolded)
    assert np.array_equal(shown(panels.product), expected.reshape(c_out, -1))
    assert [shown(m).tolist() for m in panels.maps] == expected.tolist()
    column = unfolded[:, out_w]  # output (1, 0)
    terms = [
        f"{lab.term(v)}·{lab.term(k)}" for v, k in zip(column, kernels[0].ravel(), strict=True)
    ]
    if bias[0]:
        terms.append(lab.term(bias[0]))
    assert panels.column_text == " + ".join(terms) + f" = {lab.fmt(expected[0, 1, 0])}"
    assert panels.column_sum == "Column (1, 0) times kernel 0's row plus its bias:"
    assert panels.reshaped == f"**Reshaped** to {c_out}×{out_h}×{out_w}"


def test_a_difference_from_conv2d_is_said_with_its_size() -> None:
    equal, message = lab_display.conv2d_agreement(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.5))
    assert not equal
    assert message == "differs from F.conv2d by up to 0.5"


def test_neuron_tables_and_sentences_equal_the_models_activation(mnist_image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = models.build_model("lenet5").eval()
    conv2 = model.features.conv2
    a = lab.neuron_arithmetic(model, mnist_image, "features.conv2", 4, 3, 7)
    expected = hooked_output(model, mnist_image, "features.conv2")[4, 3, 7].item()
    layer_input = hooked_input(model, mnist_image, "features.conv2")  # (6, 14, 14)
    frame = lab_display.conv_products_frame(a)
    assert len(frame) == 6 * 5 * 5
    c, r, col = (frame[k].to_numpy() for k in ("input channel", "row", "column"))
    np.testing.assert_array_equal(frame["input"], layer_input.numpy()[c, r, col])
    weights = conv2.weight[4].detach().double().numpy()
    np.testing.assert_array_equal(frame["weight"], weights[c, r - 3, col - 7])
    assert frame["product"].sum() + conv2.bias[4].item() == pytest.approx(expected, abs=1e-5)
    numbers = lab_display.neuron_numbers(a).splitlines()
    assert float(numbers[1].split()[-1]) == pytest.approx(expected, rel=1e-7)
    assert numbers[2].endswith("✓")
    assert lab_display.neuron_verdict(a).startswith("= model's activation ✓")
    assert lab_display.neuron_heading(a, first=False) == (
        "**features.conv2** (Conv2d), channel 4 at (3, 7). Its input is what the layers before "
        "it computed, captured by a hook: 6×14×14."
    )
    # conv1 (5×5, padding 2) then a 2×2 max pool: rows 3–7 of conv2's input come from image rows
    # 2·3 − 2 … 2·7 + 1 + 2
    assert lab_display.receptive_caption(a.source_box) == (
        "input rows 4–17, columns 12–25 (14×14 pixels)"
    )
    window, weight, products = lab_display.conv_neuron_panels(a, 2)
    assert window.title.startswith("**Input window**, channel 2")
    assert np.array_equal(shown(window), layer_input[2, 3:8, 7:12].numpy())
    assert np.array_equal(shown(weight), weights[2])
    assert np.array_equal(shown(products), shown(window) * weights[2])
    (one, one_sum), (all_title, all_sum) = lab_display.conv_neuron_sums(a, 2)
    assert one == "Channel 2: the products, summed"
    assert last_number(one_sum) == pytest.approx((shown(window) * weights[2]).sum(), rel=1e-3)
    assert all_title == "The sums of all 6 input channels, then the bias"
    assert last_number(all_sum) == pytest.approx(expected, rel=1e-3)

    logits = hooked_output(model, mnist_image, "classifier.fc3")
    unit = lab.neuron_arithmetic(model, mnist_image, "classifier.fc3", 7)
    table = lab_display.linear_products_frame(unit)
    assert np.all(np.diff(np.abs(table["product"].to_numpy())) <= 0)  # largest first
    features = hooked_input(model, mnist_image, "classifier.fc3").numpy()
    np.testing.assert_array_equal(table["input"], features[table["input feature"]])
    np.testing.assert_allclose(table["product"], table["input"] * table["weight"])
    fc3 = model.classifier.fc3
    assert table["product"].sum() + fc3.bias[7].item() == pytest.approx(logits[7].item(), abs=1e-5)
    assert lab_display.linear_text(unit).startswith(unit.sum_text + "\n(the first terms: ")
    assert "**84** inputs" in lab_display.linear_description(unit)

    pooled = hooked_output(model, mnist_image, "features.pool1")[2, 5, 9].item()
    pool = lab.neuron_arithmetic(model, mnist_image, "features.pool1", 2, 5, 9)
    what, rule = lab_display.pool_neuron_text(pool)
    assert what == "Pooling has no weights: the window's largest value (red) passes on."
    window_values = hooked_input(model, mnist_image, "features.pool1")[2, 10:12, 18:20]
    listed = ", ".join(lab.fmt(v, 4) for v in window_values.ravel().tolist())
    assert rule == f"max({listed}) = {lab.fmt(pooled, 6)}"
    assert np.array_equal(shown(lab_display.pool_neuron_panel(pool)), window_values.numpy())


def test_learned_kernel_numbers_are_each_filters_mean_over_its_channels(
    cifar_image: torch.Tensor,
) -> None:
    torch.manual_seed(0)
    model = models.build_model("alexnet-small").eval()
    _, _, matches, raw = lab_display.learned_figures(model, cifar_image)
    weight = model.features.conv1.weight.detach().double().numpy()
    assert np.array_equal(raw, weight)
    assert matches["filter"].tolist() == list(range(16))
    assert matches["cosine"].abs().max() <= 1
    title, panels = lab_display.learned_kernel_panels(raw)
    assert title == "The learned filters' numbers (16), mean over the input channels"
    assert [p.title for p in panels] == [f"**filter {k}**" for k in range(16)]
    for k, panel in enumerate(panels):
        np.testing.assert_allclose(shown(panel), weight[k].mean(axis=0))
    title, panels = lab_display.learned_kernel_panels(np.ones((20, 1, 3, 3)))
    assert title == "The learned filters' numbers (first 16)"
    assert len(panels) == 16
    classic = lab_display.classic_kernel_panels()
    assert [p.title for p in classic] == [f"**{n}**" for n in filters.edge_kernels()]
    assert shown(classic[4]).tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]  # Sobel x
