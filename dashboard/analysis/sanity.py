"""The sanity check for saliency maps: cascading randomization (Adebayo et al. 2018).

A map that explains the model must change when the model's weights are destroyed. On a private
copy of the model the layers that own parameters are re-initialized one at a time, from the
output back to the input (each layer keeps its predecessors' randomization: a cascade), with
PyTorch's own initialization (`reset_parameters`, e.g. Kaiming-uniform for conv and linear
layers; batch norm back to weight 1, bias 0 and fresh running statistics). After each step every
method explains the same image and the same class again, and its map is compared with the
original by Spearman's rank correlation.

Correlations are computed on the map each method is ranked by (`Attribution.ranking`: the
absolute map for Saliency, SmoothGrad and Guided Grad-CAM, the signed map for Integrated
Gradients, Occlusion and Grad-CAM), and both the absolute and the signed correlations are kept
for display. The choice matters on digits with a black baseline: Integrated Gradients and
Occlusion are exactly 0 wherever the image equals the baseline, so their ABSOLUTE maps keep the
digit's outline whatever the weights (correlation ~0.99 after the whole cascade on lenet5 —
Adebayo et al.'s point about methods dominated by the input), while their signed maps, which
say which strokes are evidence for the class, fall to ~0.1. A constant map (Grad-CAM's ReLU can
zero everything on a random model) shares no ranking with the original: its correlation is 0.

A method is flagged as not depending on the model when its map, after the WHOLE model has been
re-initialized, still has a rank correlation of at least `FLAG_THRESHOLD` = 0.5 with the
original. Adebayo et al.'s figures show the same cut-off: the methods that passed fell to ~0.2
or below on a randomized Inception v3, guided backpropagation stayed above 0.5. On lenet5
(MNIST test images 0–2) every method here ends between −0.2 and 0.5.

The model passed in is never touched: the cascade runs on `attribution.private_copy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dashboard.analysis import attribution, probe
from dashboard.base.errors import LensError
from dashboard.base.work import seeded, stop_requested
from dashboard.data import DatasetInfo

FLAG_THRESHOLD = 0.5
ORIGINAL = "original"  # the name of step 0: the trained model itself


@dataclass(frozen=True)
class CascadeStep:
    """The model after re-initializing `layer` (and every layer above it)."""

    layer: str  # ORIGINAL for the trained model
    changed: tuple[str, ...]  # state-dict keys this step re-initialized
    maps: dict[str, attribution.Attribution]
    spearman: dict[str, float]  # ranking maps against the original's (1.0 at step 0)
    spearman_absolute: dict[str, float]
    spearman_signed: dict[str, float]
    predicted: int  # the randomized model's predicted class for the image


@dataclass(frozen=True)
class SanityCheck:
    """Every method's maps along the cascade, and which methods ignore the model."""

    methods: tuple[str, ...]
    target: int
    steps: list[CascadeStep]  # steps[0] is the original model
    threshold: float
    seconds: float
    stopped: bool = False  # the caller asked to stop: the steps done so far

    @property
    def layers(self) -> list[str]:
        return [step.layer for step in self.steps]

    def correlations(self, method: str, *, kind: str = "ranking") -> np.ndarray:
        """(steps,) Spearman of the method's map with the original's, step by step; `kind` is
        "ranking" (what the flag reads), "absolute" or "signed"."""
        key = {"ranking": "spearman", "absolute": "spearman_absolute", "signed": "spearman_signed"}
        return np.array([getattr(step, key[kind])[method] for step in self.steps])

    @property
    def flagged(self) -> dict[str, bool]:
        """True for a method whose map survives the whole cascade (see FLAG_THRESHOLD); only
        once every layer has been re-initialized."""
        last = self.steps[-1]
        complete = not self.stopped and len(self.steps) > 1
        return {m: bool(complete and last.spearman[m] >= self.threshold) for m in self.methods}


