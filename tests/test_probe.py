"""analysis.probe: shapes, parameters, multiply-adds and receptive fields against independent
oracles (torchinfo, FlopCounterMode, the real forward pass, gradients, arithmetic by hand);
activations against the sub-network's own output; hooks, modes and threads left clean."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchinfo
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dashboard import models
from dashboard.analysis import probe
from dashboard.base.errors import LensError, ShapeError, UnknownNameError

# ---------------------------------------------------------------------------------------------
# Models and data


class CourseNet(nn.Module):
    """conv 10@5 → pool → conv 20@5 → pool → fc 320→10, written here independently of models.py."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 10, 5),
                pool1=nn.MaxPool2d(2),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(10, 20, 5),
                pool2=nn.MaxPool2d(2),
                relu2=nn.ReLU(),
            )
        )
        self.classifier = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(320, 10)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ViewNet(nn.Module):
    """The tutorial style: flattening with x.view(-1, 320) inside forward, not in a module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.pool1 = nn.Conv2d(1, 10, 5), nn.MaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(10, 20, 5), nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc(x.view(-1, 320))


class BNNet(nn.Module):
    """Small net with BatchNorm, an in-place ReLU and an unused module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


def all_hooks_removed(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> torch.Tensor:
    """The first 8 MNIST test digits, (8, 1, 28, 28) in [0, 1], read straight from the IDX file."""
    raw = (shared_datasets / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, count=8 * 28 * 28, offset=16)
    return torch.from_numpy(pixels.reshape(8, 1, 28, 28).astype(np.float32) / 255)


@pytest.fixture(scope="module")
def course_net() -> CourseNet:
    torch.manual_seed(0)
    return CourseNet()


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.alexnet()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18()


@pytest.fixture(scope="module")
def alexnet_flow(alexnet: nn.Module) -> probe.ShapeFlow:
    return probe.shape_flow(alexnet, (3, 224, 224))


@pytest.fixture(scope="module")
def resnet18_flow(resnet18: nn.Module) -> probe.ShapeFlow:
    return probe.shape_flow(resnet18, (3, 224, 224))


# ---------------------------------------------------------------------------------------------
# Oracles


def check_against_torchinfo(model: nn.Module, flow: probe.ShapeFlow) -> None:
    """Leaf by leaf (torchinfo lists every call, reused modules too) and in total.

    torchinfo's per-layer multiply-adds also count the bias (conv: once per output position,
    linear: once per output) and BatchNorm's weight and bias; we count only multiplies of
    weights by inputs, so the totals differ by exactly those terms.
    """
    stats = torchinfo.summary(model, input_size=(1, *flow.input_shape), verbose=0, device="cpu")
    theirs = [layer for layer in stats.summary_list if layer.is_leaf_layer]
    assert (
        [
            (
                layer.class_name,
                layer.depth - 1,  # torchinfo's depth 0 is the model itself
                tuple(layer.input_size[1:]),
                tuple(layer.output_size[1:]),
                0 if layer.is_recursive else layer.num_params,
            )
            for layer in theirs
        ]
        == [(r.type, r.depth, r.input_shape, r.output_shape, r.params_total) for r in flow.leaves]
    )
    assert stats.total_params == flow.params_total
    assert stats.trainable_params == flow.params_trainable
    modules = dict(model.named_modules())
    bias_and_bn = 0
    for record in flow.leaves:
        module = modules[record.name]
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            bias_and_bn += module.out_channels * record.output_shape[1] * record.output_shape[2]
        elif isinstance(module, nn.Linear) and module.bias is not None:
            bias_and_bn += module.out_features
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            bias_and_bn += 2 * module.num_features
    assert stats.total_mult_adds == flow.mult_adds + bias_and_bn


def check_against_flop_counter(model: nn.Module, flow: probe.ShapeFlow) -> None:
    """FlopCounterMode counts 2 flops per multiply-accumulate of aten.convolution / addmm."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *flow.input_shape))
    assert counter.get_total_flops() == 2 * flow.mult_adds
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    for record in flow.leaves:
        if record.type in ("Conv2d", "Linear"):
            assert sum(per_module[f"{prefix}.{record.name}"].values()) == 2 * record.mult_adds


def check_params(model: nn.Module, flow: probe.ShapeFlow) -> None:
    total = sum(p.numel() for p in model.parameters())
    assert flow.params_total == total == sum(r.params_total for r in flow.leaves)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert flow.params_trainable == trainable


def leaf(flow: probe.ShapeFlow, name: str, call_index: int = 0) -> probe.LayerRecord:
    return flow.find(name, call_index)


# ---------------------------------------------------------------------------------------------
# Shape flow


def test_course_net_flow_by_hand(course_net: CourseNet) -> None:
    flow = probe.shape_flow(course_net, (1, 28, 28))
    assert flow.broken is None
    assert flow.output_shape == (10,)
    # (name, type, depth, leaf, in, out, params, mult-adds, rf, jump, formula)
    # conv1: 24·24·10·1·25 = 144000; conv2: 8·8·20·10·25 = 320000; fc: 320·10 = 3200.
    # rf: conv1 5; pool1 5 + 1·1 = 6 (jump 2); conv2 6 + 4·2 = 14; pool2 14 + 1·2 = 16 (jump 4).
    assert [
        (r.name, r.type, r.depth, r.is_leaf, r.input_shape, r.output_shape, r.params_total,
         r.mult_adds, r.receptive_field, r.effective_stride, r.formula)
        for r in flow.records
    ] == [
        ("features", "Sequential", 0, False, (1, 28, 28), (20, 4, 4), 5280, 464000, 16, 4, ""),
        ("features.conv1", "Conv2d", 1, True, (1, 28, 28), (10, 24, 24), 260, 144000, 5, 1,
         "⌊(28 − 5 + 2·0) / 1⌋ + 1 = 24"),
        ("features.pool1", "MaxPool2d", 1, True, (10, 24, 24), (10, 12, 12), 0, 0, 6, 2,
         "⌊(24 − 2 + 2·0) / 2⌋ + 1 = 12"),
        ("features.relu1", "ReLU", 1, True, (10, 12, 12), (10, 12, 12), 0, 0, 6, 2, ""),
        ("features.conv2", "Conv2d", 1, True, (10, 12, 12), (20, 8, 8), 5020, 320000, 14, 2,
         "⌊(12 − 5 + 2·0) / 1⌋ + 1 = 8"),
        ("features.pool2", "MaxPool2d", 1, True, (20, 8, 8), (20, 4, 4), 0, 0, 16, 4,
         "⌊(8 − 2 + 2·0) / 2⌋ + 1 = 4"),
        ("features.relu2", "ReLU", 1, True, (20, 4, 4), (20, 4, 4), 0, 0, 16, 4, ""),
        ("classifier", "Sequential", 0, False, (20, 4, 4), (10,), 3210, 3200, None, None, ""),
        ("classifier.flatten", "Flatten", 1, True, (20, 4, 4), (320,), 0, 0, None, None,
         "20·4·4 = 320"),
        ("classifier.fc", "Linear", 1, True, (320,), (10,), 3210, 3200, None, None, "320 → 10"),
    ]  # fmt: skip
    assert (flow.params_total, flow.params_trainable, flow.mult_adds) == (8490, 8490, 467200)
    conv1 = leaf(flow, "features.conv1")
    assert (conv1.kernel, conv1.stride, conv1.padding, conv1.dilation) == (
        (5, 5),
        (1, 1),
        (0, 0),
        (1, 1),
    )
    assert leaf(flow, "classifier.fc").kernel is None
    check_against_torchinfo(course_net, flow)
    check_against_flop_counter(course_net, flow)


def test_alexnet_shapes_params_and_mult_adds(alexnet: nn.Module, alexnet_flow) -> None:
    flow = alexnet_flow
    assert [r.output_shape for r in flow.leaves if r.type in ("Conv2d", "MaxPool2d")] == [
        (64, 55, 55), (64, 27, 27), (192, 27, 27), (192, 13, 13),
        (384, 13, 13), (256, 13, 13), (256, 13, 13), (256, 6, 6),
    ]  # fmt: skip
    # The real forward pass, module by module, gives the same shapes in the same order.
    x, shapes = torch.zeros(1, 3, 224, 224), []
    with torch.no_grad():
        for module in [*alexnet.features, alexnet.avgpool, *alexnet.classifier]:
            x = module(torch.flatten(x, 1) if module is alexnet.classifier[0] else x)
            shapes.append(tuple(x.shape[1:]))
    assert [r.output_shape for r in flow.leaves] == shapes
    assert flow.output_shape == (1000,)
    assert flow.params_total == 61_100_840
    assert flow.mult_adds == 714_188_480
    check_params(alexnet, flow)
    check_against_torchinfo(alexnet, flow)
    check_against_flop_counter(alexnet, flow)
    assert leaf(flow, "features.0").formula == "⌊(224 − 11 + 2·2) / 4⌋ + 1 = 55"
    assert leaf(flow, "features.0").flag == ""  # (224 + 4 − 11) / 4 = 54 r 1: a padding column
    assert leaf(flow, "classifier.6").formula == "4096 → 1000"


def test_resnet18_shapes_params_and_mult_adds(resnet18: nn.Module, resnet18_flow) -> None:
    flow = resnet18_flow
    # torchvision's BasicBlock calls self.relu twice: two records, parameters on neither twice.
    relu = [r for r in flow.records if r.name == "layer1.0.relu"]
    assert [r.call_index for r in relu] == [0, 1]
    assert flow.find("layer1.0").is_leaf is False
    assert flow.find("layer1.0").params_total == 73_984
    with torch.no_grad():
        x = resnet18.maxpool(
            resnet18.relu(resnet18.bn1(resnet18.conv1(torch.zeros(1, 3, 224, 224))))
        )
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(resnet18, name)(x)
            assert flow.find(name).output_shape == tuple(x.shape[1:])
    assert [flow.find(f"layer{i}").output_shape for i in (1, 2, 3, 4)] == [
        (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7),
    ]  # fmt: skip
    assert flow.params_total == 11_689_512
    assert flow.mult_adds == 1_814_073_344
    check_params(resnet18, flow)
    check_against_torchinfo(resnet18, flow)
    check_against_flop_counter(resnet18, flow)
    # Containers sum what ran inside them, children come after their container.
    layer1 = [r for r in flow.records if r.name.startswith("layer1.")]
    assert flow.find("layer1").mult_adds == sum(r.mult_adds for r in layer1 if r.is_leaf)
    names = [r.name for r in flow.records]
    assert names.index("layer1") < names.index("layer1.0") < names.index("layer1.0.conv1")


def test_frozen_and_shared_parameters_count_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared, nn.Linear(4, 2))
    model[4].weight.requires_grad_(False)
    flow = probe.shape_flow(model, (2, 2))
    assert [(r.name, r.call_index, r.params_total) for r in flow.records] == [
        ("0", 0, 0), ("1", 0, 20), ("2", 0, 0), ("1", 1, 0), ("4", 0, 10),
    ]  # fmt: skip
    assert [r.mult_adds for r in flow.records] == [0, 16, 0, 16, 8]
    assert (flow.params_total, flow.params_trainable, flow.mult_adds) == (30, 22, 40)
    assert leaf(flow, "4").params_trainable == 2  # the bias; the weight is frozen


# ---------------------------------------------------------------------------------------------
# Receptive fields


def test_receptive_fields_alexnet(alexnet_flow) -> None:
    # rf_out = rf_in + (k − 1)·jump_in, jump_out = jump_in·s:
    # conv1 11 (jump 4); pool1 11 + 2·4 = 19 (8); conv2 19 + 4·8 = 51; pool2 51 + 2·8 = 67 (16);
    # conv3 67 + 2·16 = 99; conv4 131; conv5 163; pool5 163 + 2·16 = 195 (32).
    convs_pools = [r for r in alexnet_flow.leaves if r.type in ("Conv2d", "MaxPool2d")]
    assert [(r.receptive_field, r.effective_stride) for r in convs_pools] == [
        (11, 4), (19, 8), (51, 8), (67, 16), (99, 16), (131, 16), (163, 16), (195, 32),
    ]  # fmt: skip
    # AdaptiveAvgPool2d((6, 6)) on 6×6 is the identity; after flatten the whole input counts.
    assert alexnet_flow.find("avgpool").receptive_field == 195
    assert alexnet_flow.find("classifier.1").receptive_field is None


def test_receptive_fields_resnet18_through_residual_branches(resnet18_flow) -> None:
    # conv1 7×7/2 → 7 (jump 2); maxpool 3/2: 7 + 2·2 = 11 (jump 4); each 3×3 conv at jump 4
    # adds 8: layer1.0.conv1 19, conv2 27, the block output (27 ∪ identity 11) 27; layer1.1
    # 35, 43. layer2.0: conv1 3×3/2 43 + 2·4 = 51 (jump 8), conv2 51 + 2·8 = 67, downsample
    # 1×1/2 keeps 43, the sum 67; layer2.1 83, 99. layer3 (jump 16): 115, 147 | 179, 211.
    # layer4 (jump 32): 243, 307 | 371, 435. The global average pool then sees everything.
    flow = resnet18_flow
    convs = [r.receptive_field for r in flow.leaves if r.type == "Conv2d"]
    assert convs == [
        7, 19, 27, 35, 43,
        51, 67, 43, 83, 99,
        115, 147, 99, 179, 211,
        243, 307, 211, 371, 435,
    ]  # fmt: skip
    blocks = [flow.find(f"layer{i}.{j}") for i in (1, 2, 3, 4) for j in (0, 1)]
    assert [(b.receptive_field, b.effective_stride) for b in blocks] == [
        (27, 4), (43, 4), (67, 8), (99, 8), (147, 16), (211, 16), (307, 32), (435, 32),
    ]  # fmt: skip
    assert flow.find("maxpool").receptive_field == 11
    assert flow.find("layer1.0.relu", 1).receptive_field == 27  # the block's closing ReLU
    assert flow.find("avgpool").receptive_field is None
    assert flow.find("fc").receptive_field is None


class LinearProbeNet(nn.Module):
    """Positive weights, no nonlinearity: the gradient of an output is non-zero exactly on the
    input pixels it can see, an oracle for the receptive window including padding and branches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.branch = nn.Conv2d(2, 2, 5, padding=2)
        self.shortcut = nn.Conv2d(2, 2, 1)
        self.conv2 = nn.Conv2d(2, 1, 3, stride=2, dilation=2, padding=1)
        for p in self.parameters():
            nn.init.uniform_(p, 0.1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        x = self.branch(x) + self.shortcut(x)
        return self.conv2(F.pad(x, (3, 0, 0, 0)))


def gradient_box(model: nn.Module, size: int, y: int, x: int) -> tuple[int, int, int, int]:
    image = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    model(image)[0, 0, y, x].backward()
    rows, cols = torch.nonzero(image.grad[0, 0], as_tuple=True)
    return (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))


def test_receptive_window_equals_the_gradient_support() -> None:
    torch.manual_seed(0)
    model = LinearProbeNet().double()
    flow = probe.shape_flow(model, (1, 21, 21))
    # conv1 3 → pool 3 + 2 = 5 (jump 2) → branch 5 + 4·2 = 13, shortcut 5: the sum 13 →
    # conv2 (k3 d2 s2) 13 + 2·2·2 = 21 (jump 4).
    assert [(r.name, r.receptive_field, r.effective_stride) for r in flow.records] == [
        ("conv1", 3, 1), ("pool", 5, 2), ("branch", 13, 2), ("shortcut", 5, 2), ("conv2", 21, 4),
    ]  # fmt: skip
    out_h, out_w = flow.find("conv2").output_shape[1:]
    assert (out_h, out_w) == (5, 6)  # F.pad added 3 columns on the left only
    for y, x in [(0, 0), (1, 2), (out_h - 1, out_w - 1), (0, out_w - 1)]:
        assert probe.receptive_window(flow, "conv2", y, x) == gradient_box(model, 21, y, x)
    assert probe.receptive_window(flow, "pool", 3, 4) == (4, 6, 8, 10)
    with pytest.raises(ShapeError, match="outside"):
        probe.receptive_window(flow, "conv2", out_h, 0)


def test_receptive_window_after_flatten_is_the_whole_image(course_net: CourseNet) -> None:
    flow = probe.shape_flow(course_net, (1, 28, 28))
    # pool2 (rf 16, jump 4, no padding anywhere): output (3, 1) sees rows 12…27, columns 4…19.
    assert probe.receptive_window(flow, "features.pool2", 3, 1) == (12, 4, 27, 19)
    with pytest.raises(ShapeError, match="no spatial output"):
        probe.receptive_window(flow, "classifier.fc", 0, 0)
    pooled = probe.shape_flow(BNNet(), (1, 9, 9))
    assert probe.receptive_window(pooled, "pool", 0, 0) == (0, 0, 8, 8)


# ---------------------------------------------------------------------------------------------
# Formulas and flags


def formula_of(layer: nn.Module, shape: tuple[int, int, int]) -> tuple[probe.LayerRecord, tuple]:
    flow = probe.shape_flow(nn.Sequential(layer), shape)
    return flow.records[0], flow.output_shape


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_formulas_and_flags() -> None:
    record, _ = formula_of(nn.Conv2d(1, 1, 3, stride=2), (1, 28, 28))
    assert record.formula == "⌊(28 − 3 + 2·0) / 2⌋ + 1 = 13"
    assert record.flag == "not exact: (28 − 3 + 2·0) / 2 = 12 r 1, last 1 row/column ignored"
    record, _ = formula_of(nn.Conv2d(1, 1, 5, stride=2), (1, 29, 29))
    assert (record.formula, record.flag) == ("⌊(29 − 5 + 2·0) / 2⌋ + 1 = 13", "")
    # The remainder falls on the padding: nothing real is lost.
    record, _ = formula_of(nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 28, 28))
    assert (record.formula, record.flag) == ("⌊(28 − 3 + 2·1) / 2⌋ + 1 = 14", "")
    record, _ = formula_of(nn.Conv2d(1, 1, 3, padding=1, dilation=2), (1, 28, 28))
    assert record.formula == "⌊(28 + 2·1 − 2·(3 − 1) − 1) / 1⌋ + 1 = 26"
    assert (record.receptive_field, record.dilation) == (5, (2, 2))
    record, _ = formula_of(nn.MaxPool2d(2), (3, 7, 6))
    assert record.formula == "H: ⌊(7 − 2 + 2·0) / 2⌋ + 1 = 3; W: ⌊(6 − 2 + 2·0) / 2⌋ + 1 = 3"
    assert record.flag == "not exact: (7 − 2 + 2·0) / 2 = 2 r 1, last 1 row ignored"
    record, _ = formula_of(nn.MaxPool2d(2, ceil_mode=True), (3, 7, 7))
    assert (record.formula, record.output_shape) == ("⌈(7 − 2 + 2·0) / 2⌉ + 1 = 4", (3, 4, 4))
    record, _ = formula_of(nn.Conv2d(1, 1, 1, stride=2), (1, 8, 8))
    assert record.flag == "stride 2 > kernel 1: 1 row/column in every 2 never read"
    record, _ = formula_of(nn.Conv2d(1, 1, 5, padding="same"), (1, 9, 9))
    assert (record.formula, record.padding) == ("⌊(9 − 5 + 2·2) / 1⌋ + 1 = 9", (2, 2))
    record, _ = formula_of(nn.Conv2d(1, 1, 4, padding="same"), (1, 9, 9))  # 1 left, 2 right
    assert (record.formula, record.padding) == ("⌊(9 − 4 + 3) / 1⌋ + 1 = 9", (1, 1))


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_formula_values_equal_the_real_output(ceil_mode: bool) -> None:
    """The number each formula ends with is the size PyTorch produces, over a grid of settings."""
    for size in (5, 8, 11):
        for kernel, stride, padding, dilation in [
            (3, 1, 0, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 3, 1, 1), (3, 2, 1, 2), (4, 3, 2, 1),
        ]:  # fmt: skip
            pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
            record, _ = formula_of(pool, (1, size, size))
            assert int(record.formula.rsplit("= ", 1)[1]) == record.output_shape[1], record
            if not ceil_mode:
                conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
                record, _ = formula_of(conv, (1, size, size))
                assert int(record.formula.rsplit("= ", 1)[1]) == record.output_shape[1]


