"""Look inside a model: shape flow, activations, filter weights, receptive fields.

Everything here runs a real forward pass with hooks, in the habits of captum's layer_activation:

- hooks are registered inside `try` and removed in `finally`;
- the model runs in eval mode (BatchNorm uses its running statistics) under `torch.no_grad()`,
  and every module's own train/eval flag is restored afterwards;
- captured tensors are `detach().clone()`d, because an in-place ReLU after a conv would
  otherwise overwrite the stored conv output;
- one module-level lock guards hook registration and the forward pass, because one cached model
  serves several Streamlit sessions at once;
- a hook that captured nothing is an error, not an empty result.

Receptive fields are propagated through the real forward pass rather than a symbolic trace: a
`TorchFunctionMode` sees every torch operation the model performs (module calls, functional
pooling, the residual `out += identity`, `torch.cat`, `flatten`) and carries the receptive-field
geometry from each operation's inputs to its outputs. That needs no fallback for models that
`torch.fx` cannot trace, and residual branches are merged where they actually meet.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dashboard.base.errors import LensError, ShapeError, UnknownNameError

# One model object is shared by every Streamlit session; hooks and the eval-mode switch must not
# interleave. Re-entrant so that a probe may call another probe.
_LOCK = threading.RLock()

# Above this many values per image the shape flow is traced on meta tensors (shapes without
# data: nothing the size of the input is allocated); below it a real zero image is cheaper.
META_ABOVE_VALUES = 1 << 20
# A model that cannot run on meta tensors is traced for real only up to this input size.
MAX_REAL_TRACE_VALUES = 1 << 24
# Beyond this an input's shapes overflow the 64-bit sizes tensors are measured in.
MAX_TRACE_VALUES = 1 << 40
# What one real forward pass may need for its layers' outputs; more is refused in one line.
MAX_FORWARD_BYTES = 2 * 1024**3

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


@dataclass(frozen=True)
class LayerRecord:
    """One call of one module during the probing forward pass.

    `mult_adds` counts multiply-accumulates for one image, bias excluded:
    conv = H_out·W_out·C_out·(C_in/groups)·kh·kw, transposed conv the same with input and output
    swapped, linear = out_features·in_features per output row; every other layer 0; containers
    sum what ran inside them. `receptive_field` is the side length of the input region (padding
    included, so it can exceed the image) that can affect one output value, the larger of height
    and width when they differ; None means the whole input (after flatten, linear, global
    pooling, or an operation whose geometry is not tracked, where the whole input is the safe
    answer). `effective_stride` is the input-pixel distance between adjacent outputs (None
    likewise); `geometry` has both per axis, with the window offsets `receptive_window` needs.
    Parameters: a leaf counts each parameter the first time any leaf uses it (so a reused module
    or a tied weight counts once); a container counts its whole subtree on its first call.
    """

    name: str
    type: str
    depth: int
    is_leaf: bool
    call_index: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params_trainable: int
    params_total: int
    mult_adds: int
    kernel: Pair | None
    stride: Pair | None
    padding: Pair | None
    dilation: Pair | None
    receptive_field: int | None
    effective_stride: int | None
    formula: str
    flag: str
    geometry: RFGeometry | None = None


@dataclass(frozen=True)
class BreakReport:
    """The first layer an input cannot go through, and why, in one line."""

    layer: str
    type: str
    reason: str


@dataclass(frozen=True)
class ShapeFlow:
    """What one image of `input_shape` does on its way through a model.

    `records` are in execution order, pre-order: a container (Sequential, BasicBlock) comes
    before its children; the model itself is not a record. A module called twice (torchvision's
    ResNet reuses `self.relu`) has one record per call ("name#1" in `activations`). Totals cover
    `model.parameters()` (each shared parameter once), which equals the sum over leaf records
    whenever every parameter lives in a leaf that runs; `mult_adds` sums the leaves.
    When the input cannot go through, `broken` says where and `records` hold the calls that
    finished before the failure.
    """

    input_shape: tuple[int, ...]
    records: list[LayerRecord]
    output_shape: tuple[int, ...] | None
    params_total: int
    params_trainable: int
    mult_adds: int
    broken: BreakReport | None

    @property
    def leaves(self) -> list[LayerRecord]:
        return [r for r in self.records if r.is_leaf]

    def find(self, name: str, call_index: int = 0) -> LayerRecord:
        for record in self.records:
            if record.name == name and record.call_index == call_index:
                return record
        names = ", ".join(dict.fromkeys(r.name for r in self.records))
        raise UnknownNameError(f"no layer {name!r} (call {call_index}) in the shape flow: {names}")


@dataclass(frozen=True)
class ChannelStats:
    """Summary of one channel over a batch; `dead` = ≤ 0 (zero after a ReLU) everywhere."""

    channel: int
    mean: float
    max: float
    zero_fraction: float  # share of values ≤ 0, i.e. that a ReLU turns to zero
    dead: bool


# ---------------------------------------------------------------------------------------------
# Shared plumbing


@contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Hold the lock, run in eval mode under no_grad, restore every module's own mode."""
    with _LOCK:
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, training in modes:
                module.training = training


