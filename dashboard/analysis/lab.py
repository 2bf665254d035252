"""The arithmetic of convolution and pooling, written out with its numbers (the Convolution lab).

Everything here is computed directly from its definition, apart from PyTorch, so the tests can
hold it against `F.conv2d`, `F.max_pool2d`, `F.avg_pool2d` and the model's own activations:

- a worked 2-D convolution: padded input, output-size formula per axis with the chosen numbers,
  every output position's window and its multiply-add ("3·1 + 4·2 + … = 87");
- several channels (per-channel partial results and their sum), 1×1 convolution as channel
  mixing, and the parameter arithmetic of a ResNet bottleneck;
- max and average pooling, position by position;
- im2col: the unrolled input, the kernel matrix, their product and the reshape back;
- any neuron of a loaded model: its receptive window in the layer's input, the weights, the
  products and the sum, beside the value the model computed;
- classic edge kernels (Prewitt, Sobel) on an image, beside the model's first layer.

Convolution here is cross-correlation, as in PyTorch: the kernel is not flipped. Integer inputs
stay integers (int64) so the preset examples come out exact; anything else is float64.

The lab's data flow: `lab_inputs` (typed numbers and presets → arrays) → this module (the
arithmetic) → `lab_display` (styled grids, tables, sentences and figures, no Streamlit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import probe
from dashboard.base.errors import LensError, ShapeError

Pair = tuple[int, int]

MINUS = "−"


# ---------------------------------------------------------------------------------------------
# Numbers as text


def fmt(value: Any, digits: int = 6) -> str:
    """A number as a reader writes it: integers whole, floats to `digits` significant digits,
    a typographic minus, and ±∞ for the padding of max pooling."""
    v = value.item() if isinstance(value, np.generic) else value
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else f"{MINUS}∞"
        if v.is_integer() and abs(v) < 1e15:
            v = int(v)
    text = str(v) if isinstance(v, int) else f"{v:.{digits}g}"
    return text.replace("-", MINUS)


def term(value: Any, digits: int = 6) -> str:
    """A factor inside a product: negative numbers in parentheses."""
    text = fmt(value, digits)
    return f"({text})" if text.startswith(MINUS) else text


def _thousands(n: int) -> str:
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------
# Sizes


def _pair(value: int | Sequence[int], name: str, minimum: int) -> Pair:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2:
        raise LensError(f"{name} needs one number or two (rows, columns), got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise LensError(f"{name} must be at least {minimum}, got {pair[0]}, {pair[1]}")
    return pair


@dataclass(frozen=True)
class AxisSize:
    """The output size along one axis, its formula with the numbers, and what it leaves out."""

    axis: str  # "rows" | "columns"
    size: int  # input length along the axis (before padding)
    kernel: int
    padding: int
    stride: int
    dilation: int
    out: int
    formula: str  # "⌊(5 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 5"
    exact: bool  # the division by the stride leaves no remainder
    remainder: int
    uncovered: tuple[int, ...]  # padded indices that no window reads

    @property
    def padded(self) -> int:
        return self.size + 2 * self.padding

    @property
    def lost(self) -> tuple[int, ...]:
        """Input indices (not padding) that never reach the output."""
        return tuple(
            i - self.padding for i in self.uncovered if self.padding <= i < self.padding + self.size
        )

    @property
    def note(self) -> str:
        """What goes wrong along this axis, or "" when every input pixel is read."""
        if self.out <= 0:
            return ""
        unit = self.axis[:-1]
        parts = []
        if not self.exact:
            span = self.padded - self.dilation * (self.kernel - 1) - 1
            parts.append(
                f"{self.axis}: {span} / {self.stride} = {span // self.stride} remainder "
                f"{self.remainder} is not whole, so the size is rounded down and the last "
                f"window stops {_count(self.remainder, unit)} short of the padded edge"
            )
        elif self.uncovered:
            span = self.dilation * (self.kernel - 1) + 1
            parts.append(
                f"{self.axis}: stride {self.stride} jumps over {unit}s the "
                f"{span}-{unit} window never reaches"
            )
        if not self.uncovered:
            return "; ".join(parts)
        many = len(self.uncovered) > 1
        skipped = f"padded {_listing(unit, self.uncovered)} {'are' if many else 'is'} never covered"
        if self.lost:
            reach = "never reach" if len(self.lost) > 1 else "never reaches"
            parts.append(f"{skipped}: input {_listing(unit, self.lost)} {reach} the output")
        else:
            padding = "they are padding" if many else "it is padding"
            parts.append(f"{skipped}, but {padding}: no input value is lost")
        return "; ".join(parts)


def _listing(unit: str, items: Sequence[int]) -> str:
    """Units and indices: "row 5", or "rows 3, 4"."""
    return f"{unit}{'s' if len(items) > 1 else ''} {', '.join(map(str, items))}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def axis_size(
    axis: str, size: int, kernel: int, padding: int, stride: int, dilation: int = 1, *, conv: bool
) -> AxisSize:
    """Output length ⌊(n + 2p − d·(k − 1) − 1) / s⌋ + 1 with the numbers written in; pooling
    (`conv` False, no dilation) writes it as ⌊(n + 2p − k) / s⌋ + 1."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = span // stride + 1
    if conv:
        inner = f"{size} + 2·{padding} − {dilation}·({kernel} − 1) − 1"
    else:
        inner = f"{size} + 2·{padding} − {kernel}"
    formula = f"⌊({inner}) / {stride}⌋ + 1 = {fmt(out)}"
    covered = {i * stride + j * dilation for i in range(max(out, 0)) for j in range(kernel)}
    uncovered = tuple(i for i in range(size + 2 * padding) if i not in covered)
    remainder = span % stride if span >= 0 else 0
    exact = remainder == 0
    return AxisSize(
        axis, size, kernel, padding, stride, dilation, out, formula, exact, remainder, uncovered
    )


