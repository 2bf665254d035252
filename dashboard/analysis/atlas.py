"""A layer's channel atlas: what every channel of one layer responds to across a whole split.

One pass over the split keeps, per image and channel, the spatial maximum of the channel's map
and where it lies (and the spatial mean, and optionally the minimum before the activation
function): N×C numbers per quantity, never the maps, so a 512-channel layer over 10,000 images
holds ~20 MB per quantity. From them: each channel's top-K images, the K most negative ones,
the mean maximum per class, the class-selectivity index, the share of images on which the
channel never fires and a histogram of its maxima. `ChannelAtlas.to_arrays` /
`ChannelAtlas.from_arrays` turn the result into plain `dict[str, np.ndarray]` for the disk cache.

Which values a layer's channels have:

- a convolution: the values that enter the activation function following it — the conv's
  output, or its batch norm's when a batch norm follows directly (conv → BN → ReLU measures the
  BN's output, as the inference copy's folded conv computes it). The following modules are
  found in the model's torch.fx graph: from the conv's node, batch norms that alone read the
  previous node are taken in, and a next node that is an activation (module, `F.relu`-style
  function or `.relu()` method) is the "following activation function". A model fx cannot trace
  falls back to module definition order (the execution order of a Sequential): the leaf after
  the conv if it is a batch norm, then the next leaf if it is an activation. A residual sum or
  a pooling between the conv and its activation ends the walk (values before the sum).
- an activation layer: its output for the maxima; its input (the values before the function)
  for the most negative examples.
- a pooling or any other layer: its output for both.

"Never fires" means the maximum is ≤ 0: for a conv, the following ReLU outputs 0 everywhere.

Class selectivity follows Morcos et al. 2018 ("On the importance of single directions for
generalization", §2.3): (μmax − μ−max) / (μmax + μ−max), μmax the largest class-conditional mean
activity and μ−max the mean of the other classes' means. The paper measures post-ReLU activity
(so the index lies in 0..1) averaged over each feature map; here the activity of an image is
the channel's maximum after a ReLU, max(maximum, 0) — the per-class bars show the same means —
and a channel that never fires has index 0 (as with the ε Leavitt & Morcos 2020 add to the
denominator). Classes with no image in the split take no part.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import metrics, probe
from dashboard.base.errors import LensError, ShapeError, UnknownNameError
from dashboard.base.work import stop_requested
from dashboard.data import Split, iterate_batches

DEFAULT_TOP = 9
HISTOGRAM_BINS = 40

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink,
)  # fmt: skip
_ACTIVATION_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.elu,
    F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
}  # fmt: skip
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
POOLING_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.FractionalMaxPool2d,
)  # fmt: skip


class Tap(NamedTuple):
    """One tensor of a forward pass: a module's output (or input) on its k-th call."""

    module: str
    call_index: int
    side: str  # "output" | "input"

    @property
    def key(self) -> str:
        return probe._key(self.module, self.call_index)


@dataclass(frozen=True)
class LayerPlan:
    """Which tensors a layer's atlas reads (see the module's docstring)."""

    layer: str  # as asked: "features.conv2", "layer1.0.relu#1"
    kind: str  # "conv" | "activation" | "pooling" | "other"
    values: Tap  # the maxima, means and top examples come from here
    before: Tap  # the most negative examples: the values before the activation function
    folded: tuple[Tap, ...]  # batch norms taken in after a conv (`values` is the last of them)
    activation: str | None  # the activation function following a conv, or the layer itself

    @property
    def description(self) -> str:
        """What the numbers are, for captions: "conv1 → bn1, before relu"."""
        if self.kind == "conv":
            chain = " → ".join([self.layer, *(t.key for t in self.folded)])
            return f"{chain}, before {self.activation}" if self.activation else chain
        if self.kind == "activation":
            return f"{self.layer} (most negative: its input)"
        return self.layer


class Example(NamedTuple):
    """One of a channel's top (or most negative) images."""

    index: int  # into the split
    activation: float
    position: tuple[int, int]  # (y, x) in the layer's output map
    box: tuple[int, int, int, int]  # receptive field: top, left, bottom, right (exclusive)


