"""Training dynamics: every layer's statistics over the steps of a run, and its weights' histograms.

`Recorder` rides along `training.fit()` and, every `every` optimizer steps (and at each epoch's
last step), measures for every parameter tensor

- the weight norm ‖w‖₂ after the step,
- the gradient norm ‖∇w‖₂ of the step (before the optimizer uses it),
- the update-to-weight ratio ‖Δw‖₂ / ‖w‖₂, Δw = what the step changed, w = the weights before
  it (CS231n's rule of thumb: around 1e-3; far below, the layer barely learns; far above, it
  thrashes),

and for every rectifier layer (ReLU and its relatives, see RECTIFIERS) the share of its units
that never fired in the `window` batches before the sample: "dead ReLUs". A unit is one output
channel of a (B, C, H, W) activation (all positions of a feature map share one filter, so the
filter is what dies) and one feature of a (B, F) activation; it fired when its output was > 0
at any position of any image of those batches. Every rectifier here is > 0 exactly where its
input is > 0, so "never fired" means "its input was never positive". A module called several
times per forward pass (torchvision's ResNet reuses `relu`) counts each call apart: "relu#1" is
its second call, as in `probe.activations`.

At the start and at the end of every epoch each parameter tensor's values are counted into a
histogram with bins fixed at the start (`histogram_edges`): symmetric around 0, HISTOGRAM_MARGIN
times the tensor's largest initial |value| wide, plus an underflow and an overflow bin, so the
counts of every histogram sum to the tensor's element count whatever training does.

Between samples the recorder costs nothing; at a sample a few `torch._foreach_*` reductions over
the parameters and, during the window only, one max-reduction per activation output.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Activations whose output is > 0 exactly where their input is > 0: "never fired" is defined.
RECTIFIERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
)  # fmt: skip
HISTOGRAM_MARGIN = 2.0  # bins span ± this × the largest initial |value|: room to grow
# A tensor that starts all zeros (most biases) borrows the range of its module's weight.
ZERO_TENSOR_HALF_WIDTH = 1.0  # ... or this, when the module has no non-zero weight
UPDATE_RATIO_GUIDE = 1e-3  # the rule of thumb drawn as a reference line
# The card keeps at most this many per-epoch numbers; longer runs keep every k-th epoch (the
# step series and histograms in the weights file are complete).
MAX_CARD_NUMBERS = 200_000
SIGNIFICANT = 7  # digits kept in the card: float32 precision, shorter JSON
STATISTICS = ("weight_norm", "grad_norm", "update_ratio")


@dataclass(frozen=True)
class DynamicsEvent:
    """One sample of every layer's statistics, sent by fit() through `on_event`."""

    epoch: int  # 1-based
    step: int  # steps done in this epoch, 1-based
    steps_per_epoch: int
    global_step: int  # steps done since the run started
    elapsed: float  # seconds since fit() started (wall clock, evaluation included)
    tensors: tuple[str, ...]  # parameter names, as in the state dict
    weight_norm: tuple[float, ...]  # ‖w‖₂ after the step, one per tensor
    grad_norm: tuple[float, ...]  # ‖∇w‖₂ of the step; NaN for a tensor without gradient
    update_ratio: tuple[float, ...]  # ‖Δw‖₂ / ‖w before‖₂
    activations: tuple[str, ...]  # rectifier calls ("name", "name#1" for a second call)
    units: tuple[int, ...]  # channels (or features) of each
    dead_share: tuple[float, ...]  # share of units that never fired in the window; NaN: not seen
    window: int  # batches the dead shares cover (fewer than asked only at the very start)

    @property
    def position(self) -> float:
        """Where the sample sits in epochs: 1.25 = a quarter into the second epoch."""
        return self.epoch - 1 + self.step / self.steps_per_epoch


@dataclass(frozen=True)
class EpochDynamics:
    """One epoch in a few numbers per layer (what the card keeps)."""

    epoch: int
    samples: int  # samples taken in the epoch
    weight_norm: list[float]  # at the epoch's end, exact (float64 over the weights)
    grad_norm: list[float | None]  # mean over the epoch's samples
    update_ratio: list[float | None]  # median over the epoch's samples
    dead_share: list[float | None]  # in the epoch's last window


