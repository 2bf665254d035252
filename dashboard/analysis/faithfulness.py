"""Faithfulness of attribution maps: deletion and insertion curves (Petsiuk et al. 2018, RISE).

A faithful map puts first the pixels the model needs. Deletion removes pixels in the order of
a method's map, most important first, and records the probability of the class explained
(the model's own prediction for the image) after each step: the faster it falls, the better
(low area under the curve). Insertion starts from an image with the evidence taken out and
puts the pixels back in the same order: the faster it rises, the better (high area).

- A removed pixel becomes black (pixel value 0 in every channel), as in Petsiuk et al.'s
  deletion; insertion starts from the image blurred (`attribution.blur`, σ a tenth of the
  side), as in RISE, where a black canvas would be too far from any training image.
- Pixels are ranked by `Attribution.ranking` (magnitude for gradient methods, signed
  contribution for the others), ties in a seeded random order; a pixel's channels move
  together.
- The curve has `steps` + 1 points, at 0, 1/steps, …, 1 of the pixels; its area is the
  trapezoid rule over that 0..1 axis, so it is the mean probability along the curve.
- A random order is measured beside the methods, as the floor a method has to beat.

The work is batched: each method's maps for a chunk of images come from one Captum call, and
all deletion and insertion steps of the chunk go through the model in large batches. Everything
runs on private copies of the model (the forward-only work — the curves and Occlusion — on
`metrics`' inference copy, 2.5× faster on lenet5); the model passed in is not touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from dashboard.analysis import attribution
from dashboard.analysis.metrics import fast_model
from dashboard.base.errors import LensError
from dashboard.base.work import stop_requested
from dashboard.data import Split, iterate_batches, subset

RANDOM = "random"  # the reference order: pixels in a random order
STEPS = 50
IMAGES = 100
CHUNK = 10  # images whose maps are computed together (one Captum call per method)
FORWARD_VALUES = 1_600_000  # input numbers per forward pass (lenet5: 2,040 images, 6.4 MB)


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves per method over the same images."""

    methods: tuple[str, ...]  # the attribution methods, then RANDOM
    fractions: np.ndarray  # (steps + 1,) share of the pixels removed (or inserted)
    deletion: dict[str, np.ndarray]  # method → (N, steps + 1) probability of the target
    insertion: dict[str, np.ndarray]
    indices: np.ndarray  # (N,) the split's image indices used
    targets: np.ndarray  # (N,) the class explained: the model's prediction
    seconds: float
    stopped: bool = False  # asked to stop: the curves of the images done so far

    @property
    def images(self) -> int:
        return len(self.indices)

    def auc(self, curves: dict[str, np.ndarray]) -> dict[str, float]:
        return {m: float(np.trapezoid(curves[m], self.fractions, axis=1).mean()) for m in curves}

    @property
    def deletion_auc(self) -> dict[str, float]:
        """Mean area under each method's deletion curve: lower is more faithful."""
        return self.auc(self.deletion)

    @property
    def insertion_auc(self) -> dict[str, float]:
        """Mean area under each method's insertion curve: higher is more faithful."""
        return self.auc(self.insertion)

    def mean_curves(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(deletion, insertion): each method's curve averaged over the images."""
        return (
            {m: c.mean(axis=0) for m, c in self.deletion.items()},
            {m: c.mean(axis=0) for m, c in self.insertion.items()},
        )

    def table(self) -> pd.DataFrame:
        """One row per method: deletion AUC (↓ better), insertion AUC (↑ better), images."""
        deletion, insertion = self.deletion_auc, self.insertion_auc
        return pd.DataFrame(
            {
                "method": [title(m) for m in self.methods],
                "deletion AUC ↓": [deletion[m] for m in self.methods],
                "insertion AUC ↑": [insertion[m] for m in self.methods],
                "images": [self.images] * len(self.methods),
            }
        )


def title(method: str) -> str:
    return "Random order (reference)" if method == RANDOM else attribution.TITLES[method]


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """(steps + 1,) pixels removed at each point: round(k · pixels / steps)."""
    return np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)