_TEXT_FIELDS = ("layer", "split", "values_of", "activation")
_INT_FIELDS = ("input_height", "input_width", "map_height", "map_width")


@dataclass(frozen=True)
class ChannelAtlas:
    """One layer over one split: per-image arrays (N, C), then per-channel summaries.

    Positions are flat indices y·map_width + x into the layer's output map. Receptive fields
    come from `rf`, `jump` and `start` (per axis, as `probe.RFGeometry`); a layer whose windows
    are the whole input (after global pooling) has rf = the input size and jump 0.
    """

    layer: str
    split: str  # "test" | "train"
    values_of: str  # LayerPlan.description
    activation: str  # the following activation function, "" if none
    input_height: int
    input_width: int
    map_height: int
    map_width: int
    rf: np.ndarray  # (2,) int64
    jump: np.ndarray  # (2,) int64
    start: np.ndarray  # (2,) int64
    labels: np.ndarray  # (N,) int64 true classes
    maxima: np.ndarray  # (N, C) float32 spatial maximum
    argmax: np.ndarray  # (N, C) int32 its flat position
    means: np.ndarray  # (N, C) float32 spatial mean
    top_index: np.ndarray  # (C, K) int64 images by maximum, largest first
    top_value: np.ndarray  # (C, K) float32
    top_position: np.ndarray  # (C, K) int32 flat positions
    class_means: np.ndarray  # (C, classes) float32 mean of max(maximum, 0); NaN: no image
    selectivity: np.ndarray  # (C,) float32 Morcos et al. 2018 over `class_means`
    dead_share: np.ndarray  # (C,) float32 share of images with maximum ≤ 0
    hist_counts: np.ndarray  # (C, bins) int64 histogram of the maxima
    hist_edges: np.ndarray  # (C, bins + 1) float32 its bin edges
    minima: np.ndarray | None = None  # (N, C) float32 spatial minimum before the activation
    argmin: np.ndarray | None = None  # (N, C) int32 its flat position
    bottom_index: np.ndarray | None = None  # (C, K) int64 images by minimum, most negative first
    bottom_value: np.ndarray | None = None  # (C, K) float32
    bottom_position: np.ndarray | None = None  # (C, K) int32

    @property
    def images(self) -> int:
        return int(self.maxima.shape[0])

    @property
    def channels(self) -> int:
        return int(self.maxima.shape[1])

    @property
    def mean_activation(self) -> np.ndarray:
        """(C,) mean over the split of each channel's spatial mean."""
        return self.means.mean(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def preferred_class(self) -> np.ndarray:
        """(C,) the class with the largest mean activity (`class_means`) per channel."""
        return np.argmax(np.nan_to_num(self.class_means, nan=-np.inf), axis=1)

    def yx(self, flat: int) -> tuple[int, int]:
        """A flat position as (y, x) in the output map."""
        return divmod(int(flat), self.map_width)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Receptive field of output (y, x) in input pixels: (top, left, bottom, right), bottom
        and right exclusive, not clipped: it may reach into the padding outside the image."""
        return box(self.rf, self.jump, self.start, y, x)

    def top(self, channel: int) -> list[Example]:
        """The channel's top images by maximum, largest first."""
        return self._examples(self.top_index, self.top_value, self.top_position, channel)

    def bottom(self, channel: int) -> list[Example]:
        """The channel's most negative images (values before the activation function)."""
        if self.bottom_index is None or self.bottom_value is None or self.bottom_position is None:
            raise LensError("this atlas was computed without the most negative examples")
        return self._examples(self.bottom_index, self.bottom_value, self.bottom_position, channel)

    def _examples(
        self, index: np.ndarray, value: np.ndarray, position: np.ndarray, channel: int
    ) -> list[Example]:
        if not 0 <= channel < self.channels:
            raise LensError(f"channel {channel} is outside 0..{self.channels - 1}")
        out = []
        for i, v, p in zip(index[channel], value[channel], position[channel], strict=True):
            y, x = self.yx(int(p))
            out.append(Example(int(i), float(v), (y, x), self.box(y, x)))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a NumPy array (texts as UTF-8 bytes, integers as 1-element arrays):
        what the disk cache stores (safetensors holds arrays only)."""
        arrays: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in _TEXT_FIELDS:
                arrays[f.name] = np.frombuffer(value.encode("utf-8"), dtype=np.uint8).copy()
            elif f.name in _INT_FIELDS:
                arrays[f.name] = np.array([value], dtype=np.int64)
            else:
                arrays[f.name] = np.ascontiguousarray(value)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ChannelAtlas:
        """The atlas `to_arrays` gave (optional fields may be missing)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in arrays:
                continue
            a = np.asarray(arrays[f.name])
            if f.name in _TEXT_FIELDS:
                values[f.name] = a.astype(np.uint8).tobytes().decode("utf-8")
            elif f.name in _INT_FIELDS:
                values[f.name] = int(a.reshape(-1)[0])
            else:
                values[f.name] = a
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Which layers, which tensors


def layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, ACTIVATION_MODULES):
        return "activation"
    if isinstance(module, POOLING_MODULES):
        return "pooling"
    return "other"