# ---------------------------------------------------------------------------------------------
# What-if: inputs the model cannot take


def test_what_if_names_the_breaking_layer(course_net: CourseNet) -> None:
    assert probe.check_input(course_net, (1, 28, 28)) is None
    assert probe.check_input(course_net, (1, 32, 32)) == probe.BreakReport(
        "classifier.fc", "Linear", "fc expects 320 features, gets 500"
    )
    assert probe.check_input(course_net, (3, 28, 28)) == probe.BreakReport(
        "features.conv1", "Conv2d", "conv1 expects 1 input channel, gets 3"
    )
    assert probe.check_input(CourseNet(in_channels=3), (1, 28, 28)).reason == (
        "conv1 expects 3 input channels, gets 1"
    )
    assert probe.check_input(course_net, (1, 4, 4)).reason == (
        "conv1: padded input 4×4 is smaller than the 5×5 kernel"
    )
    # 12 → conv1 8 → pool1 4: conv2 is the first that cannot slide.
    flow = probe.shape_flow(course_net, (1, 12, 12))
    assert flow.broken == probe.BreakReport(
        "features.conv2", "Conv2d", "conv2: padded input 4×4 is smaller than the 5×5 kernel"
    )
    assert [r.name for r in flow.records] == ["features.conv1", "features.pool1", "features.relu1"]
    assert flow.output_shape is None
    assert probe.check_input(nn.Conv2d(1, 1, 3, dilation=3), (1, 6, 6)).reason == (
        "Conv2d: padded input 6×6 is smaller than the 3×3 kernel (dilated to 7×7)"
    )
    assert probe.check_input(course_net, (0, 28, 28)).reason.startswith("input shape must be")
    assert all_hooks_removed(course_net)


