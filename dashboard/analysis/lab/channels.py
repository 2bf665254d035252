"""Convolution over several channels (per-channel partial results and their sum), 1×1
convolution as channel mixing, the cost and parameters of a ResNet bottleneck, and im2col: the
unrolled input times the kernel matrix, reshaped back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dashboard.analysis.lab.conv import (
    AxisSize,
    Pair,
    _correlate,
    _empty_message,
    _exact,
    _formula_text,
    _matrix,
    _pad,
    _pair,
    _sizes,
    _thousands,
    multiply_add,
    written_sum,
)
from dashboard.base.errors import LensError


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