@dataclass(frozen=True)
class Series:
    """Sampled statistics over a run, ready to draw: one row per sample."""

    steps: np.ndarray  # (S,) global step
    epochs: np.ndarray  # (S,) position in epochs (1.25 = a quarter into epoch 2)
    seconds: np.ndarray  # (S,) wall clock since the run started
    values: dict[str, dict[str, np.ndarray]]  # statistic → tensor or activation → (S,)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class DynamicsLog:
    """Everything a run recorded: the step series, the histograms and per-epoch summaries.

    Stored with the checkpoint: `to_tensors()` in the weights file (under `lens_history/dynamics/`)
    and `card_record()` in the card; `from_stored` reads them back.
    """

    every: int  # steps between samples (and each epoch's last step)
    window: int  # batches watched before each sample for dead units
    bins: int  # interior histogram bins per tensor
    tensors: list[str]  # every parameter tensor, state-dict order
    activations: list[str]
    units: list[int]
    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    # statistic → one row per sample (a row per tensor or activation, NaN where unmeasured)
    rows: dict[str, list[list[float]]] = field(default_factory=dict)
    edges: dict[str, torch.Tensor] = field(default_factory=dict)  # tensor → (bins + 1,) float32
    # epoch (0 = the initial weights) → tensor → (bins + 2,) int32: [under, bins…, over]
    histograms: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    summaries: list[EpochDynamics] = field(default_factory=list)

    def series(self) -> Series:
        names = {"dead_share": self.activations}
        values = {}
        for stat in (*STATISTICS, "dead_share"):
            rows = np.asarray(self.rows.get(stat, []), dtype=np.float64)
            keys = names.get(stat, self.tensors)
            rows = rows.reshape(len(self.steps), len(keys))
            values[stat] = {name: rows[:, i] for i, name in enumerate(keys)}
        return Series(
            np.asarray(self.steps, dtype=np.int64),
            np.asarray(self.epochs, dtype=np.float64),
            np.asarray(self.seconds, dtype=np.float64),
            values,
        )

    # --- storage -------------------------------------------------------------------------------

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Keys relative to the checkpoint's dynamics prefix; each series named by its layer."""
        out: dict[str, torch.Tensor] = {
            "steps/step": torch.tensor(self.steps, dtype=torch.int64),
            "steps/epoch": torch.tensor(self.epochs, dtype=torch.float64),
            "steps/seconds": torch.tensor(self.seconds, dtype=torch.float64),
        }
        series = self.series()
        for stat, by_name in series.values.items():
            for name, values in by_name.items():
                out[f"steps/{stat}/{name}"] = torch.from_numpy(values.astype(np.float32))
        for name, units in zip(self.activations, self.units, strict=True):
            out[f"units/{name}"] = torch.tensor([units], dtype=torch.int64)
        for name, edges in self.edges.items():
            out[f"edges/{name}"] = edges
        for epoch, counts in self.histograms.items():
            for name, tensor in counts.items():
                out[f"histogram/epoch{epoch}/{name}"] = tensor
        return out

    def card_record(self) -> dict[str, Any]:
        """The card's `dynamics`: the settings, the names and a few numbers per epoch. A run
        whose summaries would pass MAX_CARD_NUMBERS keeps every k-th epoch (and the last)."""
        per_epoch = 3 * len(self.tensors) + len(self.activations)
        stride = max(1, math.ceil(len(self.summaries) * per_epoch / MAX_CARD_NUMBERS))
        last = len(self.summaries) - 1
        kept = [s for i, s in enumerate(self.summaries) if (last - i) % stride == 0]
        return {
            "every": self.every,
            "window": self.window,
            "bins": self.bins,
            "tensors": list(self.tensors),
            "activations": list(self.activations),
            "units": list(self.units),
            "epochs": [
                {
                    "epoch": s.epoch,
                    "samples": s.samples,
                    "weight_norm": _rounded(s.weight_norm),
                    "grad_norm": _rounded(s.grad_norm),
                    "update_ratio": _rounded(s.update_ratio),
                    "dead_share": _rounded(s.dead_share),
                }
                for s in kept
            ],
        }

    @classmethod
    def from_stored(
        cls, tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any] | None
    ) -> DynamicsLog | None:
        """A log from a checkpoint's dynamics tensors (prefix removed) and its card's record
        (None when the card has none: the series and histograms still load). None when the
        checkpoint holds no dynamics; ValueError for tensors of the wrong kind or size (a file
        is untrusted: the caller skips its dynamics and says so)."""
        if not tensors:
            return None
        record = record or {}
        steps = _vector(tensors.get("steps/step", torch.zeros(0, dtype=torch.int64)), "steps")
        count = len(steps)
        positions = _vector(tensors.get("steps/epoch", torch.zeros(0)), "epochs", count)
        seconds = _vector(tensors.get("steps/seconds", torch.zeros(0)), "seconds", count)
        by_stat: dict[str, dict[str, torch.Tensor]] = {}
        edges: dict[str, torch.Tensor] = {}
        histograms: dict[int, dict[str, torch.Tensor]] = {}
        units: dict[str, int] = {}
        for key, tensor in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "steps" and "/" in rest:
                stat, _, name = rest.partition("/")
                by_stat.setdefault(stat, {})[name] = _vector(tensor, key, count)
            elif kind == "edges":
                edges[rest] = _vector(tensor, key)
                if len(tensor) < 2 or not tensor.is_floating_point():
                    raise ValueError(f"{key} should hold at least two bin edges")
            elif kind == "units":
                units[rest] = int(_vector(tensor, key, 1)[0])
            elif kind == "histogram" and (match := re.fullmatch(r"epoch(\d+)/(.+)", rest)):
                histograms.setdefault(int(match[1]), {})[match[2]] = _vector(tensor, key)
        for counts in histograms.values():
            for name, tensor in counts.items():
                if name not in edges or len(tensor) != len(edges[name]) + 1:
                    raise ValueError(f"the histogram of {name} does not match its bins")
        names = list(record.get("tensors") or by_stat.get("weight_norm", {}) or edges)
        activations = list(record.get("activations") or by_stat.get("dead_share", {}))
        rows: dict[str, list[list[float]]] = {}
        for stat in (*STATISTICS, "dead_share"):
            found = by_stat.get(stat, {})
            keys = activations if stat == "dead_share" else names
            columns = [found[k].double() if k in found else _nan(count) for k in keys]
            stacked = torch.stack(columns, dim=1) if columns else torch.zeros((count, 0))
            rows[stat] = stacked.tolist()
        bins = record.get("bins") or (len(next(iter(edges.values()))) - 1 if edges else 0)
        stored_units = record.get("units")
        return cls(
            every=int(record.get("every") or 0),
            window=int(record.get("window") or 0),
            bins=int(bins),
            tensors=names,
            activations=activations,
            units=list(stored_units) if stored_units else [units.get(a, 0) for a in activations],
            steps=[int(v) for v in steps.tolist()],
            epochs=positions.tolist(),
            seconds=seconds.tolist(),
            rows=rows,
            edges=edges,
            histograms={e: histograms[e] for e in sorted(histograms)},
            summaries=[_summary_from_record(r) for r in record.get("epochs", [])],
        )