def atlas_layers(model: nn.Module, flow: probe.ShapeFlow) -> list[str]:
    """Every call of a conv, activation or pooling layer with (C, H, W) outputs, in execution
    order: the layers a channel atlas is made for ("name#k" for a reused module's k-th call)."""
    modules = dict(model.named_modules())
    return [
        probe._key(r.name, r.call_index)
        for r in flow.leaves
        if len(r.output_shape) == 3 and layer_kind(modules[r.name]) != "other"
    ]


def plan_layer(model: nn.Module, layer: str) -> LayerPlan:
    """The tensors the atlas of `layer` reads; UnknownNameError for a name the model lacks."""
    name, call_index = probe._parse_key(layer)
    modules = dict(model.named_modules())
    if name not in modules or not name:
        leaves = [n for n, m in modules.items() if n and probe._is_leaf(m)]
        raise UnknownNameError(f"no layer named {layer!r}; layers: {', '.join(leaves)}")
    kind = layer_kind(modules[name])
    own = Tap(name, call_index, "output")
    if kind == "conv":
        folded, activation = _following(model, name, call_index)
        values = folded[-1] if folded else own
        return LayerPlan(layer, kind, values, values, tuple(folded), activation)
    if kind == "activation":
        return LayerPlan(layer, kind, own, Tap(name, call_index, "input"), (), layer)
    return LayerPlan(layer, kind, own, own, (), None)