@contextmanager
def _hooks() -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Tensors inside nested tuples, lists and dicts, in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _first_tensor(*objs: Any) -> torch.Tensor | None:
    for obj in objs:
        for tensor in _tensors(obj):
            return tensor
    return None


def _pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _units(unit: str, n: int) -> str:
    """'row/column' → 'rows/columns' when n ≠ 1."""
    return unit if n == 1 else "/".join(f"{u}s" for u in unit.split("/"))


# ---------------------------------------------------------------------------------------------
# Window arithmetic of conv and pooling layers


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


# ---------------------------------------------------------------------------------------------
# Receptive-field propagation through the real forward pass

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


# ---------------------------------------------------------------------------------------------
# Shape flow


@dataclass
class _Call:
    """A module call while it is being recorded (mutable; frozen into a LayerRecord at the end)."""

    name: str
    module: nn.Module
    call_index: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    mult_adds: int = 0
    geometry: _Geo = None
    done: bool = False
    children_done: list[str] = field(default_factory=list)


def _param_counts(params: Iterable[nn.Parameter]) -> tuple[int, int]:
    """(trainable, total) numbers of elements; frozen parameters count in the total only."""
    params = list(params)
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _freeze(call: _Call, seen: set[int]) -> LayerRecord:
    """The record of a finished call; `seen` holds the parameters already counted by a leaf."""
    module = call.module
    is_leaf = _is_leaf(module)
    if is_leaf:  # a reused module, or a weight tied to an earlier layer, counts once
        own = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in own)
        trainable, total = _param_counts(own)
    else:  # containers carry their subtree's sum, for collapsing, on their first call
        trainable, total = _param_counts(module.parameters()) if call.call_index == 0 else (0, 0)
    window = _module_window(module)
    formula, flag = _formula(module, call.input_shape, call.output_shape)
    geo = call.geometry
    return LayerRecord(
        name=call.name,
        type=type(module).__name__,
        depth=call.name.count("."),
        is_leaf=is_leaf,
        call_index=call.call_index,
        input_shape=call.input_shape,
        output_shape=call.output_shape,
        params_trainable=trainable,
        params_total=total,
        mult_adds=call.mult_adds,
        kernel=window.kernel if window else None,
        stride=window.stride if window else None,
        padding=window.pad_left if window else None,
        dilation=window.dilation if window else None,
        receptive_field=max(geo.rf) if geo else None,
        effective_stride=max(geo.jump) if geo else None,
        formula=formula,
        flag=flag,
        geometry=geo,
    )


def _break_reason(call: _Call, error: Exception) -> str:
    """One line: why this module cannot take its input."""
    module, shape = call.module, call.input_shape
    short = _short(call.name) or type(module).__name__  # the model itself may be one layer
    if isinstance(module, nn.Linear) and shape and shape[-1] != module.in_features:
        unflattened = (
            f" (its input {'×'.join(map(str, shape))} is not flattened)" if len(shape) > 1 else ""
        )
        return f"{short} expects {module.in_features} features, gets {shape[-1]}{unflattened}"
    if (
        isinstance(module, nn.modules.conv._ConvNd)
        and len(shape) == len(module.kernel_size) + 1
        and shape[0] != module.in_channels
    ):
        return f"{short} expects {_plural(module.in_channels, 'input channel')}, gets {shape[0]}"
    if (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and shape
        and shape[0] != module.num_features
    ):
        return f"{short} expects {_plural(module.num_features, 'channel')}, gets {shape[0]}"
    window = _module_window(module)
    if window is not None and len(shape) == 3:
        padded = tuple(shape[1 + a] + window.pad_total[a] for a in (0, 1))
        span = tuple(window.dilation[a] * (window.kernel[a] - 1) + 1 for a in (0, 1))
        if padded[0] < span[0] or padded[1] < span[1]:
            kernel = f"{window.kernel[0]}×{window.kernel[1]}"
            dilated = f" (dilated to {span[0]}×{span[1]})" if span != window.kernel else ""
            return (
                f"{short}: padded input {padded[0]}×{padded[1]} is smaller than the "
                f"{kernel} kernel{dilated}"
            )
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if call.children_done:  # the failure is in the container's own code, after its last child
        return f"{first_line} (after {call.children_done[-1]})"
    return first_line


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _meta_copy(model: nn.Module) -> nn.Module:
    """`model` with meta tensors for its parameters and buffers: the same modules, names, shapes,
    dtypes and requires_grad flags, no data. The shared model itself is never touched (swapping
    its parameters would break another session's forward pass), and shared weights stay shared.
    Copied under the probes' lock, so that no other probe's hooks are on it to be copied."""
    memo: dict[int, Any] = {}
    with _LOCK:
        for tensor in (*model.parameters(), *model.buffers()):
            meta = torch.empty_like(tensor, device="meta")
            if isinstance(tensor, nn.Parameter):
                meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = meta
        return copy.deepcopy(model, memo)