def _sizes(
    hw: Pair, kernel: Pair, padding: Pair, stride: Pair, dilation: Pair, *, conv: bool
) -> tuple[AxisSize, AxisSize]:
    return (
        axis_size("rows", hw[0], kernel[0], padding[0], stride[0], dilation[0], conv=conv),
        axis_size("columns", hw[1], kernel[1], padding[1], stride[1], dilation[1], conv=conv),
    )


def _formula_text(sizes: tuple[AxisSize, AxisSize]) -> str:
    h, w = sizes
    if h.formula == w.formula:
        return f"H_out = W_out = {h.formula}"
    return f"H_out = {h.formula}; W_out = {w.formula}"


def _empty_message(sizes: tuple[AxisSize, AxisSize], what: str) -> str:
    """Why there is no output, or "" when there is one."""
    for s in sizes:
        if s.out <= 0:
            span = s.dilation * (s.kernel - 1) + 1
            return (
                f"no output: the padded input has {s.padded} {s.axis} but the {what} spans "
                f"{span}, so the size formula gives {fmt(s.out)}; add padding or use a "
                f"smaller {what}"
            )
    return ""


def _problems(sizes: tuple[AxisSize, AxisSize]) -> list[str]:
    """One note per axis that loses something; one for both when the axes are alike."""
    h, w = sizes
    if h.note and replace(h, axis="columns") == w:
        return [h.note.replace("rows:", "rows (and columns alike):", 1)]
    return [s.note for s in sizes if s.note]


# ---------------------------------------------------------------------------------------------
# Worked convolution, one channel


def _exact(*arrays: Any) -> np.dtype:
    """int64 when every input is whole-numbered by type, else float64."""
    whole = all(np.asarray(a).dtype.kind in "iub" for a in arrays)
    return np.dtype(np.int64) if whole else np.dtype(np.float64)