def test_what_if_failure_in_forward_code_points_after_the_last_layer_that_ran() -> None:
    model = ViewNet()
    flow = probe.shape_flow(model, (1, 32, 32))
    assert (flow.broken.layer, flow.broken.type) == ("", "ViewNet")
    assert flow.broken.reason == "shape '[-1, 320]' is invalid for input of size 500 (after pool2)"
    assert [r.name for r in flow.records] == ["conv1", "pool1", "conv2", "pool2"]
    model.train()
    probe.shape_flow(model, (1, 32, 32))
    assert model.training
    assert all_hooks_removed(model)


def test_linear_before_flatten_and_batchnorm_channel_mismatch() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(8, 4))
    assert probe.check_input(model, (1, 6, 6)).reason == (
        "1 expects 8 features, gets 4 (its input 2×4×4 is not flattened)"
    )
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(8))
    assert probe.check_input(model, (1, 8, 8)) == probe.BreakReport(
        "1", "BatchNorm2d", "1 expects 8 channels, gets 4"
    )


# ---------------------------------------------------------------------------------------------
# Activations


def test_captured_activation_equals_the_sub_network(course_net: CourseNet, mnist) -> None:
    f = course_net.features
    with torch.no_grad():
        expected = f.conv2(f.relu1(f.pool1(f.conv1(mnist))))
        logits = course_net(mnist)
    acts = probe.activations(course_net, mnist, ["features.conv2", "classifier.fc"])
    assert list(acts) == ["features.conv2", "classifier.fc"]
    assert torch.equal(acts["features.conv2"], expected)
    assert torch.equal(acts["classifier.fc"], logits)
    inputs = probe.activations(course_net, mnist, ["classifier.fc"], capture="input")
    assert torch.equal(inputs["classifier.fc"], torch.flatten(f.relu2(f.pool2(expected)), 1))
    out, both = probe.forward_with_activations(course_net, mnist, ["features.pool1"])
    assert torch.equal(out, logits)
    assert both["features.pool1"].shape == (8, 10, 12, 12)
    every = probe.activations(course_net, mnist)
    assert list(every) == [name for name, m in course_net.named_modules() if probe._is_leaf(m)]