def _is_activation(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def _following(model: nn.Module, name: str, call_index: int) -> tuple[list[Tap], str | None]:
    """Batch norms taken in after the conv, and the activation function that follows it."""
    import torch.fx  # imported when first needed, like metrics.inference_copy

    modules = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # control flow on values: fall back to definition order
        return _following_by_order(modules, name)
    taps: dict[torch.fx.Node, Tap] = {}  # every module call with its call index
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            target = str(node.target)
            taps[node] = Tap(target, calls.get(target, 0), "output")
            calls[target] = calls.get(target, 0) + 1
    node = next((n for n, t in taps.items() if t == Tap(name, call_index, "output")), None)
    if node is None:
        return _following_by_order(modules, name)
    folded: list[Tap] = []
    while len(node.users) == 1:
        after = next(iter(node.users))
        if after in taps and isinstance(
            modules[str(after.target)], nn.modules.batchnorm._BatchNorm
        ):
            folded.append(taps[after])
            node = after
            continue
        if not _is_activation(after, modules):
            break
        if after in taps:
            return folded, taps[after].key
        target = after.target if isinstance(after.target, str) else after.target.__name__
        return folded, f"{target} (in forward)"
    return folded, None


def _following_by_order(modules: dict[str, nn.Module], name: str) -> tuple[list[Tap], str | None]:
    leaves = [n for n, m in modules.items() if n and probe._is_leaf(m)]
    rest = leaves[leaves.index(name) + 1 :] if name in leaves else []
    folded: list[Tap] = []
    if rest and isinstance(modules[rest[0]], nn.modules.batchnorm._BatchNorm):
        folded.append(Tap(rest.pop(0), 0, "output"))
    if rest and isinstance(modules[rest[0]], ACTIVATION_MODULES):
        return folded, rest[0]
    return folded, None


# ---------------------------------------------------------------------------------------------
# The pass


class _EnoughError(Exception):
    """Raised by the last hook a forward pass needs: the rest of the model is not run."""


class _Reduction:
    """Per-image, per-channel reductions of one tapped tensor, written into (N, C) buffers."""

    def __init__(self, images: int, maximum: bool, minimum: bool) -> None:
        self.images = images
        self.maximum, self.minimum = maximum, minimum
        self.buffers: dict[str, torch.Tensor] = {}
        self.map_shape: tuple[int, ...] = ()
        self.offset = 0

    def _buffer(self, name: str, channels: int, dtype: torch.dtype) -> torch.Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.empty((self.images, channels), dtype=dtype)
        return self.buffers[name]

    def __call__(self, t: torch.Tensor) -> None:
        if t.dim() not in (2, 4):
            raise ShapeError(f"a channel atlas needs (B, C, H, W) or (B, C) maps, got {t.shape}")
        self.map_shape = tuple(t.shape[2:]) or (1, 1)
        flat, axis = _positions(t)  # a view when it can be one
        B, C = t.shape[:2]
        rows = slice(self.offset, self.offset + B)
        if self.maximum:
            value, where = flat.max(dim=axis)  # (B, C)
            self._buffer("maxima", C, torch.float32)[rows] = value
            self._buffer("argmax", C, torch.int32)[rows] = where
            self._buffer("means", C, torch.float32)[rows] = flat.mean(dim=axis)
        if self.minimum:
            value, where = flat.min(dim=axis)
            self._buffer("minima", C, torch.float32)[rows] = value
            self._buffer("argmin", C, torch.int32)[rows] = where


def _positions(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, C, H, W) → positions on one axis: (B, C, H·W) for a contiguous tensor, (B, H·W, C) —
    a view, no copy — for a channels-last one; (B, C) → (B, C, 1)."""
    if t.dim() == 2:
        return t.unsqueeze(2), 2
    if t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last):
        return t.reshape(*t.shape[:2], -1), 2
    return t.permute(0, 2, 3, 1).flatten(1, 2), 1


def private_model(
    model: nn.Module, split: Split, device: str | torch.device = "cpu"
) -> tuple[nn.Module, torch.memory_format]:
    """A private copy to hook and run: `metrics.fast_model`'s inference copy (batch norm folded,
    channels-last) when it answers like the model, else a plain copy. Copied under the probe's
    lock, so no other session's hooks ride along."""
    with probe._LOCK:
        fast, layout = metrics.fast_model(model, split, device)
        if fast is model:
            fast = copy.deepcopy(model).eval().to(device)
    return fast, layout


def _called_modules(model: nn.Module) -> set[str] | None:
    """Targets an fx GraphModule still calls (a folded batch norm is no longer called)."""
    import torch.fx

    graph = getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return None
    return {str(n.target) for n in graph.nodes if n.op == "call_module"}


def resolve_tap(plan: LayerPlan, copy_: nn.Module, tap: Tap) -> Tap:
    """`tap` in a private copy: a batch norm the inference copy folded into its conv is read at
    the conv, whose output is now the batch norm's."""
    called = _called_modules(copy_)
    if called is None or tap.module in called or tap not in plan.folded:
        return tap
    conv = probe._parse_key(plan.layer)
    return Tap(conv[0], conv[1], "output")


