"""Any neuron of a loaded model written out: its receptive window in the layer's input, the
weights, the products and the sum, beside the value the model computed; and classic edge
kernels (Prewitt, Sobel) on an image beside the model's first layer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import probe
from dashboard.analysis.lab.conv import (
    Pair,
    fmt,
    term,
)
from dashboard.base.errors import LensError, ShapeError

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