def test_in_place_relu_does_not_overwrite_the_stored_conv_output(mnist) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
    acts = probe.activations(model, mnist, ["0", "1"])
    expected = F.conv2d(mnist, model[0].weight, model[0].bias)
    assert (expected < 0).any()
    assert torch.equal(acts["0"], expected)
    assert torch.equal(acts["1"], expected.clamp(min=0))


def test_reused_module_calls_are_keyed_by_call_index(resnet18: nn.Module) -> None:
    block = resnet18.layer1[0]
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(0))
    acts = probe.activations(block, x, ["relu#0", "relu#1", "bn2"])
    with torch.no_grad():
        block.eval()
        first = F.relu(block.bn1(block.conv1(x)))
        bn2 = block.bn2(block.conv2(first))
        closing = F.relu(bn2 + x)
    assert torch.equal(acts["relu"], first)
    assert torch.equal(acts["relu#1"], closing)
    # The block adds the shortcut in place (out += identity): the stored bn2 output is a clone.
    assert torch.equal(acts["bn2"], bn2)
    assert "relu#1" in probe.activations(block, x)


def test_mode_restored_and_batchnorm_uses_running_statistics(mnist) -> None:
    model = BNNet()
    model.train()
    model.fc.eval()  # a module the user put in eval mode on purpose stays so
    before = model.bn.running_mean.clone()
    acts = probe.activations(model, mnist, ["bn"])
    assert torch.equal(model.bn.running_mean, before)  # eval mode: the statistics did not move
    with torch.no_grad():
        conv = model.conv(mnist)
        expected = (conv - before[None, :, None, None]) / torch.sqrt(
            model.bn.running_var[None, :, None, None] + model.bn.eps
        ) * model.bn.weight[None, :, None, None] + model.bn.bias[None, :, None, None]
    assert torch.allclose(acts["bn"], expected, atol=1e-6)
    assert model.training
    assert model.bn.training
    assert not model.fc.training