@contextmanager
def tapped(
    model: nn.Module, taps: dict[Tap, Callable[[torch.Tensor], None]]
) -> Iterator[Callable[[torch.Tensor], None]]:
    """Hooks that hand each tap's tensor to its function as the forward pass reaches it and
    stop the pass once all have run; yields `run(x)`. For a private copy only (no lock)."""
    modules = dict(model.named_modules())
    done: set[Tap] = set()
    calls: dict[tuple[str, str], int] = {}

    def hook_for(tap: Tap, use: Callable[[torch.Tensor], None]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, *rest: Any) -> None:
            index = calls.get((tap.module, tap.side), 0)
            calls[(tap.module, tap.side)] = index + 1
            if index != tap.call_index:
                return
            tensor = probe._first_tensor(rest[-1] if tap.side == "output" else args)
            if tensor is None:
                raise LensError(f"{tap.key} gave no tensor {tap.side}")
            use(tensor)
            done.add(tap)
            if len(done) == len(taps):
                raise _EnoughError

        return hook

    def run(x: torch.Tensor) -> None:
        done.clear()
        calls.clear()
        with suppress(_EnoughError):
            model(x)
        missing = [t.key for t in taps if t not in done]
        if missing:
            raise LensError(f"the forward pass never reached {', '.join(missing)}")

    handles = []
    try:
        for tap, use in taps.items():
            module = modules[tap.module]
            if tap.side == "output":
                handles.append(module.register_forward_hook(hook_for(tap, use)))
            else:
                handles.append(module.register_forward_pre_hook(hook_for(tap, use)))
        yield run
    finally:
        for handle in handles:
            handle.remove()


class StoppedError(LensError):
    """The user stopped a long computation; nothing partial is returned."""


def compute_atlas(
    model: nn.Module,
    split: Split,
    layer: str,
    *,
    top: int = DEFAULT_TOP,
    negatives: bool = True,
    bins: int = HISTOGRAM_BINS,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | threading.Event | None = None,
) -> ChannelAtlas:
    """Every channel of `layer` over every image of `split`, in one pass.

    Runs a private copy (`private_model`); the model itself is untouched. The pass stops at
    the layer (the rest of the model is not run). `progress(done, total)` is called after each
    batch with image counts; `should_stop` is polled between batches and raises StoppedError.
    """
    if top < 1:
        raise LensError(f"top must be at least 1, got {top}")
    if len(split) == 0:
        raise LensError("the split has no images")
    plan = plan_layer(model, layer)
    flow = probe.shape_flow(model, split.info.input_shape)
    if flow.broken is not None:
        raise ShapeError(f"{flow.broken.layer or 'the model'} breaks: {flow.broken.reason}")
    name, call_index = probe._parse_key(layer)
    record = flow.find(name, call_index)
    if len(record.output_shape) not in (1, 3):
        raise ShapeError(f"{layer} outputs {record.output_shape}: no channels to atlas")

    fast, layout = private_model(model, split, device)
    values = _Reduction(len(split), maximum=True, minimum=negatives and plan.before == plan.values)
    reductions: dict[Tap, Callable[[torch.Tensor], None]] = {
        resolve_tap(plan, fast, plan.values): values
    }
    before = values
    if negatives and plan.before != plan.values:
        before = _Reduction(len(split), maximum=False, minimum=True)
        reductions[resolve_tap(plan, fast, plan.before)] = before
    batch = batch_size or metrics.default_batch(split)
    with torch.inference_mode(), tapped(fast, reductions) as run:
        done = 0
        for x, _ in iterate_batches(
            split, batch, shuffle=False, augment=False, device=device, memory_format=layout
        ):
            if stop_requested(should_stop):
                raise StoppedError(f"stopped after {done:,} of {len(split):,} images")
            values.offset = before.offset = done
            run(x)
            done += len(x)
            if progress is not None:
                progress(done, len(split))
    arrays = {k: v.numpy() for k, v in {**values.buffers, **before.buffers}.items()}
    return _summarize(plan, flow, record, split, values.map_shape, arrays, top, bins)