def parametrized_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Leaf modules that own parameters, in the order the forward pass runs them (first call);
    a module with parameters that never runs comes last, in definition order."""
    flow = probe.shape_flow(model, input_shape)
    ran = [r.name for r in flow.leaves if r.call_index == 0]
    modules = dict(model.named_modules())
    owners = [n for n, m in modules.items() if n and any(True for _ in m.parameters(False))]
    order = [n for n in ran if n in owners]
    return order + [n for n in owners if n not in order]


def reinitialize(module: nn.Module, seed: int) -> None:
    """PyTorch's own initialization of one layer, from `seed` (the global RNG is kept)."""
    with seeded(seed), torch.no_grad():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:  # no initializer of its own: fresh values of the same spread
            for param in module.parameters(recurse=False):
                param.normal_(0.0, float(param.std()) if param.numel() > 1 else 0.01)


def cascade(
    model: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0
) -> Iterator[tuple[str, tuple[str, ...], nn.Module]]:
    """(layer, state-dict keys changed, the model) per step: first the untouched private copy
    (ORIGINAL, no keys), then after each layer's re-initialization, output layer first.

    One private copy is randomized further at each step: consume a step before the next."""
    own = attribution.private_copy(model)
    modules = dict(own.named_modules())
    yield ORIGINAL, (), own
    for step, name in enumerate(reversed(parametrized_layers(own, input_shape)), start=1):
        module = modules[name]
        reinitialize(module, seed + step)
        yield name, tuple(f"{name}.{key}" for key in module.state_dict()), own


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (ties ranked by their average); 0 when one of
    them is constant (no ranking to share), NaN when both are."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a and flat_b:
        return float("nan")
    if flat_a or flat_b:
        return 0.0
    return float(spearmanr(a, b).statistic)


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    info: DatasetInfo,
    methods: Sequence[str] = attribution.METHODS,
    *,
    target: int | None = None,
    settings: attribution.Settings | None = None,
    seed: int = 0,
    threshold: float = FLAG_THRESHOLD,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SanityCheck:
    """The cascade for one image (1, C, H, W): every method after every step, and the flags.

    `target` (default: the trained model's prediction) stays the class explained throughout.
    `on_progress(done, total)` is called after each step; `should_stop()` ends it early."""
    for method in methods:
        attribution.check_method(method)
    if x.dim() != 4 or x.shape[0] != 1:
        raise LensError(f"the sanity check takes one image (1, C, H, W), got {tuple(x.shape)}")
    start = time.perf_counter()
    settings = settings or attribution.Settings()
    if settings.layer is None and any(m in attribution.LAYER_METHODS for m in methods):
        # Fix the Grad-CAM layer once, from the trained model: the same layer at every step.
        layer = attribution.Explainer(model, info, settings).layer()
        settings = _with_layer(settings, layer)
    total = len(parametrized_layers(model, tuple(x.shape[1:]))) + 1
    steps: list[CascadeStep] = []
    stopped = False
    for layer, changed, net in cascade(model, tuple(x.shape[1:]), seed=seed):
        if steps and stop_requested(should_stop):
            stopped = True
            break
        explainer = attribution.Explainer(net, info, settings, owned=True)
        predicted = int(explainer.scores(x)[0].argmax())
        if target is None:  # the trained model's prediction, kept for every later step
            target = predicted
        maps = {m: explainer.explain(x, m, target) for m in methods}
        reference = steps[0].maps if steps else maps
        steps.append(
            CascadeStep(
                layer=layer,
                changed=changed,
                maps=maps,
                spearman={m: spearman(reference[m].ranking, maps[m].ranking) for m in methods},
                spearman_absolute={
                    m: spearman(reference[m].absolute, maps[m].absolute) for m in methods
                },
                spearman_signed={m: spearman(reference[m].signed, maps[m].signed) for m in methods},
                predicted=predicted,
            )
        )
        if on_progress:
            on_progress(len(steps), total)
    return SanityCheck(
        methods=tuple(methods),
        target=int(target),
        steps=steps,
        threshold=threshold,
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )


def _with_layer(settings: attribution.Settings, layer: str) -> attribution.Settings:
    from dataclasses import replace

    return replace(settings, layer=layer)