def pixel_ranks(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H·W) each pixel's rank in its map, 0 for the highest value. Ties (Grad-CAM's zeros,
    Occlusion's flat windows) are broken in a random order from `generator`, else by pixel
    index: ranking tied pixels top-left first would bias the curves."""
    flat = maps.flatten(1)
    n = flat.shape[1]
    shuffle = (
        torch.randperm(n, generator=generator).to(flat.device)
        if generator is not None
        else torch.arange(n, device=flat.device)
    )
    order = shuffle[torch.argsort(-flat[:, shuffle], dim=1, stable=True)]
    positions = torch.arange(n, device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def perturbed(
    x: torch.Tensor, fill: torch.Tensor, ranks: torch.Tensor, counts: np.ndarray
) -> torch.Tensor:
    """(B, S, C, H, W): step s takes each image's `counts[s]` top-ranked pixels from `fill`
    and the rest from `x` (deletion: fill = black; insertion: x = blurred, fill = image)."""
    B, _, H, W = x.shape
    counts_t = torch.as_tensor(counts, device=x.device)
    chosen = ranks.view(B, 1, 1, H, W) < counts_t.view(1, -1, 1, 1, 1)  # (B, S, 1, H, W)
    return torch.where(chosen, fill.unsqueeze(1), x.unsqueeze(1))


def probabilities(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch: int
) -> torch.Tensor:
    """(B, S) softmax probability of each image's target for (B, S, C, H, W) images."""
    B, S = images.shape[:2]
    flat = images.flatten(0, 1)
    wanted = targets.repeat_interleave(S)
    out = []
    with torch.inference_mode():
        for start in range(0, len(flat), batch):
            probs = torch.softmax(model(flat[start : start + batch]).float(), dim=1)
            out.append(probs.gather(1, wanted[start : start + batch, None])[:, 0])
    return torch.cat(out).view(B, S)


def faithfulness(
    model: nn.Module,
    split: Split,
    methods: Sequence[str] = attribution.METHODS,
    *,
    images: int | Sequence[int] = IMAGES,
    steps: int = STEPS,
    settings: attribution.Settings | None = None,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of each method over `images` of the split (a count: the
    first N; or the indices). `on_progress(done, total)` after each chunk of images;
    `should_stop()` ends early with the curves of the images done."""
    for method in methods:
        attribution.check_method(method)
    if steps < 1:
        raise LensError(f"steps must be at least 1, got {steps}")
    indices = _indices(images, len(split))
    start = time.perf_counter()
    own = attribution.private_copy(model)
    device = attribution._device(own)
    chosen = subset(split, torch.as_tensor(indices, dtype=torch.long))
    fast = fast_model(own, chosen, device)[0]  # answers like `own`, checked on the images
    explainer = attribution.Explainer(own, split.info, settings, owned=True, forward_only=fast)
    if any(m in attribution.LAYER_METHODS for m in methods):
        explainer.layer()  # fixed once (an unknown layer fails before any work)
    C, H, W = split.info.input_shape
    counts = step_counts(H * W, steps)
    forward_batch = max(steps + 1, FORWARD_VALUES // (C * H * W))
    names = (*methods, RANDOM)
    deletion: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    insertion: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    targets: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(seed)
    done = 0
    stopped = False
    for x, _ in iterate_batches(chosen, CHUNK, shuffle=False, device=device):
        if stop_requested(should_stop):
            stopped = True
            break
        target = explainer.scores(x).argmax(dim=1)
        black = attribution.baseline_images(x, split.info, "black")
        blurred = attribution.blur(x)
        for method in names:
            if method == RANDOM:
                maps = torch.rand(x.shape[0], H, W, generator=generator).to(device)
            else:
                maps = explainer.maps(x, target, method).display(method)
            ranks = pixel_ranks(maps, generator)
            both = torch.cat(  # deletion and insertion steps in one pass: (B, 2S, C, H, W)
                [perturbed(x, black, ranks, counts), perturbed(blurred, x, ranks, counts)], dim=1
            )
            curves = probabilities(fast, both, target, forward_batch)
            deletion[method].append(curves[:, : steps + 1])
            insertion[method].append(curves[:, steps + 1 :])
        targets.append(target)
        done += len(x)
        if on_progress:
            on_progress(done, len(indices))

    def stacked(curves: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
        empty = torch.zeros((0, steps + 1))
        return {m: torch.cat(c).cpu().numpy() if c else empty.numpy() for m, c in curves.items()}

    return Faithfulness(
        methods=names,
        fractions=counts / (H * W),
        deletion=stacked(deletion),
        insertion=stacked(insertion),
        indices=np.asarray(indices[:done], dtype=np.int64),
        targets=torch.cat(targets).cpu().numpy() if targets else np.zeros(0, dtype=np.int64),
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )


def _indices(images: int | Sequence[int], available: int) -> np.ndarray:
    if isinstance(images, (int, np.integer)):
        if images < 1:
            raise LensError(f"need at least one image, got {images}")
        return np.arange(min(int(images), available))
    chosen = np.asarray(list(images), dtype=np.int64)
    bad = chosen[(chosen < 0) | (chosen >= available)]
    if len(chosen) == 0 or len(bad):
        raise LensError(f"image indices must lie in 0..{available - 1}")
    return chosen