def _vector(tensor: torch.Tensor, what: str, length: int | None = None) -> torch.Tensor:
    """A stored 1-D tensor of numbers, of `length` when given; ValueError otherwise."""
    if tensor.ndim != 1 or tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{what} should be a 1-D tensor of numbers, got {tuple(tensor.shape)}")
    if length is not None and len(tensor) != length:
        raise ValueError(f"{what} has {len(tensor)} values, expected {length}")
    return tensor


def _nan(count: int) -> torch.Tensor:
    return torch.full((count,), math.nan, dtype=torch.float64)


def _summary_from_record(record: Mapping[str, Any]) -> EpochDynamics:
    return EpochDynamics(
        epoch=int(record["epoch"]),
        samples=int(record.get("samples") or 0),
        weight_norm=list(record.get("weight_norm") or []),
        grad_norm=list(record.get("grad_norm") or []),
        update_ratio=list(record.get("update_ratio") or []),
        dead_share=list(record.get("dead_share") or []),
    )


def _rounded(values: Sequence[float | None]) -> list[float | None]:
    """SIGNIFICANT digits; NaN and infinities become None (JSON has neither)."""
    return [
        float(f"{v:.{SIGNIFICANT}g}") if v is not None and math.isfinite(v) else None
        for v in values
    ]


# ---------------------------------------------------------------------------------------------
# Histograms


def histogram_edges(
    weight: torch.Tensor, bins: int, *, fallback: float = ZERO_TENSOR_HALF_WIDTH
) -> torch.Tensor:
    """(bins + 1,) float32 edges, evenly from −h to +h with h = HISTOGRAM_MARGIN · max|weight|
    (`fallback` when the tensor is all zeros or not finite)."""
    values = weight.detach().float()
    largest = float(values.abs().max()) if values.numel() else 0.0
    half = HISTOGRAM_MARGIN * largest if math.isfinite(largest) and largest > 0 else fallback
    return torch.linspace(-half, half, bins + 1, dtype=torch.float32)