def box(
    rf: np.ndarray, jump: np.ndarray, start: np.ndarray, y: int, x: int
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in input pixels, bottom/right exclusive and not clipped, of
    output (y, x) of a layer with receptive field `rf`, step `jump` and first window `start`
    (per axis): rows start + y·jump … start + y·jump + rf − 1, likewise the columns."""
    top = int(start[0]) + int(y) * int(jump[0])
    left = int(start[1]) + int(x) * int(jump[1])
    return top, left, top + int(rf[0]), left + int(rf[1])


def geometry(record: probe.LayerRecord, input_hw: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """(rf, jump, start) of a layer's shape-flow record, each (2,) int64; a layer whose outputs
    see the whole input (global pooling, linear) gets rf = the input size and jump 0."""
    geo = record.geometry
    if geo is None or len(record.output_shape) != 3:  # every output sees the whole input
        return np.array(input_hw[:2], np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64)
    return tuple(np.array(v, np.int64) for v in (geo.rf, geo.jump, geo.start))


def _summarize(
    plan: LayerPlan,
    flow: probe.ShapeFlow,
    record: probe.LayerRecord,
    split: Split,
    map_shape: tuple[int, ...],
    arrays: dict[str, np.ndarray],
    top: int,
    bins: int,
) -> ChannelAtlas:
    labels = split.labels.cpu().numpy().astype(np.int64)
    maxima = arrays["maxima"]
    top_index = top_k(maxima, top)
    rows = np.arange(maxima.shape[1])[:, None]
    counts, edges = histograms(maxima, bins)
    rf, jump, start = geometry(record, tuple(flow.input_shape[1:]))
    extra: dict[str, np.ndarray] = {}
    if "minima" in arrays:
        minima = arrays["minima"]
        bottom = top_k(-minima, top)
        extra = {
            "minima": minima,
            "argmin": arrays["argmin"],
            "bottom_index": bottom,
            "bottom_value": minima[bottom, rows],
            "bottom_position": arrays["argmin"][bottom, rows],
        }
    means = class_means(np.maximum(maxima, 0), labels, split.info.num_classes)
    return ChannelAtlas(
        layer=plan.layer,
        split=split.split,
        values_of=plan.description,
        activation=plan.activation or "",
        input_height=int(flow.input_shape[1]),
        input_width=int(flow.input_shape[2]),
        map_height=int(map_shape[0]),
        map_width=int(map_shape[1]),
        rf=rf,
        jump=jump,
        start=start,
        labels=labels,
        maxima=maxima,
        argmax=arrays["argmax"],
        means=arrays["means"],
        top_index=top_index,
        top_value=maxima[top_index, rows],
        top_position=arrays["argmax"][top_index, rows],
        class_means=means.astype(np.float32),
        selectivity=selectivity_index(means).astype(np.float32),
        dead_share=dead_share(maxima).astype(np.float32),
        hist_counts=counts,
        hist_edges=edges,
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Per-channel statistics (plain NumPy: checked by hand in the tests)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """(C, k) image indices of the k largest values (N, C) per channel, largest first; equal
    values in index order."""
    N = values.shape[0]
    k = min(k, N)
    per_channel = values.T  # (C, N)
    if k < N:
        part = np.argpartition(-per_channel, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(N), per_channel.shape)
    picked = np.take_along_axis(per_channel, part, axis=1)
    # lexsort: last key first — value descending, then index ascending
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def class_means(activity: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, classes) mean activity (N, C) per true class, float64; NaN for a class with no image."""
    sums = np.zeros((num_classes, activity.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, activity.astype(np.float64))
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts[:, None]).T


def selectivity_index(means: np.ndarray) -> np.ndarray:
    """(C,) Morcos et al. 2018 class selectivity of class means (C, classes) ≥ 0:
    (μmax − μ−max) / (μmax + μ−max), μ−max the mean of the other (present) classes' means;
    0 for a channel that never fires or with fewer than two classes present."""
    out = np.zeros(means.shape[0], dtype=np.float64)
    for c, row in enumerate(means):
        present = row[np.isfinite(row)]
        if present.size < 2:
            continue
        best = int(np.argmax(present))
        mu_max = present[best]
        mu_rest = np.delete(present, best).mean()
        if mu_max + mu_rest > 0:
            out[c] = (mu_max - mu_rest) / (mu_max + mu_rest)
    return out


def dead_share(maxima: np.ndarray) -> np.ndarray:
    """(C,) share of images on which the channel's maximum is ≤ 0 (it never fires)."""
    return (maxima <= 0).mean(axis=0)


def histograms(maxima: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, counts (C, bins) of the maxima in equal bins over the channel's own range,
    and the edges (C, bins + 1). NaN or infinite maxima (a model with non-finite weights) are
    left out of the counts."""
    C = maxima.shape[1]
    counts = np.zeros((C, bins), dtype=np.int64)
    edges = np.zeros((C, bins + 1), dtype=np.float32)
    for c in range(C):
        finite = maxima[:, c][np.isfinite(maxima[:, c])]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if hi <= lo:  # one value (or none): a unit-wide bin around it
            lo, hi = lo - 0.5, hi + 0.5
        counts[c], e = np.histogram(finite, bins=bins, range=(lo, hi))
        edges[c] = e
    return counts, edges


# ---------------------------------------------------------------------------------------------
# Crops and the JSON record

PADDING_GREYS = (150, 190)  # the checkerboard drawn where a receptive field leaves the image


def crop(
    image: np.ndarray | torch.Tensor, box: tuple[int, int, int, int], *, cell: int = 2
) -> np.ndarray:
    """The part of `image` (uint8 (C, H, W) or (H, W)) inside `box` (top, left, bottom, right;
    exclusive; may reach outside) as (h, w, 3) uint8 RGB, the outside drawn as a grey
    checkerboard of `cell`-pixel squares (in input pixels) so padding is never read as image."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ShapeError(f"crop needs a (C, H, W) image with 1 or 3 channels, got {a.shape}")
    rgb = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    _, H, W = rgb.shape
    top, left, bottom, right = (int(v) for v in box)
    h, w = bottom - top, right - left
    if h <= 0 or w <= 0:
        raise ShapeError(f"empty box {box}")
    ys, xs = np.indices((h, w))
    checker = ((ys + top) // cell + (xs + left) // cell) % 2  # anchored to the image grid
    out = np.where(checker[..., None] == 1, PADDING_GREYS[1], PADDING_GREYS[0]).astype(np.uint8)
    out = np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out
    y0, y1, x0, x1 = max(top, 0), min(bottom, H), max(left, 0), min(right, W)
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = rgb[:, y0:y1, x0:x1].transpose(1, 2, 0)
    return out


def example_crops(
    atlas: ChannelAtlas, images: Any, examples: list[Example], *, cell: int = 2
) -> np.ndarray:
    """(K, h, w, 3) uint8 crops of the examples' receptive fields from `images` (a split's
    uint8 images, tensor or ResizedImages), ready to tile."""
    if not examples:
        return np.zeros((0, int(atlas.rf[0]), int(atlas.rf[1]), 3), dtype=np.uint8)
    picked = images[torch.as_tensor([e.index for e in examples])]
    return np.stack([crop(picked[k], e.box, cell=cell) for k, e in enumerate(examples)])


def to_json(atlas: ChannelAtlas) -> dict[str, Any]:
    """The record `python -m dashboard atlas --json` prints (issue's contract)."""

    def number(v: float) -> float | None:
        return round(float(v), 6) if math.isfinite(v) else None

    return {
        "layer": atlas.layer,
        "split": atlas.split,
        "images": atlas.images,
        "channels": [
            {
                "channel": c,
                "top": [
                    {
                        "index": e.index,
                        "activation": number(e.activation),
                        "position": list(e.position),
                        "box": list(e.box),
                    }
                    for e in atlas.top(c)
                ],
                "selectivity": number(atlas.selectivity[c]),
                "dead_share": number(atlas.dead_share[c]),
            }
            for c in range(atlas.channels)
        ],
    }