def test_hooks_removed_and_mode_restored_when_the_forward_raises(course_net: CourseNet) -> None:
    course_net.train()
    with pytest.raises(RuntimeError):
        probe.activations(course_net, torch.zeros(1, 1, 32, 32), ["features.conv1"])
    assert all_hooks_removed(course_net)
    assert all(m.training for m in course_net.modules())
    course_net.eval()


def test_unknown_and_silent_layers_raise(mnist) -> None:
    model = BNNet()
    with pytest.raises(UnknownNameError, match="no layer named conv9"):
        probe.activations(model, mnist, ["conv", "conv9"])
    with pytest.raises(LensError, match="captured nothing for unused"):
        probe.activations(model, mnist, ["conv", "unused"])
    with pytest.raises(LensError, match="capture must be"):
        probe.activations(model, mnist, ["conv"], capture="gradient")
    assert all_hooks_removed(model)


def test_activations_from_several_threads_on_one_model(mnist) -> None:
    torch.manual_seed(0)
    model = BNNet().eval()
    batches = [mnist[i : i + 2] * (i + 1) for i in range(4)]
    expected = [probe.activations(model, b, ["conv", "bn", "fc"]) for b in batches]
    start = threading.Barrier(len(batches))
    failures: list[str] = []

    def worker(i: int) -> None:
        start.wait()
        for _ in range(15):
            got = probe.activations(model, batches[i], ["conv", "bn", "fc"])
            if not all(torch.equal(got[k], expected[i][k]) for k in got):
                failures.append(f"thread {i} got another thread's activations")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all_hooks_removed(model)
    assert not model.training