def histogram_counts(weight: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(bins + 2,) int32 counts: [below edges[0], bins[e_i, e_i+1)…, at or above edges[-1]].

    Every value lands in exactly one bin (NaN in the overflow), so the counts sum to numel.
    """
    values = weight.detach().float().reshape(-1).cpu()
    values = torch.nan_to_num(values, nan=math.inf)
    index = torch.bucketize(values, edges, right=True)  # 0: under, 1…bins: inside, bins+1: over
    return torch.bincount(index, minlength=len(edges) + 1).to(torch.int32)


def _module_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name → its module's `weight` (for the range of an all-zero bias)."""
    out = {}
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            out[f"{module_name}.{param_name}" if module_name else param_name] = weight
    return out


def initial_edges(model: nn.Module, bins: int) -> dict[str, torch.Tensor]:
    """Every parameter tensor's fixed bins, decided from its initial values."""
    weights = _module_weights(model)
    edges = {}
    for name, param in model.named_parameters():
        sibling = weights.get(name)
        fallback = ZERO_TENSOR_HALF_WIDTH
        if sibling is not None and sibling is not param:
            largest = float(sibling.detach().abs().max()) if sibling.numel() else 0.0
            if math.isfinite(largest) and largest > 0:
                fallback = HISTOGRAM_MARGIN * largest
        edges[name] = histogram_edges(param, bins, fallback=fallback)
    return edges


# ---------------------------------------------------------------------------------------------
# The recorder


def ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are
    not pulled towards 0 (last = w·last + (1 − w)·v; shown = last / (1 − w^n)). Non-finite
    points are shown as they are and leave the average untouched."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.empty(len(values), dtype=np.float64)
    last, count = 0.0, 0
    for i, value in enumerate(values):
        value = float(value)
        if not math.isfinite(value):
            out[i] = value
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out[i] = last / (1 - weight**count)
    return out


class Recorder:
    """Measures a model while fit() trains it; fit() calls the hooks in the order

    before_step → (forward, backward) → after_backward → optimizer.step() → after_step,
    and end_epoch after each epoch. Use it as a context manager: the activation hooks are
    removed on the way out, also after an error.
    """

    def __init__(self, model: nn.Module, *, every: int, window: int, bins: int) -> None:
        self.model = model
        self.every = every  # 0: record nothing (every method is then a no-op)
        self.window = window
        self.bins = bins
        self.steps_per_epoch = 1
        self._all_reduce_max: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.names: tuple[str, ...] = ()
        self.params: list[torch.Tensor] = []
        self.log: DynamicsLog | None = None
        self._watching = False
        # What fired in each of the last `window` watched batches: call key → (units,) bool.
        self._recent: deque[dict[str, torch.Tensor]] = deque(maxlen=window)
        self._calls: dict[str, int] = {}
        self._before: list[torch.Tensor] | None = None
        self._grad_norms: list[float] | None = None
        self._epoch_rows: list[dict[str, list[float]]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def start(
        self,
        steps_per_epoch: int,
        all_reduce_max: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Fix every tensor's bins and count the initial weights (epoch 0). Called once the model
        sits on its device in its training layout; `all_reduce_max` merges the processes' dead
        units in a distributed run."""
        if not self.enabled:
            return
        self.steps_per_epoch = steps_per_epoch
        self._all_reduce_max = all_reduce_max
        named = list(self.model.named_parameters())
        self.names = tuple(name for name, _ in named)
        self.params = [p for _, p in named]
        self.log = DynamicsLog(self.every, self.window, self.bins, list(self.names), [], [])
        self.log.edges = initial_edges(self.model, self.bins)
        self.log.histograms[0] = self._histograms()

    # --- hooks -------------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        if not self.enabled:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._new_forward))
        for name, module in self.model.named_modules():
            if isinstance(module, RECTIFIERS):
                self._handles.append(module.register_forward_hook(self._watcher(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _new_forward(self, module: nn.Module, args: tuple) -> None:
        self._calls.clear()
        if self._watching:
            self._recent.append({})

    def _watcher(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._watching or not isinstance(output, torch.Tensor) or output.ndim < 2:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            key = name if call == 0 else f"{name}#{call}"
            values = output.detach()
            dims = [0, *range(2, values.ndim)]
            self._recent[-1][key] = values.amax(dim=dims) > 0  # (C,): positive in this batch

        return hook

    # --- the schedule ------------------------------------------------------------------------

    def _is_sample(self, global_step: int) -> bool:
        if not self.enabled:
            return False
        return global_step % self.every == 0 or global_step % self.steps_per_epoch == 0

    def _next_sample(self, global_step: int) -> int:
        """The first sampled step at or after `global_step` (1-based)."""
        by_interval = -(-global_step // self.every) * self.every
        epoch_end = -(-global_step // self.steps_per_epoch) * self.steps_per_epoch
        return min(by_interval, epoch_end)

    def before_step(self, global_step: int) -> None:
        """Watch the activations when this step is one of the `window` before a sample."""
        self._watching = self.enabled and self._next_sample(global_step) - global_step < self.window

    def after_backward(self, global_step: int) -> None:
        """At a sampled step: the gradient norms, and the weights before the optimizer moves
        them."""
        if not self._is_sample(global_step):
            return
        with torch.no_grad():
            grads = [p.grad for p in self.params if p.grad is not None]
            norms = iter(_norms(grads))
            self._grad_norms = [
                next(norms) if p.grad is not None else math.nan for p in self.params
            ]
            self._before = [p.detach().clone() for p in self.params]

    def after_step(
        self, *, epoch: int, step: int, global_step: int, elapsed: float
    ) -> DynamicsEvent | None:
        """At a sampled step: the event with every statistic; else None."""
        self._watching = False  # the test pass after an epoch is not training
        if self._before is None or self._grad_norms is None:
            return None
        with torch.no_grad():
            now = [p.detach() for p in self.params]
            before_norms = _norms(self._before)
            weight_norms = _norms(now)
            deltas = torch._foreach_sub(now, self._before) if now else []
            update_norms = _norms(deltas)
        ratios = [
            u / b if b > 0 else (0.0 if u == 0 else math.inf)
            for u, b in zip(update_norms, before_norms, strict=True)
        ]
        activations, units, dead = self._dead_shares()
        event = DynamicsEvent(
            epoch=epoch,
            step=step,
            steps_per_epoch=self.steps_per_epoch,
            global_step=global_step,
            elapsed=elapsed,
            tensors=self.names,
            weight_norm=tuple(weight_norms),
            grad_norm=tuple(self._grad_norms),
            update_ratio=tuple(ratios),
            activations=activations,
            units=units,
            dead_share=dead,
            window=len(self._recent),
        )
        self._before = self._grad_norms = None
        self._add(event)
        return event

    def _dead_shares(self) -> tuple[tuple[str, ...], tuple[int, ...], tuple[float, ...]]:
        """Per rectifier call: the share of units that fired in none of the recent batches."""
        assert self.log is not None
        fired: dict[str, torch.Tensor] = {}
        for batch in self._recent:
            for key, mask in batch.items():
                seen = fired.get(key)
                fired[key] = mask if seen is None or seen.shape != mask.shape else seen | mask
        for key, mask in fired.items():
            if key not in self.log.activations:
                self.log.activations.append(key)
                self.log.units.append(mask.numel())
        if self._all_reduce_max is not None and fired:
            # Every process saw its share of the batches: a unit fired if it fired anywhere.
            flat = torch.cat([f.float() for f in fired.values()])
            merged = self._all_reduce_max(flat) > 0
            fired = dict(zip(fired, merged.split([f.numel() for f in fired.values()]), strict=True))
        shares = [
            1.0 - float(fired[key].float().mean()) if key in fired else math.nan
            for key in self.log.activations
        ]
        return tuple(self.log.activations), tuple(self.log.units), tuple(shares)

    def _add(self, event: DynamicsEvent) -> None:
        log = self.log
        assert log is not None
        log.steps.append(event.global_step)
        log.epochs.append(round(event.position, 6))
        log.seconds.append(round(event.elapsed, 4))
        row = {
            "weight_norm": list(event.weight_norm),
            "grad_norm": list(event.grad_norm),
            "update_ratio": list(event.update_ratio),
            "dead_share": list(event.dead_share),
        }
        for stat, values in row.items():
            log.rows.setdefault(stat, []).append(values)
        self._epoch_rows.append(row)

    # --- epochs --------------------------------------------------------------------------------

    def _histograms(self) -> dict[str, torch.Tensor]:
        assert self.log is not None
        return {
            name: histogram_counts(param, self.log.edges[name])
            for name, param in zip(self.names, self.params, strict=True)
        }

    def end_epoch(self, epoch: int) -> None:
        """The epoch's histograms and summary (weight norms exact, from the weights now)."""
        log = self.log
        if log is None:
            return
        log.histograms[epoch] = self._histograms()
        rows = self._epoch_rows
        # Rows sampled before a rectifier call was first seen are shorter: pad them with NaN.
        for stored in log.rows.get("dead_share", []):
            stored.extend([math.nan] * (len(log.activations) - len(stored)))
        with torch.no_grad():
            exact = [float(torch.linalg.vector_norm(p.detach().double())) for p in self.params]
        log.summaries.append(
            EpochDynamics(
                epoch=epoch,
                samples=len(rows),
                weight_norm=exact,
                grad_norm=_column(rows, "grad_norm", len(self.names), statistics.fmean),
                update_ratio=_column(rows, "update_ratio", len(self.names), statistics.median),
                dead_share=list(rows[-1]["dead_share"]) if rows else [None] * len(log.activations),
            )
        )
        self._epoch_rows = []


def _norms(tensors: list[torch.Tensor]) -> list[float]:
    """‖t‖₂ of each tensor in one fused pass, as floats (one device sync)."""
    if not tensors:
        return []
    return torch.stack([n.float() for n in torch._foreach_norm(tensors)]).tolist()


def _column(
    rows: list[dict[str, list[float]]],
    stat: str,
    width: int,
    reduce: Callable[[list[float]], float],
) -> list[float | None]:
    """`reduce` over the finite values of each tensor's column; None where there are none."""
    out: list[float | None] = []
    for i in range(width):
        finite = [r[stat][i] for r in rows if math.isfinite(r[stat][i])]
        out.append(reduce(finite) if finite else None)
    return out


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum over the processes of a distributed run (gloo or NCCL)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


# ---------------------------------------------------------------------------------------------
# Live events → series


def series_from_events(events: Sequence[Any]) -> Series:
    """The DynamicsEvents among fit()'s events (others are skipped) as a Series."""
    samples = [e for e in events if isinstance(e, DynamicsEvent)]
    names = samples[-1].tensors if samples else ()
    activations = samples[-1].activations if samples else ()
    values: dict[str, dict[str, np.ndarray]] = {}
    for stat in STATISTICS:
        table = np.array([getattr(e, stat) for e in samples], dtype=np.float64)
        table = table.reshape(len(samples), len(names))
        values[stat] = {name: table[:, i] for i, name in enumerate(names)}
    dead = np.full((len(samples), len(activations)), math.nan)
    for row, event in enumerate(samples):
        dead[row, : len(event.dead_share)] = event.dead_share
    values["dead_share"] = {name: dead[:, i] for i, name in enumerate(activations)}
    return Series(
        np.array([e.global_step for e in samples], dtype=np.int64),
        np.array([e.position for e in samples], dtype=np.float64),
        np.array([e.elapsed for e in samples], dtype=np.float64),
        values,
    )


def weight_tensors(names: Iterator[str] | Sequence[str]) -> list[str]:
    """The weights among parameter names (biases and norm shifts left out): what a figure of
    "every layer" usually shows."""
    return [n for n in names if n.endswith("weight")]


def sample_line(event: DynamicsEvent) -> str:
    """The latest sample in one line for the command line's epoch log: the weights' update
    ratios (median and range) and the activation layers with dead units."""
    ratios = [
        r
        for name, r in zip(event.tensors, event.update_ratio, strict=True)
        if name.endswith("weight") and math.isfinite(r) and r > 0
    ]
    parts = []
    if ratios:
        parts.append(
            f"update/weight median {statistics.median(ratios):.1e} "
            f"({min(ratios):.1e} to {max(ratios):.1e}, {len(ratios)} weight tensors; "
            f"guide ~{UPDATE_RATIO_GUIDE:.0e})"
        )
    dead = [
        f"{name} {share:.0%} of {units}"
        for name, units, share in zip(event.activations, event.units, event.dead_share, strict=True)
        if math.isfinite(share) and share > 0
    ]
    if event.activations:
        shown = ", ".join(dead[:4]) + (", …" if len(dead) > 4 else "")
        parts.append(f"dead units in the last {event.window} batches: {shown or 'none'}")
    return "; ".join(parts)
