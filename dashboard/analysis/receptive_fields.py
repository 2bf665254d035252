"""Window arithmetic of conv and pooling layers (output sizes, the formulas shown, multiply-adds)
and receptive fields carried through the real forward pass by a `TorchFunctionMode` that sees
every torch operation, so residual branches merge where they really meet."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dashboard.analysis.hooks import _tensors

Pair = tuple[int, int]


@dataclass(frozen=True)
class RFGeometry:
    """Where a layer's output windows sit on the input, per axis (height, width).

    Output position i along an axis sees input pixels ``start + i·jump … start + i·jump + rf − 1``
    (before clipping to the image: `start` is negative where the window reaches into padding).
    """

    rf: Pair
    jump: Pair
    start: Pair

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), inclusive, of output (y, x), clipped to the input."""
        top = self.start[0] + y * self.jump[0]
        left = self.start[1] + x * self.jump[1]
        return (
            max(top, 0),
            max(left, 0),
            min(top + self.rf[0] - 1, height - 1),
            min(left + self.rf[1] - 1, width - 1),
        )


def _pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _units(unit: str, n: int) -> str:
    """'row/column' → 'rows/columns' when n ≠ 1."""
    return unit if n == 1 else "/".join(f"{u}s" for u in unit.split("/"))


@dataclass(frozen=True)
class _Window:
    """Kernel, stride, padding (left and total per axis) and dilation of a sliding window."""

    kernel: Pair
    stride: Pair
    pad_left: Pair
    pad_total: Pair
    dilation: Pair
    ceil_mode: bool = False


def _padding(padding: Any, kernel: Pair, dilation: Pair) -> tuple[Pair, Pair]:
    """Left and total padding per axis; 'same' pads d·(k−1) split with the extra on the right."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        total = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
        return (total[0] // 2, total[1] // 2), total
    left = _pair(padding)
    return left, (2 * left[0], 2 * left[1])


def _module_window(module: nn.Module) -> _Window | None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
        left, total = _padding(module.padding, kernel, dilation)
        return _Window(kernel, _pair(module.stride), left, total, dilation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride) if module.stride else kernel
        dilation = _pair(getattr(module, "dilation", 1))
        left, total = _padding(getattr(module, "padding", 0), kernel, dilation)
        return _Window(kernel, stride, left, total, dilation, bool(module.ceil_mode))
    return None


@dataclass(frozen=True)
class _AxisFormula:
    text: str
    out: int
    remainder_text: str  # "(28 − 3 + 2·0) / 2 = 12 r 1" when real pixels are skipped, else ""
    lost: int


def _axis_formula(n: int, w: _Window, axis: int) -> _AxisFormula:
    k, s, d = w.kernel[axis], w.stride[axis], w.dilation[axis]
    left, total = w.pad_left[axis], w.pad_total[axis]
    pad = f"2·{left}" if total == 2 * left else f"{total}"
    expr = f"{n} − {k} + {pad}" if d == 1 else f"{n} + {pad} − {d}·({k} − 1) − 1"
    span = n + total - d * (k - 1) - 1
    if w.ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + left:  # PyTorch drops a last window that starts in the padding
            out -= 1
        text = f"⌈({expr}) / {s}⌉ + 1 = {out}"
        return _AxisFormula(text, out, "", 0)
    out = span // s + 1
    remainder = span % s
    lost = remainder - (total - left)  # rows of real input (not padding) never reached
    detail = f"({expr}) / {s} = {span // s} r {remainder}" if lost > 0 and out > 0 else ""
    return _AxisFormula(f"⌊({expr}) / {s}⌋ + 1 = {out}", out, detail, max(lost, 0))


def _window_formula(in_hw: Pair, w: _Window) -> tuple[str, str]:
    """Output-size formula with the layer's own numbers, and a warning flag ("" if none)."""
    h, v = _axis_formula(in_hw[0], w, 0), _axis_formula(in_hw[1], w, 1)
    same = h == v  # the texts carry every number, so equal texts mean equal axes
    text = h.text if same else f"H: {h.text}; W: {v.text}"
    if min(h.out, v.out) <= 0:
        return text, "output size ≤ 0"
    axes = [(h, 0, "row/column")] if same else [(h, 0, "row"), (v, 1, "column")]
    flags = []
    for f, a, unit in axes:
        span = w.dilation[a] * (w.kernel[a] - 1) + 1
        if w.stride[a] > span:  # a 1×1 conv with stride 2 reads every other row only
            skipped = w.stride[a] - span
            flags.append(
                f"stride {w.stride[a]} > kernel {span}: {skipped} {_units(unit, skipped)} "
                f"in every {w.stride[a]} never read"
            )
        elif f.lost:
            flags.append(
                f"not exact: {f.remainder_text}, last {f.lost} {_units(unit, f.lost)} ignored"
            )
    return text, "; ".join(flags)