# ---------------------------------------------------------------------------------------------
# Filters and channel statistics


def test_conv_layers_and_filter_weights(course_net: CourseNet) -> None:
    assert [name for name, _ in probe.conv_layers(course_net)] == [
        "features.conv1", "features.conv2",
    ]  # fmt: skip
    weights = probe.filter_weights(course_net, "features.conv2")
    assert weights.shape == (20, 10, 5, 5)
    assert weights.device.type == "cpu"
    assert torch.equal(weights, course_net.features.conv2.weight)
    weights.zero_()
    assert course_net.features.conv2.weight.abs().sum() > 0  # a copy, not a view
    with pytest.raises(UnknownNameError, match=r"features\.conv1, features\.conv2"):
        probe.filter_weights(course_net, "classifier.fc")
    with pytest.raises(UnknownNameError, match="does not exist"):
        probe.filter_weights(course_net, "conv7")


def test_channel_stats_by_hand() -> None:
    # (B=2, C=3, H=1, W=2): channel 0 = 1 2 | 3 4, channel 1 all zero, channel 2 = −1 0 | 2 0.
    act = torch.tensor(
        [
            [[[1.0, 2.0]], [[0.0, 0.0]], [[-1.0, 0.0]]],
            [[[3.0, 4.0]], [[0.0, 0.0]], [[2.0, 0.0]]],
        ]
    )
    assert probe.channel_stats(act) == [
        probe.ChannelStats(channel=0, mean=2.5, max=4.0, zero_fraction=0.0, dead=False),
        probe.ChannelStats(channel=1, mean=0.0, max=0.0, zero_fraction=1.0, dead=True),
        probe.ChannelStats(channel=2, mean=0.25, max=2.0, zero_fraction=0.75, dead=False),
    ]
    flat = probe.channel_stats(torch.tensor([[0.0, 5.0], [-2.0, 1.0]]))
    assert [(s.mean, s.zero_fraction, s.dead) for s in flat] == [
        (-1.0, 1.0, True),
        (3.0, 0.0, False),
    ]
    with pytest.raises(ShapeError):
        probe.channel_stats(torch.zeros(2, 3, 4))