def _is_meta(device: str | torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "meta"


def _unsupported_on_meta(error: Exception) -> bool:
    """An operation with no meta implementation (data-dependent code), not a shape error."""
    return isinstance(error, NotImplementedError) or "meta" in str(error).lower()


def _shape_words(shape: tuple[int, ...]) -> str:
    return "×".join(f"{n:,}" for n in shape)


def shape_flow(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str | torch.device | None = None,
) -> ShapeFlow:
    """Record every module call of one image of `input_shape` (no batch dim, e.g. (1, 28, 28)).

    Shapes come from a forward pass of a batch of one zero image on `device` (default: where the
    model's parameters are, else the CPU). An input of more than META_ABOVE_VALUES values, or
    `device="meta"`, is traced on meta tensors instead, through a copy of the model without
    data: the same records, with nothing allocated (a 20,000² image takes milliseconds). A model
    that cannot run on meta tensors is traced for real up to MAX_REAL_TRACE_VALUES values, and
    beyond that refused in `broken`. An input the model cannot take is reported in `broken` (the
    innermost module entered and not left when the forward raised), never raised.
    """
    input_shape = tuple(int(n) for n in input_shape)
    params_trainable, params_total = _param_counts(model.parameters())

    def refused(reason: str) -> ShapeFlow:
        broken = BreakReport("", type(model).__name__, reason)
        return ShapeFlow(input_shape, [], None, params_total, params_trainable, 0, broken)

    if not input_shape or min(input_shape) <= 0:
        return refused(f"input shape must be positive sizes such as C,H,W, got {input_shape}")
    values = math.prod(input_shape)
    if values > MAX_TRACE_VALUES:
        return refused(
            f"an input of {_shape_words(input_shape)} is {values:,} values per image; shapes "
            f"are worked out for up to {MAX_TRACE_VALUES:,}"
        )
    if device is None and values > META_ABOVE_VALUES:
        device = "meta"
    on_meta = _is_meta(_model_device(model))
    if not _is_meta(device) and not on_meta:
        return _traced_flow(model, input_shape, device)
    try:
        return _traced_flow(model if on_meta else _meta_copy(model), input_shape, "meta")
    except Exception as error:  # not copyable, or code that needs data: trace it for real
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if values <= MAX_REAL_TRACE_VALUES and not on_meta:
        return _traced_flow(model, input_shape, None)
    return refused(
        f"{type(model).__name__} cannot be traced on meta tensors ({reason}), and an input of "
        f"{_shape_words(input_shape)} is too large to run for real: at most "
        f"{MAX_REAL_TRACE_VALUES:,} values per image"
    )


def _traced_flow(
    model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device | None
) -> ShapeFlow:
    """shape_flow's forward pass with hooks. On meta tensors a failure that is not about shapes
    (an operation meta tensors cannot do) is raised, for shape_flow to trace another way."""
    params_trainable, params_total = _param_counts(model.parameters())

    names = {id(module): name for name, module in model.named_modules()}
    calls: list[_Call] = []
    stack: list[_Call] = []
    counts: dict[int, int] = {}
    tracker = _GeometryTracker()
    tracking = len(input_shape) == 3

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tensor = _first_tensor(args, kwargs)
        call_index = counts.get(id(module), 0)
        counts[id(module)] = call_index + 1
        shape = tuple(tensor.shape[1:]) if tensor is not None else ()
        call = _Call(names[id(module)], module, call_index, shape)
        calls.append(call)
        stack.append(call)

    def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        while stack:  # a module that raised and was caught inside its parent leaves a stale entry
            call = stack.pop()
            if call.module is module:
                break
        tensor = _first_tensor(output)
        call.output_shape = tuple(tensor.shape[1:]) if tensor is not None else ()
        call.geometry = tracker.lookup(tensor)
        call.done = True
        if _is_leaf(module):
            call.mult_adds = _mult_adds(module, call.input_shape, call.output_shape)
            for parent in stack:
                parent.mult_adds += call.mult_adds
        if stack:
            stack[-1].children_done.append(call.name)

    device = device if device is not None else _model_device(model)
    x = torch.zeros((1, *input_shape), device=device, dtype=_model_dtype(model))
    output: Any = None
    broken: BreakReport | None = None
    with _probing(model), _hooks() as handles:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
            handles.append(module.register_forward_hook(leave, with_kwargs=True))
        try:
            if tracking:
                with tracker:
                    tracker.start(x)
                    output = model(x)
            else:
                output = model(x)
        except Exception as error:  # any failure of the forward is a fact about this input
            culprit = stack[-1] if stack else _Call("", model, 0, input_shape)
            if _is_meta(x.device) and _unsupported_on_meta(error):
                raise
            reason = _break_reason(culprit, error)
            broken = BreakReport(culprit.name, type(culprit.module).__name__, reason)

    seen: set[int] = set()
    records = [_freeze(c, seen) for c in calls if c.done and c.module is not model]
    out_tensor = _first_tensor(output)
    return ShapeFlow(
        input_shape=input_shape,
        records=records,
        output_shape=tuple(out_tensor.shape[1:])
        if broken is None and out_tensor is not None
        else None,
        params_total=params_total,
        params_trainable=params_trainable,
        mult_adds=sum(r.mult_adds for r in records if r.is_leaf),
        broken=broken,
    )


def forward_bytes(flow: ShapeFlow, element_size: int = 4) -> int:
    """Memory one image's real forward pass needs for its input and every leaf layer's output
    (an upper bound: a plain forward frees most outputs on the way; hooks keep them)."""
    values = math.prod(flow.input_shape) + sum(math.prod(r.output_shape) for r in flow.leaves)
    return values * element_size


def size_text(size: int) -> str:
    return f"{size / 1024**3:,.1f} GB" if size >= 1024**3 else f"{size / 1024**2:,.1f} MB"


def check_forward_memory(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> None:
    """Refuse, in one line, a real forward pass of `batch` images of `input_shape` whose layer
    outputs would need more than MAX_FORWARD_BYTES (worked out on meta tensors: nothing is
    allocated). Inputs of up to META_ABOVE_VALUES values pass without a trace."""
    if math.prod(input_shape) <= META_ABOVE_VALUES:
        return
    flow = shape_flow(model, input_shape, device="meta")
    needed = forward_bytes(flow) * batch
    if needed > MAX_FORWARD_BYTES:
        images = f"{batch} images" if batch != 1 else "an image"
        raise ShapeError(
            f"running {type(model).__name__} on {images} of {_shape_words(input_shape)} would "
            f"need about {size_text(needed)} for its layers' outputs; the limit is "
            f"{size_text(MAX_FORWARD_BYTES)}"
        )


def check_input(model: nn.Module, input_shape: tuple[int, ...]) -> BreakReport | None:
    """None if one image of `input_shape` goes through, else the first layer that breaks."""
    return shape_flow(model, input_shape).broken


def receptive_window(
    flow: ShapeFlow, layer: str, y: int, x: int, *, call_index: int = 0
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of the input pixels output (y, x) of `layer` sees.

    Clipped to the image. Layers whose output depends on the whole input get the whole image.
    """
    record = flow.find(layer, call_index)
    if len(flow.input_shape) != 3 or len(record.output_shape) != 3:
        raise ShapeError(f"{layer} has no spatial output (shape {record.output_shape})")
    out_h, out_w = record.output_shape[1:]
    if not (0 <= y < out_h and 0 <= x < out_w):
        raise ShapeError(f"({y}, {x}) is outside {layer}'s {out_h}×{out_w} output")
    height, width = flow.input_shape[1:]
    if record.geometry is None:
        return (0, 0, height - 1, width - 1)
    return record.geometry.box(y, x, height, width)


# ---------------------------------------------------------------------------------------------
# Activations


def _parse_key(key: str) -> tuple[str, int]:
    """'layer1.0.relu#1' → ('layer1.0.relu', 1): the second call of a reused module."""
    name, sep, index = key.partition("#")
    if sep and index.isdigit():
        return name, int(index)
    return key, 0


def _key(name: str, call_index: int) -> str:
    return name if call_index == 0 else f"{name}#{call_index}"


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def _capture(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None, capture: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if capture not in ("output", "input"):
        raise LensError(f"capture must be 'output' or 'input', got {capture!r}")
    modules = dict(model.named_modules())
    every_call = layers is None
    if layers is None:
        wanted = [name for name, m in modules.items() if _is_leaf(m)]
        keys: list[str] = []
    else:
        keys = list(dict.fromkeys(_key(*_parse_key(k)) for k in layers))  # "relu#0" is "relu"
        missing = [k for k in keys if _parse_key(k)[0] not in modules]
        if missing:
            known = ", ".join(n for n in modules if n)
            raise UnknownNameError(f"no layer named {', '.join(missing)}; layers: {known}")
        wanted = list(dict.fromkeys(_parse_key(k)[0] for k in keys))

    captured: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, *rest: Any) -> None:
            index = counts.get(name, 0)
            counts[name] = index + 1
            key = _key(name, index)
            if every_call or key in keys:
                seen = rest[-1] if capture == "output" else (args, rest[0])
                tensor = _first_tensor(seen)
                if tensor is not None:
                    captured[key] = tensor.detach().clone()

        return hook

    if x.dim() >= 2:
        check_forward_memory(model, tuple(x.shape[1:]), x.shape[0])
    device = _model_device(model)
    x = x.to(device) if device is not None else x
    with _probing(model), _hooks() as handles:
        for name in wanted:
            if capture == "output":
                handle = modules[name].register_forward_hook(hook_for(name), with_kwargs=True)
            else:
                handle = modules[name].register_forward_pre_hook(hook_for(name), with_kwargs=True)
            handles.append(handle)
        output = model(x)

    if every_call:
        return _output_tensor(output), captured
    empty = [k for k in keys if k not in captured]
    if empty:
        raise LensError(
            f"captured nothing for {', '.join(empty)}: the forward pass did not call "
            f"{'it' if len(empty) == 1 else 'them'} with a tensor {capture}"
        )
    return _output_tensor(output), {k: captured[k] for k in keys}


def _output_tensor(output: Any) -> torch.Tensor:
    tensor = _first_tensor(output)
    if tensor is None:
        raise LensError(f"the model returned no tensor ({type(output).__name__})")
    return tensor.detach()


def activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    capture: str = "output",
) -> dict[str, torch.Tensor]:
    """What the named modules output (or receive, capture="input") for the batch `x`.

    `layers` None captures every call of every leaf module; otherwise qualified names, with
    "name#k" for the k-th repeated call of a reused module (the plain name is the first call).
    Values are detached clones; a tuple output gives its first tensor. Raises UnknownNameError
    for a name the model does not have and LensError for a layer that captured nothing.
    """
    return _capture(model, x, layers, capture)[1]


def forward_with_activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's output (detached) and the layers' outputs, from one forward pass."""
    return _capture(model, x, layers, "output")


# ---------------------------------------------------------------------------------------------
# Weights and channel statistics


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d in definition order, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filter_weights(model: nn.Module, layer_name: str) -> torch.Tensor:
    """Weights of a Conv2d as a detached CPU copy: (C_out, C_in/groups, kh, kw)."""
    module = dict(model.named_modules()).get(layer_name)
    if not isinstance(module, nn.Conv2d):
        convs = ", ".join(name for name, _ in conv_layers(model)) or "none"
        what = "is not a Conv2d" if module is not None else "does not exist"
        raise UnknownNameError(f"layer {layer_name!r} {what}; conv layers: {convs}")
    return module.weight.detach().cpu().clone()


def channel_stats(act: torch.Tensor) -> list[ChannelStats]:
    """Per-channel mean, max and share of values ≤ 0 over a batch, (B, C, H, W) or (B, C)."""
    if act.dim() not in (2, 4) or act.shape[0] == 0:
        raise ShapeError(
            f"channel_stats needs a non-empty (B, C, H, W) or (B, C), got {tuple(act.shape)}"
        )
    values = (
        act.detach().to("cpu", torch.float64).transpose(0, 1).reshape(act.shape[1], -1)
    )  # (C, N)
    off = values <= 0
    means, maxima = values.mean(dim=1).tolist(), values.amax(dim=1).tolist()
    zero, dead = off.double().mean(dim=1).tolist(), off.all(dim=1).tolist()
    return [
        ChannelStats(channel=c, mean=means[c], max=maxima[c], zero_fraction=zero[c], dead=dead[c])
        for c in range(act.shape[1])
    ]