def _formula(
    module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[str, str]:
    window = _module_window(module)
    if window is not None and not isinstance(module, nn.ConvTranspose2d) and len(in_shape) == 3:
        return _window_formula((in_shape[1], in_shape[2]), window)
    if isinstance(module, nn.Linear):
        return f"{module.in_features} → {module.out_features}", ""
    if isinstance(module, nn.Flatten) and len(in_shape) > 1 and len(out_shape) == 1:
        return "·".join(str(n) for n in in_shape) + f" = {out_shape[0]}", ""
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and len(in_shape) == 3:
        return f"adaptive: {in_shape[1]}×{in_shape[2]} → {out_shape[1]}×{out_shape[2]}", ""
    return "", ""


def _mult_adds(module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for one image, bias excluded."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return math.prod(in_shape) * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return math.prod(out_shape) * per_output
    if isinstance(module, nn.Linear):
        return math.prod(out_shape) * module.in_features
    return 0


# Geometry of a tensor: None = depends on the whole input (or on something not tracked).
_Geo = RFGeometry | None


def _through_window(geo: RFGeometry, w: _Window) -> RFGeometry:
    """rf_out = rf_in + (k − 1)·d·jump_in, jump_out = jump_in·s, start moves back by the padding."""
    return RFGeometry(
        rf=tuple(geo.rf[a] + (w.kernel[a] - 1) * w.dilation[a] * geo.jump[a] for a in (0, 1)),
        jump=tuple(geo.jump[a] * w.stride[a] for a in (0, 1)),
        start=tuple(geo.start[a] - w.pad_left[a] * geo.jump[a] for a in (0, 1)),
    )


def _union(geos: Sequence[RFGeometry]) -> RFGeometry:
    """Tensors combined elementwise (residual add, cat): the union of their windows."""
    start = tuple(min(g.start[a] for g in geos) for a in (0, 1))
    end = tuple(max(g.start[a] + g.rf[a] - 1 for g in geos) for a in (0, 1))
    return RFGeometry(
        rf=tuple(end[a] - start[a] + 1 for a in (0, 1)),
        jump=tuple(max(g.jump[a] for g in geos) for a in (0, 1)),
        start=start,
    )


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _conv_rule(args: tuple, kwargs: dict) -> _Window:
    kernel = _pair(tuple(_arg(args, kwargs, 1, "weight").shape[2:]))
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    left, total = _padding(_arg(args, kwargs, 4, "padding", 0), kernel, dilation)
    return _Window(kernel, _pair(_arg(args, kwargs, 3, "stride", 1)), left, total, dilation)


def _pool_rule(
    kernel_at: int, padding_at: int | None, dilation_at: int | None
) -> Callable[[tuple, dict], _Window]:
    """Reads a functional pooling call; the positions are those of its F.* signature."""

    def rule(args: tuple, kwargs: dict) -> _Window:
        kernel = _pair(_arg(args, kwargs, kernel_at, "kernel_size"))
        stride = _arg(args, kwargs, kernel_at + 1, "stride")
        padding = _arg(args, kwargs, padding_at, "padding", 0) if padding_at else 0
        dilation = _pair(_arg(args, kwargs, dilation_at, "dilation", 1) if dilation_at else 1)
        left, total = _padding(padding, kernel, dilation)
        return _Window(kernel, _pair(stride) if stride else kernel, left, total, dilation)

    return rule


# F.* functions seen by the mode, and where their window arguments sit.
_WINDOW_RULES: dict[str, Callable[[tuple, dict], _Window]] = {
    "conv2d": _conv_rule,
    "max_pool2d": _pool_rule(1, 3, 4),
    "max_pool2d_with_indices": _pool_rule(1, 3, 4),
    "avg_pool2d": _pool_rule(1, 3, None),
    "lp_pool2d": _pool_rule(2, None, None),
}


_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}


def _adaptive(geo: RFGeometry, in_hw: Pair, out_hw: Pair) -> _Geo:
    """Adaptive pooling is a plain pooling when the sizes divide; to 1×1 it sees everything."""
    if in_hw == out_hw:
        return geo
    if all(i % o == 0 for i, o in zip(in_hw, out_hw, strict=True)) and min(out_hw) > 1:
        k = (in_hw[0] // out_hw[0], in_hw[1] // out_hw[1])
        return _through_window(geo, _Window(k, k, (0, 0), (0, 0), (1, 1)))
    return None


def _pad(geo: RFGeometry, pad: Sequence[int]) -> RFGeometry:
    left = pad[0] if len(pad) >= 2 else 0
    top = pad[2] if len(pad) >= 4 else 0
    start = (geo.start[0] - top * geo.jump[0], geo.start[1] - left * geo.jump[1])
    return RFGeometry(geo.rf, geo.jump, start)


class _GeometryTracker(TorchFunctionMode):
    """Carries receptive-field geometry from every torch operation's inputs to its outputs.

    Keys are tensor ids; the tensors are kept alive while tracking so an id is never reused.
    Operations on tensors that do not come from the input (weights, constants) are ignored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.geometry: dict[int, _Geo] = {}
        self._alive: list[torch.Tensor] = []

    def start(self, x: torch.Tensor) -> None:
        self._set(x, RFGeometry(rf=(1, 1), jump=(1, 1), start=(0, 0)))

    def lookup(self, tensor: torch.Tensor | None) -> _Geo:
        return None if tensor is None else self.geometry.get(id(tensor))

    def _set(self, tensor: torch.Tensor, geo: _Geo) -> None:
        self.geometry[id(tensor)] = geo
        self._alive.append(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracked = [t for t in _tensors((args, kwargs)) if id(t) in self.geometry]
        if tracked:
            outputs = list(_tensors(out))
            if outputs:
                geo = self._propagate(getattr(func, "__name__", ""), args, kwargs, tracked, outputs)
                for tensor in outputs:
                    self._set(tensor, geo)
        return out

    def _propagate(
        self,
        name: str,
        args: tuple,
        kwargs: dict,
        tracked: list[torch.Tensor],
        outputs: list[torch.Tensor],
    ) -> _Geo:
        result = outputs[0]
        if result.dim() < 3:
            return None  # flattened, or reduced over the spatial axes: the whole input
        geos = [self.geometry[id(t)] for t in tracked]
        primary = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if primary is not None and id(primary) in self.geometry and primary.dim() == 4:
            geo = self.geometry[id(primary)]
            if geo is None:
                return None
            in_hw, out_hw = tuple(primary.shape[2:]), tuple(result.shape[2:])
            if name in _WINDOW_RULES:
                return _through_window(geo, _WINDOW_RULES[name](args, kwargs))
            if name in _ADAPTIVE:
                return _adaptive(geo, in_hw, out_hw)
            if name == "pad":
                return _pad(geo, _arg(args, kwargs, 1, "pad", ()))
        # Elementwise ops (BN, activations, dropout), merges (add, mul, cat) and reshapes that
        # keep the last two axes (channel shuffle): same grid, else unknown.
        same_grid = all(t.shape[-2:] == result.shape[-2:] for t in tracked)
        if not same_grid or any(g is None for g in geos):
            return None
        return _union(geos)