def test_dead_channels_of_a_real_relu_layer(course_net: CourseNet, mnist) -> None:
    act = probe.activations(course_net, mnist, ["features.relu1"])["features.relu1"]
    stats = probe.channel_stats(act)
    per_channel = act.transpose(0, 1).reshape(10, -1)
    assert [s.dead for s in stats] == (per_channel == 0).all(dim=1).tolist()
    assert [s.zero_fraction for s in stats] == pytest.approx(
        (per_channel == 0).double().mean(dim=1).tolist()
    )


# ---------------------------------------------------------------------------------------------
# The registry's models


def vgg13_mult_adds_by_hand() -> int:
    """Conv stack [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] at 224."""
    total, channels, size = 0, 3, 224
    for width in [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if width == "M":
            size //= 2
        else:
            total += size * size * width * channels * 9
            channels = width
    return total + 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000


def test_registry_vgg13_at_224() -> None:
    model = models.build_model("vgg13")
    flow = probe.shape_flow(model, (3, 224, 224))
    # Two 3×3 convs per stage then a 2×2 pool: 3, 5, pool 6 (jump 2); 10, 14, pool 16 (4);
    # 24, 32, pool 36 (8); 52, 68, pool 76 (16); 108, 140, pool 156 (32).
    assert [r.receptive_field for r in flow.leaves if r.type in ("Conv2d", "MaxPool2d")] == [
        3, 5, 6, 10, 14, 16, 24, 32, 36, 52, 68, 76, 108, 140, 156,
    ]  # fmt: skip
    assert flow.output_shape == (1000,)
    assert flow.params_total == 133_047_848
    assert flow.mult_adds == vgg13_mult_adds_by_hand() == 11_308_466_176
    check_params(model, flow)


@pytest.mark.parametrize(
    "name",
    ["course-net", "simple-convnet", "lenet5", "bn-cnn", "alexnet-small", "vgg13-small",
     "resnet18-small", "resnet18"],
)  # fmt: skip
def test_registry_models_against_torchinfo_and_flop_counter(name: str) -> None:
    model = models.build_model(name)
    flow = probe.shape_flow(model, models.model_info(name).input_shape)
    assert flow.broken is None
    check_params(model, flow)
    check_against_torchinfo(model, flow)
    check_against_flop_counter(model, flow)
    assert all(r.flag != "output size ≤ 0" for r in flow.records)


def test_registry_alexnet_and_resnet18_have_the_originals_receptive_fields(
    alexnet_flow, resnet18_flow
) -> None:
    for name, original in (("alexnet", alexnet_flow), ("resnet18", resnet18_flow)):
        flow = probe.shape_flow(models.build_model(name), (3, 224, 224))
        ours = [(r.receptive_field, r.effective_stride) for r in flow.leaves if r.type == "Conv2d"]
        theirs = [
            (r.receptive_field, r.effective_stride) for r in original.leaves if r.type == "Conv2d"
        ]
        assert sorted(ours) == sorted(theirs)  # the registry's ResNet runs the shortcut first
        assert flow.mult_adds == original.mult_adds
        assert flow.params_total == original.params_total


def test_registry_course_net_what_if() -> None:
    model = models.build_model("course-net")
    assert probe.check_input(model, (1, 32, 32)) == probe.BreakReport(
        "classifier.fc", "Linear", "fc expects 320 features, gets 500"
    )
