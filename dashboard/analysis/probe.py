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

Here: the shape flow (every layer's shapes, parameters, multiply-adds and receptive field, and
where an input breaks the model) and activations captured by name. The hooks, the lock and the
plain reads of a model are in `hooks`, the window arithmetic and receptive fields in
`receptive_fields`; this module re-exports their names, so callers use `probe.X` for all.

Receptive fields are propagated through the real forward pass rather than a symbolic trace: a
`TorchFunctionMode` sees every torch operation the model performs (module calls, functional
pooling, the residual `out += identity`, `torch.cat`, `flatten`) and carries the receptive-field
geometry from each operation's inputs to its outputs. That needs no fallback for models that
`torch.fx` cannot trace, and residual branches are merged where they actually meet.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dashboard.analysis.hooks import _LOCK as _LOCK
from dashboard.analysis.hooks import ChannelStats as ChannelStats
from dashboard.analysis.hooks import _first_tensor as _first_tensor
from dashboard.analysis.hooks import _hooks as _hooks
from dashboard.analysis.hooks import _key as _key
from dashboard.analysis.hooks import _model_device, _probing
from dashboard.analysis.hooks import _output_tensor as _output_tensor
from dashboard.analysis.hooks import _parse_key as _parse_key
from dashboard.analysis.hooks import channel_stats as channel_stats
from dashboard.analysis.hooks import conv_layers as conv_layers
from dashboard.analysis.hooks import filter_weights as filter_weights
from dashboard.analysis.receptive_fields import (
    Pair,
    _formula,
    _Geo,
    _GeometryTracker,
    _module_window,
    _mult_adds,
)
from dashboard.analysis.receptive_fields import RFGeometry as RFGeometry
from dashboard.base.errors import LensError, ShapeError, UnknownNameError

# Above this many values per image the shape flow is traced on meta tensors (shapes without
# data: nothing the size of the input is allocated); below it a real zero image is cheaper.
META_ABOVE_VALUES = 1 << 20
# A model that cannot run on meta tensors is traced for real only up to this input size.
MAX_REAL_TRACE_VALUES = 1 << 24
# Beyond this an input's shapes overflow the 64-bit sizes tensors are measured in.
MAX_TRACE_VALUES = 1 << 40
# What one real forward pass may need for its layers' outputs; more is refused in one line.
MAX_FORWARD_BYTES = 2 * 1024**3


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


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