def _matrix(value: Any, name: str, ndim: int, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != ndim or 0 in a.shape:
        raise ShapeError(f"{name} must have {ndim} non-empty axes, got shape {a.shape}")
    return a.astype(dtype)


def _correlate(padded: np.ndarray, kernel: np.ndarray, stride: Pair, dilation: Pair, out: Pair):
    """Σ_ij kernel[i, j] · padded[i·d + y·s, j·d + x·s] for every output (y, x), one kernel
    offset at a time: exact in int64."""
    total = np.zeros((*padded.shape[:-2], *out), dtype=np.result_type(padded, kernel))
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            top, left = i * dilation[0], j * dilation[1]
            rows = slice(top, top + (out[0] - 1) * stride[0] + 1, stride[0])
            cols = slice(left, left + (out[1] - 1) * stride[1] + 1, stride[1])
            total = total + kernel[i, j] * padded[..., rows, cols]
    return total


def _pad(x: np.ndarray, padding: Pair, value: float = 0) -> np.ndarray:
    width = [(0, 0)] * (x.ndim - 2) + [(padding[0],) * 2, (padding[1],) * 2]
    return np.pad(x, width, constant_values=value)


@dataclass(frozen=True)
class WorkedConv:
    """One input channel cross-correlated with one kernel, every number kept."""

    input: np.ndarray  # (H, W)
    kernel: np.ndarray  # (kh, kw)
    padded: np.ndarray  # (H + 2·ph, W + 2·pw), zeros around
    padding: Pair
    stride: Pair
    dilation: Pair
    bias: int | float
    sizes: tuple[AxisSize, AxisSize]
    output: np.ndarray  # (H_out, W_out); (0, 0) when a size is ≤ 0
    message: str  # why there is no output, else ""

    @property
    def formula(self) -> str:
        return _formula_text(self.sizes)

    @property
    def problems(self) -> list[str]:
        """What goes wrong when the division by the stride is not exact (one line per axis)."""
        return _problems(self.sizes)


def conv2d_worked(
    x: Any,
    kernel: Any,
    *,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    bias: int | float = 0,
) -> WorkedConv:
    """Cross-correlate (H, W) with (kh, kw) like `F.conv2d`, zero padding, keeping the work."""
    dtype = _exact(x, kernel, bias)
    a = _matrix(x, "the input", 2, dtype)
    k = _matrix(kernel, "the kernel", 2, dtype)
    p, s = _pair(padding, "padding", 0), _pair(stride, "stride", 1)
    d = _pair(dilation, "dilation", 1)
    sizes = _sizes(a.shape, k.shape, p, s, d, conv=True)
    padded = _pad(a, p)
    message = _empty_message(sizes, "kernel")
    out = (sizes[0].out, sizes[1].out)
    b = dtype.type(bias)
    output = (
        np.zeros((0, 0), dtype=dtype) if message else _correlate(padded, k, s, d, out) + b
    )  # (H_out, W_out)
    return WorkedConv(a, k, padded, p, s, d, b.item(), sizes, output, message)


@dataclass(frozen=True)
class Step:
    """One output position of a worked convolution: its window and its multiply-add."""

    y: int  # output row and column
    x: int
    top: int  # padded coordinates of the window's first cell
    left: int
    rows: tuple[int, ...]  # padded rows and columns the kernel reads (dilation leaves gaps)
    cols: tuple[int, ...]
    window: np.ndarray  # (kh, kw) values under the kernel
    products: np.ndarray  # window · kernel, elementwise
    bias: int | float
    value: int | float
    text: str  # "0·1 + 0·2 + … + 4·9 = 91"


def _written(terms: list[str], total: Any, bias: Any, digits: int) -> str:
    if bias:
        terms = [*terms, term(bias, digits)]
        total += bias
    return " + ".join(terms) + f" = {fmt(total, digits)}"


def multiply_add(values: Any, weights: Any, bias: Any = 0, digits: int = 6) -> str:
    """The written dot product "a·w + a·w + … [+ bias] = total", input first, row-major."""
    pairs = list(zip(np.ravel(values).tolist(), np.ravel(weights).tolist(), strict=True))
    terms = [f"{term(v, digits)}·{term(k, digits)}" for v, k in pairs]
    return _written(terms, sum(v * k for v, k in pairs), bias, digits)


def written_sum(values: Any, bias: Any = 0, digits: int = 6) -> str:
    """The written sum "v₀ + v₁ + … [+ bias] = total" (the bias last, when nonzero)."""
    parts = np.ravel(values).tolist()
    return _written([term(v, digits) for v in parts], sum(parts), bias, digits)


def _window_indices(start: int, kernel: int, dilation: int) -> tuple[int, ...]:
    return tuple(start + i * dilation for i in range(kernel))


def _check_position(output: np.ndarray, y: int, x: int) -> None:
    if not (0 <= y < output.shape[0] and 0 <= x < output.shape[1]):
        raise LensError(f"({y}, {x}) is outside the {output.shape[0]}×{output.shape[1]} output")


def step_at(worked: WorkedConv, y: int, x: int) -> Step:
    """Output position (y, x): its window in the padded input and its multiply-add."""
    _check_position(worked.output, y, x)
    top, left = y * worked.stride[0], x * worked.stride[1]
    rows = _window_indices(top, worked.kernel.shape[0], worked.dilation[0])
    cols = _window_indices(left, worked.kernel.shape[1], worked.dilation[1])
    window = worked.padded[np.ix_(rows, cols)]
    products = window * worked.kernel
    text = multiply_add(window, worked.kernel, worked.bias)
    value = worked.output[y, x].item()
    return Step(y, x, top, left, rows, cols, window, products, worked.bias, value, text)


def steps(worked: WorkedConv) -> list[Step]:
    """Every output position in row-major order, with the numbers that make it."""
    out_h, out_w = worked.output.shape
    return [step_at(worked, y, x) for y in range(out_h) for x in range(out_w)]


# ---------------------------------------------------------------------------------------------
# Several channels, 1×1 convolution, the bottleneck


@dataclass(frozen=True)
class MultiChannelConv:
    """(C_in, H, W) with C_out kernels: each kernel slice on its input channel, then the sum."""

    input: np.ndarray  # (C_in, H, W)
    kernels: np.ndarray  # (C_out, C_in/groups, kh, kw)
    bias: np.ndarray  # (C_out,)
    groups: int
    padded: np.ndarray  # (C_in, Hp, Wp)
    padding: Pair
    stride: Pair
    dilation: Pair
    sizes: tuple[AxisSize, AxisSize]
    partials: np.ndarray  # (C_out, C_in/groups, H_out, W_out): one kernel slice on one channel
    output: np.ndarray  # (C_out, H_out, W_out) = partials summed over input channels + bias
    message: str

    @property
    def formula(self) -> str:
        return _formula_text(self.sizes)

    def input_channels(self, out_channel: int) -> range:
        """The input channels output channel `out_channel` reads (its group's)."""
        per_group_in = self.input.shape[0] // self.groups
        group = out_channel // (self.kernels.shape[0] // self.groups)
        return range(group * per_group_in, (group + 1) * per_group_in)

    def sum_text(self, out_channel: int, y: int, x: int) -> str:
        """The partial results at (y, x) plus the bias, written out."""
        return written_sum(self.partials[out_channel, :, y, x], self.bias[out_channel].item())


def multichannel_worked(
    x: Any,
    kernels: Any,
    bias: Any = None,
    *,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> MultiChannelConv:
    """Multi-channel convolution as per-channel partial results and their sum (= `F.conv2d`)."""
    kernels_in = np.asarray(kernels)
    bias_in = np.zeros(kernels_in.shape[0] if kernels_in.ndim else 0, dtype=np.int64)
    bias_in = bias_in if bias is None else np.asarray(bias)
    dtype = _exact(x, kernels_in, bias_in)
    a = _matrix(x, "the input", 3, dtype)
    k = _matrix(kernels_in, "the kernels", 4, dtype)
    b = bias_in.astype(dtype).reshape(-1)
    c_in, c_out = a.shape[0], k.shape[0]
    if groups < 1 or c_in % groups or c_out % groups:
        raise LensError(f"groups {groups} must divide {c_in} input and {c_out} output channels")
    if k.shape[1] * groups != c_in:
        raise LensError(
            f"the kernels have {k.shape[1]} input channels each but the input has {c_in}"
            + (f" in {groups} groups" if groups > 1 else "")
        )
    if b.shape != (c_out,):
        raise LensError(f"{b.size} biases for {c_out} output channels")
    p, s = _pair(padding, "padding", 0), _pair(stride, "stride", 1)
    d = _pair(dilation, "dilation", 1)
    sizes = _sizes(a.shape[1:], k.shape[2:], p, s, d, conv=True)
    padded = _pad(a, p)
    message = _empty_message(sizes, "kernel")
    out = (max(sizes[0].out, 0), max(sizes[1].out, 0)) if not message else (0, 0)
    per_group_in, per_group_out = c_in // groups, c_out // groups
    partials = np.zeros((c_out, per_group_in, *out), dtype=dtype)
    if not message:
        for o in range(c_out):
            first = (o // per_group_out) * per_group_in
            for c in range(per_group_in):
                partials[o, c] = _correlate(padded[first + c], k[o, c], s, d, out)
    output = partials.sum(axis=1) + b[:, None, None]
    return MultiChannelConv(a, k, b, groups, padded, p, s, d, sizes, partials, output, message)


@dataclass(frozen=True)
class PointwiseMixing:
    """A 1×1 convolution: at every pixel, output vector = W @ input vector + b."""

    pixel: np.ndarray  # (C_in,) the input's channels at (y, x)
    weights: np.ndarray  # (C_out, C_in)
    bias: np.ndarray  # (C_out,)
    mixed: np.ndarray  # (C_out,) = weights @ pixel + bias
    output: np.ndarray  # (C_out, H, W): the same at every pixel
    lines: tuple[str, ...]  # one written dot product per output channel
    y: int
    x: int


def pointwise_mixing(
    x: Any, weights: Any, bias: Any = None, *, y: int = 0, x_pos: int = 0
) -> PointwiseMixing:
    """1×1 convolution of (C_in, H, W) with (C_out, C_in) or (C_out, C_in, 1, 1) weights."""
    w_in = np.asarray(weights)
    if w_in.ndim == 4 and w_in.shape[2:] == (1, 1):
        w_in = w_in[:, :, 0, 0]
    b_in = np.zeros(w_in.shape[0], dtype=np.int64) if bias is None else np.asarray(bias)
    dtype = _exact(x, w_in, b_in)
    a = _matrix(x, "the input", 3, dtype)
    w = _matrix(w_in, "the 1×1 weights", 2, dtype)
    b = b_in.astype(dtype).reshape(-1)
    if w.shape[1] != a.shape[0]:
        raise LensError(
            f"the weight matrix has {w.shape[1]} columns but the input has {a.shape[0]} "
            "channels: one column per input channel"
        )
    if b.shape != (w.shape[0],):
        raise LensError(f"{b.size} biases for {w.shape[0]} output channels")
    if not (0 <= y < a.shape[1] and 0 <= x_pos < a.shape[2]):
        raise LensError(f"({y}, {x_pos}) is outside the {a.shape[1]}×{a.shape[2]} input")
    pixel = a[:, y, x_pos]
    mixed = w @ pixel + b
    output = np.einsum("oc,chw->ohw", w, a) + b[:, None, None]
    lines = tuple(
        f"out[{o}] = " + multiply_add(pixel, w[o], b[o].item()) for o in range(w.shape[0])
    )
    return PointwiseMixing(pixel, w, b, mixed, output, lines, y, x_pos)


@dataclass(frozen=True)
class ConvCost:
    """Weights, biases and multiply-adds of one k×k convolution (stride 1, 'same' padding)."""

    label: str
    c_in: int
    c_out: int
    kernel: int
    height: int
    width: int

    @property
    def weights(self) -> int:
        return self.c_in * self.c_out * self.kernel * self.kernel

    @property
    def biases(self) -> int:
        return self.c_out

    @property
    def mult_adds(self) -> int:
        return self.weights * self.height * self.width

    @property
    def weight_formula(self) -> str:
        k2 = self.kernel * self.kernel
        return f"{self.c_in}·{self.c_out}·{k2} = {_thousands(self.weights)}"

    @property
    def bias_formula(self) -> str:
        total = self.weights + self.biases
        return f"{_thousands(self.weights)} + {self.biases} = {_thousands(total)}"

    @property
    def mult_add_formula(self) -> str:
        return (
            f"{_thousands(self.weights)}·{self.height}·{self.width} = {_thousands(self.mult_adds)}"
        )


@dataclass(frozen=True)
class Bottleneck:
    """One 3×3 conv C→C against 1×1 down to `reduced`, 3×3, 1×1 back up (ResNet-50's block)."""

    plain: tuple[ConvCost, ...]
    bottleneck: tuple[ConvCost, ...]

    @staticmethod
    def _total(costs: Sequence[ConvCost], attr: str) -> int:
        return sum(getattr(c, attr) for c in costs)

    def total(self, design: str, what: str = "weights") -> int:
        """`design` "plain" | "bottleneck"; `what` "weights" | "with biases" | "mult_adds"."""
        costs = getattr(self, design)
        if what == "with biases":
            return self._total(costs, "weights") + self._total(costs, "biases")
        return self._total(costs, what)

    def total_formula(self, design: str, what: str = "weights") -> str:
        costs = getattr(self, design)
        if what == "with biases":
            parts = [c.weights + c.biases for c in costs]
        else:
            parts = [getattr(c, what) for c in costs]
        total = " + ".join(map(_thousands, parts))
        return f"{total} = {_thousands(sum(parts))}" if len(parts) > 1 else total

    def ratio(self, what: str = "weights") -> float:
        return self.total("plain", what) / self.total("bottleneck", what)


def bottleneck_params(
    channels: int = 256, reduced: int = 64, height: int = 56, width: int = 56
) -> Bottleneck:
    """The bottleneck example: 256→256 with one 3×3 conv (589,824 weights) or 1×1 to 64,
    3×3 64→64, 1×1 back to 256 (16,384 + 36,864 + 16,384 = 69,632), multiply-adds at H×W."""
    if min(channels, reduced, height, width) < 1:
        raise LensError("channels and sizes must be positive")
    return Bottleneck(
        plain=(ConvCost(f"3×3, {channels} → {channels}", channels, channels, 3, height, width),),
        bottleneck=(
            ConvCost(f"1×1, {channels} → {reduced}", channels, reduced, 1, height, width),
            ConvCost(f"3×3, {reduced} → {reduced}", reduced, reduced, 3, height, width),
            ConvCost(f"1×1, {reduced} → {channels}", reduced, channels, 1, height, width),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Pooling


@dataclass(frozen=True)
class WorkedPool:
    """Max or average pooling of (H, W), every window kept.

    Max pooling pads with −∞ (a padded cell never wins), average pooling with zeros that count in
    the divisor (`count_include_pad=True`, PyTorch's default) unless told otherwise.
    """

    input: np.ndarray  # (H, W)
    kind: str  # "max" | "avg"
    window: Pair
    stride: Pair
    padding: Pair
    count_include_pad: bool
    padded: np.ndarray  # float64 with −∞ (max) or 0 (avg) around; the input dtype if unpadded
    sizes: tuple[AxisSize, AxisSize]
    output: np.ndarray  # (H_out, W_out)
    message: str

    @property
    def formula(self) -> str:
        return _formula_text(self.sizes)

    @property
    def problems(self) -> list[str]:
        return _problems(self.sizes)


@dataclass(frozen=True)
class PoolStep:
    y: int
    x: int
    top: int  # padded coordinates of the window's first cell
    left: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    window: np.ndarray  # (kh, kw) values (−∞ / 0 in the padding)
    chosen: tuple[int, int] | None  # max: padded (row, col) of the winner (first in row order)
    total: int | float  # avg: the sum
    count: int  # avg: the divisor
    value: int | float
    text: str  # "max(3, 4, 2, 4) = 4" | "(3 + 4 + 2 + 4) / 4 = 13 / 4 = 3.25"


def pool_worked(
    x: Any,
    kind: str = "max",
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    *,
    count_include_pad: bool = True,
) -> WorkedPool:
    """Pool like `F.max_pool2d` / `F.avg_pool2d` (floor mode); stride defaults to the window."""
    if kind not in ("max", "avg"):
        raise LensError(f'pooling is "max" or "avg", got {kind!r}')
    a = _matrix(x, "the input", 2, _exact(x))
    k = _pair(window, "window", 1)
    s = k if stride is None else _pair(stride, "stride", 1)
    p = _pair(padding, "padding", 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise LensError(
            f"padding {p[0]}, {p[1]} is more than half the {k[0]}×{k[1]} window: a window could "
            "then hold nothing but padding (PyTorch refuses it too)"
        )
    sizes = _sizes(a.shape, k, p, s, (1, 1), conv=False)
    message = _empty_message(sizes, "window")
    fill = -math.inf if kind == "max" else 0
    padded = _pad(a.astype(np.float64), p, fill) if any(p) else a
    if message:
        output = np.zeros((0, 0), dtype=a.dtype if kind == "max" else np.float64)
    else:
        out = (sizes[0].out, sizes[1].out)
        views = [
            padded[i : i + (out[0] - 1) * s[0] + 1 : s[0], j : j + (out[1] - 1) * s[1] + 1 : s[1]]
            for i in range(k[0])
            for j in range(k[1])
        ]
        stack = np.stack(views)  # (kh·kw, H_out, W_out)
        if kind == "max":
            output = stack.max(axis=0).astype(a.dtype)
        else:
            output = stack.sum(axis=0) / _avg_counts(a.shape, k, s, p, out, count_include_pad)
    return WorkedPool(a, kind, k, s, p, count_include_pad, padded, sizes, output, message)


def _avg_counts(hw: Pair, k: Pair, s: Pair, p: Pair, out: Pair, include_pad: bool) -> np.ndarray:
    """The divisor of every average window: k·k, or only the real (unpadded) cells."""
    if include_pad:
        return np.full(out, k[0] * k[1], dtype=np.float64)
    counts = []
    for axis in (0, 1):
        starts = np.arange(out[axis]) * s[axis] - p[axis]
        ends = np.minimum(starts + k[axis], hw[axis])
        counts.append(ends - np.maximum(starts, 0))
    return np.outer(counts[0], counts[1]).astype(np.float64)


def pool_step_at(worked: WorkedPool, y: int, x: int) -> PoolStep:
    """Output position (y, x) of a pooling: its window and how the value is chosen."""
    _check_position(worked.output, y, x)
    (kh, kw), (ph, pw) = worked.window, worked.padding
    top, left = y * worked.stride[0], x * worked.stride[1]
    rows, cols = _window_indices(top, kh, 1), _window_indices(left, kw, 1)
    window = worked.padded[np.ix_(rows, cols)]
    value = worked.output[y, x].item()
    if worked.kind == "max":
        flat = int(np.argmax(window))  # the first maximum in row order, as PyTorch picks it
        listed = ", ".join(fmt(v) for v in window.ravel().tolist())
        chosen = (rows[flat // kw], cols[flat % kw])
        text = f"max({listed}) = {fmt(value)}"
        return PoolStep(y, x, top, left, rows, cols, window, chosen, value, 1, value, text)
    height, width = worked.input.shape
    real_rows = sum(ph <= r < ph + height for r in rows)
    real_cols = sum(pw <= c < pw + width for c in cols)
    count = kh * kw if worked.count_include_pad else real_rows * real_cols
    total = window.sum().item()
    summed = " + ".join(term(v) for v in window.ravel().tolist())
    text = f"({summed}) / {count} = {fmt(total)} / {count} = {fmt(value)}"
    return PoolStep(y, x, top, left, rows, cols, window, None, total, count, value, text)


def pool_steps(worked: WorkedPool) -> list[PoolStep]:
    out_h, out_w = worked.output.shape
    return [pool_step_at(worked, y, x) for y in range(out_h) for x in range(out_w)]


# ---------------------------------------------------------------------------------------------
# im2col


def im2col(
    x: Any,
    kh: int,
    kw: int,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """(C, H, W) → (C·kh·kw, L): column l holds the window of output position l (row-major),
    rows ordered channel, kernel row, kernel column (as `weight.reshape(C_out, -1)` and
    `F.unfold`)."""
    a = _matrix(x, "the input", 3, _exact(x))
    p, s = _pair(padding, "padding", 0), _pair(stride, "stride", 1)
    d = _pair(dilation, "dilation", 1)
    sizes = _sizes(a.shape[1:], (kh, kw), p, s, d, conv=True)
    message = _empty_message(sizes, "kernel")
    if message:
        raise LensError(message)
    out = (sizes[0].out, sizes[1].out)
    padded = _pad(a, p)
    rows = []
    for c in range(a.shape[0]):
        for i in range(kh):
            for j in range(kw):
                top, left = i * d[0], j * d[1]
                rows.append(
                    padded[
                        c,
                        top : top + (out[0] - 1) * s[0] + 1 : s[0],
                        left : left + (out[1] - 1) * s[1] + 1 : s[1],
                    ].ravel()
                )
    return np.stack(rows)  # (C·kh·kw, H_out·W_out)


@dataclass(frozen=True)
class Im2Col:
    """Convolution as one matrix product: kernel matrix @ unrolled input, reshaped back."""

    columns: np.ndarray  # (C·kh·kw, L)
    kernel_matrix: np.ndarray  # (C_out, C·kh·kw)
    bias: np.ndarray  # (C_out,)
    product: np.ndarray  # (C_out, L) = kernel_matrix @ columns + bias
    output: np.ndarray  # (C_out, H_out, W_out)
    row_labels: tuple[str, ...]  # "c0 (0,0)": channel, kernel row, kernel column
    column_labels: tuple[str, ...]  # "(y,x)": the output position of each column

    def column(self, y: int, x: int) -> np.ndarray:
        """The unrolled window of output position (y, x)."""
        out_h, out_w = self.output.shape[1:]
        if not (0 <= y < out_h and 0 <= x < out_w):
            raise LensError(f"({y}, {x}) is outside the {out_h}×{out_w} output")
        return self.columns[:, y * out_w + x]


def im2col_worked(
    x: Any,
    kernels: Any,
    bias: Any = None,
    *,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> Im2Col:
    """(C, H, W) with (C_out, C, kh, kw) kernels through im2col and one matrix product."""
    k_in = np.asarray(kernels)
    b_in = np.zeros(k_in.shape[0] if k_in.ndim else 0, dtype=np.int64)
    b_in = b_in if bias is None else np.asarray(bias)
    dtype = _exact(x, k_in, b_in)
    a = _matrix(x, "the input", 3, dtype)
    k = _matrix(k_in, "the kernels", 4, dtype)
    if k.shape[1] != a.shape[0]:
        raise LensError(f"the kernels have {k.shape[1]} input channels, the input {a.shape[0]}")
    b = b_in.astype(dtype).reshape(-1)
    if b.shape != (k.shape[0],):
        raise LensError(f"{b.size} biases for {k.shape[0]} output channels")
    c_out, c_in, kh, kw = k.shape
    columns = im2col(a, kh, kw, padding, stride, dilation)
    p, s = _pair(padding, "padding", 0), _pair(stride, "stride", 1)
    d = _pair(dilation, "dilation", 1)
    sizes = _sizes(a.shape[1:], (kh, kw), p, s, d, conv=True)
    out_h, out_w = sizes[0].out, sizes[1].out
    kernel_matrix = k.reshape(c_out, -1)
    product = kernel_matrix @ columns + b[:, None]
    rows = tuple(f"c{c} ({i},{j})" for c in range(c_in) for i in range(kh) for j in range(kw))
    cols = tuple(f"({y},{x})" for y in range(out_h) for x in range(out_w))
    return Im2Col(
        columns, kernel_matrix, b, product, product.reshape(c_out, out_h, out_w), rows, cols
    )


def torch_conv2d(
    x: Any,
    kernels: Any,
    bias: Any = None,
    *,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> np.ndarray:
    """PyTorch's answer in float64, (C, H, W) in → (C_out, H_out, W_out): the lab's oracle."""
    inp = torch.as_tensor(np.asarray(x, dtype=np.float64))
    weight = torch.as_tensor(np.asarray(kernels, dtype=np.float64))
    b = None if bias is None else torch.as_tensor(np.asarray(bias, dtype=np.float64))
    out = F.conv2d(
        inp[None],
        weight,
        b,
        stride=_pair(stride, "stride", 1),
        padding=_pair(padding, "padding", 0),
        dilation=_pair(dilation, "dilation", 1),
        groups=groups,
    )
    return out[0].numpy()


# ---------------------------------------------------------------------------------------------
# Any neuron of a loaded model

NEURON_TYPES = (
    nn.Conv2d,
    nn.Linear,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


@dataclass(frozen=True)
class NeuronArithmetic:
    """One activation recomputed by hand from the layer's captured input, beside the model's.

    Conv: `window` (C_in/groups, kh, kw) of the layer's input, zeros where it hangs over the
    edge (`padding` marks those cells), times `weights`, summed, plus the bias. Linear: the
    flattened input (F,) and one weight row. Pooling: the window (kh, kw) of one channel and its
    maximum or mean; `weights` and `products` are None.
    """

    layer: str
    type: str  # the module's class name
    kind: str  # "conv" | "linear" | "max pool" | "avg pool"
    channel: int
    y: int
    x: int
    input_shape: tuple[int, ...]  # of the layer's input, without the batch axis
    input_channels: tuple[int, ...]  # conv: the input channels read; pooling: (channel,)
    rows: tuple[int, ...]  # input rows / columns of the window (negative or ≥ H in the padding)
    cols: tuple[int, ...]
    window: np.ndarray
    padding: np.ndarray  # bool, like window: True where the window is outside the input
    weights: np.ndarray | None
    products: np.ndarray | None
    bias: float
    computed: float
    model_value: float
    chosen: tuple[int, ...] | None  # max pool: index of the winner in `window`
    count: int  # avg pool: the divisor; conv/linear: the number of products
    source_box: tuple[int, int, int, int] | None  # (top, left, bottom, right) in input pixels

    @property
    def difference(self) -> float:
        return abs(self.computed - self.model_value)

    def matches(self, tolerance: float = 1e-5) -> bool:
        return self.difference <= tolerance * max(1.0, abs(self.model_value))

    @property
    def sum_text(self) -> str:
        """ "Σ products = s; s + bias b = v" (or the pooling rule) with the numbers."""
        if self.products is not None:
            total = float(self.products.sum())
            text = f"sum of {self.count:,} products = {fmt(total)}"
            return text + f"; {fmt(total)} + bias {term(self.bias)} = {fmt(self.computed)}"
        if self.kind == "max pool":
            return f"max of {self.window.size} values = {fmt(self.computed)}"
        total = float(np.where(self.padding, 0.0, self.window).sum())
        return f"{fmt(total)} / {self.count} = {fmt(self.computed)}"


def _neuron_module(model: nn.Module, layer: str) -> nn.Module:
    name = layer.partition("#")[0]
    module = dict(model.named_modules()).get(name)
    if module is None:
        raise LensError(f"the model has no layer {name!r}")
    if not isinstance(module, NEURON_TYPES):
        raise LensError(
            f"{name} is a {type(module).__name__}: the arithmetic is shown for Conv2d, Linear "
            "and pooling layers"
        )
    return module


def neuron_layers(model: nn.Module, flow: probe.ShapeFlow) -> list[probe.LayerRecord]:
    """The calls of conv, linear and pooling layers in execution order (those `neuron_arithmetic`
    can write out)."""
    modules = dict(model.named_modules())
    return [
        r
        for r in flow.leaves
        if isinstance(modules.get(r.name), NEURON_TYPES) and r.output_shape and r.input_shape
    ]


def _conv_padding(module: nn.Conv2d) -> tuple[Pair, Pair]:
    """(top, left) and (bottom, right) zero padding of a conv, 'same' split as PyTorch does."""
    kernel, dilation = module.kernel_size, module.dilation
    if module.padding == "valid":
        return (0, 0), (0, 0)
    if module.padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return (total[0] // 2, total[1] // 2), (total[0] - total[0] // 2, total[1] - total[1] // 2)
    return tuple(module.padding), tuple(module.padding)


def _two(value: int | Sequence[int]) -> Pair:
    """A module's int-or-tuple attribute as (rows, columns)."""
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[-1]))


def _adaptive_range(index: int, size: int, out: int) -> tuple[int, int]:
    return (index * size) // out, -((-(index + 1) * size) // out)


def neuron_arithmetic(
    model: nn.Module,
    x: torch.Tensor,
    layer_name: str,
    channel: int,
    y: int = 0,
    x_pos: int = 0,
    *,
    flow: probe.ShapeFlow | None = None,
) -> NeuronArithmetic:
    """Recompute output (`channel`, `y`, `x_pos`) of a conv, linear or pooling layer for the
    batch-of-one `x` (normalized like the model's inputs) and compare it with the model's.

    The layer's input and output are captured by forward hooks (`probe.activations`); the
    products are summed in float64. `layer_name` may carry "#k" for a module's k-th call.
    `flow` (the model's shape flow for this input size) gives the receptive window on the
    input image; computed when not given.
    """
    module = _neuron_module(model, layer_name)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeError(f"x must be one image shaped (1, C, H, W), got {tuple(x.shape)}")
    inputs = probe.activations(model, x, [layer_name], capture="input")[layer_name][0]
    outputs = probe.activations(model, x, [layer_name])[layer_name][0]
    inp = inputs.detach().cpu().double()
    out = outputs.detach().cpu().double()
    kind_of = {nn.Linear: "linear", nn.MaxPool2d: "max pool", nn.AdaptiveMaxPool2d: "max pool"}
    kind = next((v for k, v in kind_of.items() if isinstance(module, k)), "avg pool")
    kind = "conv" if isinstance(module, nn.Conv2d) else kind
    if not 0 <= channel < out.shape[0]:
        raise LensError(f"{layer_name} has {out.shape[0]} output channels; {channel} is not one")
    if kind == "linear":
        if inp.dim() != 1:
            raise ShapeError(f"{layer_name} gets a {tuple(inp.shape)} input, not a flat vector")
        y = x_pos = 0
        model_value = out[channel].item()
    else:
        if out.dim() != 3:
            raise ShapeError(f"{layer_name} has no spatial output (shape {tuple(out.shape)})")
        if not (0 <= y < out.shape[1] and 0 <= x_pos < out.shape[2]):
            raise LensError(
                f"({y}, {x_pos}) is outside {layer_name}'s {out.shape[1]}×{out.shape[2]} output"
            )
        model_value = out[channel, y, x_pos].item()

    weights = products = None
    chosen, bias = None, 0.0
    if kind == "linear":
        w = module.weight.detach().cpu().double()[channel]
        bias = module.bias[channel].item() if module.bias is not None else 0.0
        window, weights = inp.numpy(), w.numpy()
        products = window * weights
        padding = np.zeros(window.shape, dtype=bool)
        rows = cols = ()
        channels = tuple(range(inp.shape[0]))
        computed = float(products.sum()) + bias
        count = products.size
    elif kind == "conv":
        if module.padding_mode != "zeros":
            raise LensError(
                f"{layer_name} pads with {module.padding_mode!r}: only zero padding is written out"
            )
        (pt, pl), (pb, pr) = _conv_padding(module)
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        padded = F.pad(inp, (pl, pr, pt, pb))  # (C_in, Hp, Wp)
        mask = F.pad(torch.zeros(inp.shape[1:], dtype=torch.bool), (pl, pr, pt, pb), value=True)
        per_group_in = module.in_channels // module.groups
        group = channel // (module.out_channels // module.groups)
        channels = tuple(range(group * per_group_in, (group + 1) * per_group_in))
        prow = [y * sh + i * dh for i in range(kh)]
        pcol = [x_pos * sw + j * dw for j in range(kw)]
        window = padded[list(channels)][:, prow][:, :, pcol].numpy()  # (C_in/g, kh, kw)
        padding = np.broadcast_to(mask[prow][:, pcol].numpy(), window.shape).copy()
        weights = module.weight.detach().cpu().double()[channel].numpy()
        bias = module.bias[channel].item() if module.bias is not None else 0.0
        products = window * weights
        computed = float(products.sum()) + bias
        rows, cols = tuple(r - pt for r in prow), tuple(c - pl for c in pcol)
        count = products.size
    else:
        plane = inp[channel]  # (H, W): pooling works channel by channel
        channels = (channel,)
        H, W = plane.shape
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            (r0, r1) = _adaptive_range(y, H, out.shape[1])
            (c0, c1) = _adaptive_range(x_pos, W, out.shape[2])
            rows, cols = tuple(range(r0, r1)), tuple(range(c0, c1))
            divisor = len(rows) * len(cols)
        else:
            (kh, kw) = _two(module.kernel_size)
            (sh, sw) = _two(module.stride or module.kernel_size)
            (ph, pw) = _two(module.padding)
            (dh, dw) = _two(getattr(module, "dilation", 1))
            rows = tuple(y * sh - ph + i * dh for i in range(kh))
            cols = tuple(x_pos * sw - pw + j * dw for j in range(kw))
            # PyTorch's divisor: the window clipped to the padded input (ceil mode can overhang
            # it), or only real cells without count_include_pad, unless overridden.
            h_end = min(rows[0] + kh, H + ph)
            w_end = min(cols[0] + kw, W + pw)
            divisor = (h_end - rows[0]) * (w_end - cols[0])
            if not getattr(module, "count_include_pad", True):
                inside_r = sum(0 <= r < H for r in rows)
                inside_c = sum(0 <= c < W for c in cols)
                divisor = inside_r * inside_c
            divisor = getattr(module, "divisor_override", None) or divisor
        inside = np.array([[0 <= r < H and 0 <= c < W for c in cols] for r in rows], dtype=bool)
        fill = -math.inf if kind == "max pool" else 0.0
        window = np.full(inside.shape, fill)
        r_in = [r for r in rows if 0 <= r < H]
        c_in = [c for c in cols if 0 <= c < W]
        window[np.ix_(inside.any(axis=1), inside.any(axis=0))] = plane[r_in][:, c_in].numpy()
        padding = ~inside
        if kind == "max pool":
            flat = int(np.argmax(window))
            chosen = np.unravel_index(flat, window.shape)
            chosen = (int(chosen[0]), int(chosen[1]))
            computed, count = float(window.max()), 1
        else:
            computed, count = float(window.sum()) / divisor, int(divisor)

    if kind == "linear":
        box = (0, 0, x.shape[2] - 1, x.shape[3] - 1)  # a fully connected unit sees everything
    else:
        flow = flow if flow is not None else probe.shape_flow(model, tuple(x.shape[1:]))
        name, _, call = layer_name.partition("#")
        box = probe.receptive_window(flow, name, y, x_pos, call_index=int(call or 0))
    return NeuronArithmetic(
        layer=layer_name,
        type=type(module).__name__,
        kind=kind,
        channel=channel,
        y=y,
        x=x_pos,
        input_shape=tuple(inp.shape),
        input_channels=channels,
        rows=rows,
        cols=cols,
        window=window,
        padding=padding,
        weights=weights,
        products=products,
        bias=float(bias),
        computed=computed,
        model_value=model_value,
        chosen=chosen,
        count=count,
        source_box=box,
    )


# ---------------------------------------------------------------------------------------------
# Classic kernels and the model's first layer


def classic_responses(image: Any, kernels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each kernel cross-correlated with the (H, W) image by `F.conv2d` with zero padding
    k // 2 (1 for 3×3: the response has the image's size), plus "<Family> magnitude" =
    √(x² + y²) for every family that has both "<Family> x" and "<Family> y"."""
    img = torch.as_tensor(np.asarray(image, dtype=np.float64))
    if img.dim() != 2:
        raise ShapeError(f"the image must be (H, W), got {tuple(img.shape)}")
    responses: dict[str, np.ndarray] = {}
    for name, kernel in kernels.items():
        k = torch.as_tensor(np.asarray(kernel, dtype=np.float64))
        pad = (k.shape[0] // 2, k.shape[1] // 2)
        responses[name] = F.conv2d(img[None, None], k[None, None], padding=pad)[0, 0].numpy()
    for name in list(responses):
        if name.endswith(" x"):
            family = name[:-2]
            if f"{family} y" in responses:
                gx, gy = responses[name], responses[f"{family} y"]
                responses[f"{family} magnitude"] = np.sqrt(gx**2 + gy**2)
    return responses


@dataclass(frozen=True)
class FirstLayer:
    """The model's first conv: its filters and their responses to one image."""

    name: str
    weights: np.ndarray  # (C_out, C_in, kh, kw)
    responses: np.ndarray  # (C_out, H_out, W_out): the conv's output, bias included


def first_layer_responses(model: nn.Module, x: torch.Tensor) -> FirstLayer:
    """The first Conv2d's weights and what it outputs for the batch-of-one `x`."""
    convs = probe.conv_layers(model)
    if not convs:
        raise LensError("the model has no Conv2d layer")
    name, conv = convs[0]
    output = probe.activations(model, x, [name])[name][0]
    weights = conv.weight.detach().cpu().double().numpy()
    return FirstLayer(name, weights, output.detach().cpu().double().numpy())
